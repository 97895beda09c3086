"""``rlhf-eval demo``: build the sandbox (if missing), evaluate every run in it, check over-optimization.

The sandbox (``rlhf_eval.sandbox``) is an offline RLHF world: a base policy, a proxy reward model
trained on few noisy gold-labelled pairs (it learned that longer is better), a PPO, a GRPO and two
DPO runs against that proxy, and a gold rubric standing in for human judgment. The demo

1. builds it under ``--out`` (cached by preset and seed: a second demo skips the build);
2. evaluates every run with the proxy as ``--proxy`` and the rubric as ``--gold``;
3. evaluates a pool of ``bon_pool`` samples per prompt of the base policy as run ``bon``, the
   best-of-n family's raw material;
4. measures, from the database, whether each run over-optimized (``rlhf_eval.sandbox.criteria``).

Everything is stored in the database; a rerun recomputes nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf_eval.errors import UserInputError
from rlhf_eval.pipeline import EvalConfig, EvalResult, evaluate
from rlhf_eval.sandbox.criteria import OveroptimizationCheck

BON_RUN = "bon"


@dataclass(frozen=True)
class DemoResult:
    """The evaluations the demo ran and the over-optimization checks of every run."""

    runs: EvalResult
    pool: EvalResult
    checks: list[OveroptimizationCheck]


def run_demo(
    out: Path, db: str, *, preset: str = "demo", seed: int = 0, progress: bool = False, quiet: bool = False
) -> DemoResult:
    """Build (or reuse) the sandbox under ``out``, evaluate it into ``db`` and check each run."""
    from rlhf_eval.sandbox.build import build_sandbox
    from rlhf_eval.sandbox.criteria import bon_points, check_run, rl_points

    if not quiet:
        print(f"sandbox: {preset} preset, seed {seed}, under {out} (cached after the first build)", file=sys.stderr)
    try:
        sandbox = build_sandbox(out, preset, seed, quiet=quiet)
    except FileExistsError as exc:
        raise UserInputError(f"{exc}") from None
    common = {
        "ref": str(sandbox.base),
        "suite": str(sandbox.prompts),
        "proxy": (str(sandbox.proxy),),
        "gold": (sandbox.gold,),
        "db": db,
        "max_new_tokens": sandbox.config.max_new_tokens,
        "seed": seed,
        "progress": progress,
    }
    runs = evaluate(EvalConfig(paths=(str(sandbox.runs),), samples=sandbox.config.eval_samples, **common))  # type: ignore[arg-type]
    pool = evaluate(
        EvalConfig(paths=(str(sandbox.base),), run=BON_RUN, method="base", samples=sandbox.config.bon_pool, **common)  # type: ignore[arg-type]
    )
    checks = [check_run(run, rl_points(db, run), seed=seed) for run in runs.runs]
    checks.append(check_run(BON_RUN, bon_points(db, BON_RUN), seed=seed))
    return DemoResult(runs, pool, checks)
