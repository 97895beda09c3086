"""Plot the sandbox's runs from a demo database: proxy and gold reward against sqrt(KL), one panel per run.

    python scripts/sandbox_figure.py --db rlhf_eval.duckdb --out docs/img/sandbox.png

Each point is a checkpoint (or, for the best-of-n family, a value of n), its reward the mean over
prompts of the per-prompt mean, with a 95% normal-approximation interval over prompts; KL is the
full-vocabulary estimate from the reference for RL runs and log n − (n − 1)/n for best-of-n, so
the x axes of RL and best-of-n panels are not a common yardstick. The gold peak is marked.
Needs matplotlib (in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rlhf_eval.query import fetch_dicts
from rlhf_eval.sandbox.criteria import CurvePoint, bon_points, rl_points

RUN_ORDER = ("ppo", "grpo", "dpo", "dpo-lora", "bon")


def mean_and_half_width(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    half = 1.96 * finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else 0.0
    return float(finite.mean()), float(half)


def panel(ax: object, title: str, points: list[CurvePoint]) -> None:
    ordered = sorted(points, key=lambda p: (p.kl, p.step))
    x = np.sqrt(np.maximum([p.kl for p in ordered], 0.0))
    for name, color in (("proxy", "tab:blue"), ("gold", "tab:orange")):
        stats = [mean_and_half_width(p.proxy if name == "proxy" else p.gold) for p in ordered]
        mean = np.array([m for m, _ in stats])
        half = np.array([h for _, h in stats])
        ax.plot(x, mean, marker="o", color=color, label=f"{name} reward")  # type: ignore[attr-defined]
        ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2)  # type: ignore[attr-defined]
        if name == "gold":
            peak = int(np.argmax(mean))
            ax.annotate(  # type: ignore[attr-defined]
                f"gold peak\n{ordered[peak].label}",
                (x[peak], mean[peak]),
                textcoords="offset points",
                xytext=(0, 12),
                ha="center",
                fontsize=8,
            )
    ax.set_title(title)  # type: ignore[attr-defined]
    ax.set_xlabel("sqrt(KL from reference), nats^0.5")  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="rlhf_eval.duckdb")
    parser.add_argument("--out", default="docs/img/sandbox.png")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: matplotlib is missing; pip install matplotlib (or the dev extra)", file=sys.stderr)
        return 2
    if not Path(args.db).is_file():
        print(f"error: {args.db}: no such database; run `rlhf-eval demo --db {args.db}` first", file=sys.stderr)
        return 2
    stored = {row["run"] for row in fetch_dicts(args.db, "SELECT DISTINCT run FROM checkpoints")}
    runs = [run for run in RUN_ORDER if run in stored]
    if not runs:
        print(f"error: {args.db} has none of the sandbox runs {', '.join(RUN_ORDER)}; run the demo", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        points = bon_points(args.db, run) if run == "bon" else rl_points(args.db, run)
        panel(ax, "best-of-n (proxy selects)" if run == "bon" else run.upper(), points)
    axes[0][0].set_ylabel("mean reward over prompts")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
