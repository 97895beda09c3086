"""Plot the sandbox's runs from a demo database: proxy and gold reward against sqrt(KL), one panel per run.

    python scripts/sandbox_figure.py --db rlhf_eval.duckdb --out docs/img/sandbox.png

Each point is a checkpoint (or, for the best-of-n family, a value of n), its rewards normalized as
the analysis reports them (``checkpoint_summary.*_norm``: delta from the reference on the same
prompts in reference standard deviations), with their 95% bootstrap intervals over prompts; KL is
the full-vocabulary estimate from the reference for RL runs and log n − (n − 1)/n for best-of-n,
so the x axes of RL and best-of-n panels are not a common yardstick. The gold peak is marked and
the Gao et al. fit of gold (``overoptimization``) is drawn when there is one.
Uses matplotlib, a dependency of the package (the HTML report draws with it too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_eval.query import fetch_dicts

RUN_ORDER = ("ppo", "grpo", "dpo", "dpo-lora", "bon")


def gao_curve(fit: dict[str, Any], d: np.ndarray) -> np.ndarray:
    alpha, beta = fit["fit_alpha"], fit["fit_beta"]
    if fit["fit_form"] == "bon":
        return np.asarray(d * (alpha - beta * d))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(d > 0, d * (alpha - beta * np.log(d)), 0.0))


def panel(ax: Any, title: str, rows: list[dict[str, Any]], fit: dict[str, Any] | None) -> None:
    x = np.array([row["sqrt_kl"] for row in rows], dtype=float)
    order = np.argsort(x, kind="stable")
    x = x[order]
    for name, color in (("proxy", "tab:blue"), ("gold", "tab:orange")):
        column = f"{name}_reward_norm"
        mean = np.array([rows[i][column] for i in order], dtype=float)
        low = np.array([rows[i][f"{column}_ci_low"] for i in order], dtype=float)
        high = np.array([rows[i][f"{column}_ci_high"] for i in order], dtype=float)
        ax.plot(x, mean, marker="o", color=color, label=f"{name} reward")
        ax.fill_between(x, low, high, color=color, alpha=0.2)
        if name == "gold":
            peak = int(np.nanargmax(mean))
            ax.annotate(
                f"gold peak\n{rows[order[peak]]['checkpoint']}",
                (x[peak], mean[peak]),
                textcoords="offset points",
                xytext=(0, 12),
                ha="center",
                fontsize=8,
            )
    if fit is not None and fit.get("fit_alpha") is not None:
        grid = np.linspace(0.0, float(x.max()), 100)
        ax.plot(grid, gao_curve(fit, grid), color="tab:orange", linestyle="--", linewidth=1, label="Gao fit (gold)")
    ax.set_title(title)
    ax.set_xlabel("sqrt(KL from reference), nats^0.5")
    ax.grid(alpha=0.3)


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
        print("error: matplotlib is missing; pip install matplotlib", file=sys.stderr)
        return 2
    if not Path(args.db).is_file():
        print(f"error: {args.db}: no such database; run `rlhf-eval demo --db {args.db}` first", file=sys.stderr)
        return 2
    stored = {row["run"] for row in fetch_dicts(args.db, "SELECT DISTINCT run FROM overoptimization")}
    runs = [run for run in RUN_ORDER if run in stored]
    if not runs:
        print(f"error: {args.db} has no analysed sandbox run ({', '.join(RUN_ORDER)}); run the demo", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, len(runs), figsize=(3.6 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        rows = fetch_dicts(args.db, "SELECT * FROM checkpoint_summary WHERE run = ? ORDER BY step", [run])
        fits = fetch_dicts(args.db, "SELECT * FROM overoptimization WHERE run = ?", [run])
        panel(ax, "best-of-n (proxy selects)" if run == "bon" else run.upper(), rows, fits[0] if fits else None)
    axes[0][0].set_ylabel("reward, reference sd from the reference")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
