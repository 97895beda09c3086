"""``rlhf-eval demo``: build the sandbox (if missing), evaluate every run in it, check over-optimization.

The sandbox (``rlhf_eval.sandbox``) is an offline RLHF world: a base policy, a proxy reward model
trained on few noisy gold-labelled pairs (it learned that longer is better), a PPO, a GRPO and two
DPO runs against that proxy, and a gold rubric standing in for human judgment. The demo

1. builds it under ``--out`` (cached by preset and seed: a second demo skips the build);
2. evaluates every run with the proxy as ``--proxy`` and the rubric as ``--gold``;
3. builds the best-of-n family of the base policy from a pool of ``bon_pool`` samples per prompt
   (``rlhf-eval bon``: run ``bon``, its pool stored as run ``bon-pool``);
4. analyses every run (``rlhf_eval.analysis``: the ``overoptimization`` view) and reads the
   sandbox's checks off that analysis (``rlhf_eval.sandbox.criteria``).

Everything is stored in the database; a rerun recomputes nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from rlhf_eval.analysis.runner import AnalysisOptions, analyze_database
from rlhf_eval.bon_family import BonConfig, parse_ns, run_bon
from rlhf_eval.errors import UserInputError
from rlhf_eval.pipeline import EvalConfig, EvalResult, evaluate
from rlhf_eval.sandbox.criteria import OveroptimizationCheck, check_report

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
    from rlhf_eval.query import checkpoint_summary
    from rlhf_eval.sandbox.build import build_sandbox

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
    options = AnalysisOptions(seed=seed)
    pool_size = sandbox.config.bon_pool
    bon = run_bon(
        BonConfig(
            eval=EvalConfig(paths=(str(sandbox.base),), **common),  # type: ignore[arg-type]
            pool=pool_size,
            ns=parse_ns(None, pool_size),
            run=BON_RUN,
            analysis=options,
        )
    )
    reports, _ = analyze_database(db, list(runs.runs), options)
    if bon.report is not None:
        reports.append(bon.report)
    summary = checkpoint_summary(db, [*runs.runs, BON_RUN])
    checks = [check_report(report, [row for row in summary if row["run"] == report.analysis.run]) for report in reports]
    return DemoResult(runs, bon.pool, checks)
