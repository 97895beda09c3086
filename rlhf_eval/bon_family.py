"""``rlhf-eval bon``: a best-of-n family from one pool of samples per prompt.

Best-of-n is the simplest optimizer of a reward model: draw n samples, keep the one the proxy
likes best. Rather than sampling each n separately, the policy is sampled once, ``pool`` times per
prompt, and every n ≤ pool is computed exactly from that pool (``rlhf_eval.analysis.bon``):

1. the pool is evaluated like any checkpoint (``rlhf_eval.pipeline``: generation, proxy and gold
   scores, detectors; cached by content, so a bigger pool later only samples the new ones) and
   stored as the reference checkpoint of run ``<run>-pool``;
2. the family is recorded in ``bon_runs`` with its n values;
3. the analysis computes E_n of every metric per prompt into ``bon_values`` (which
   ``checkpoint_summary`` shows as run ``<run>``, checkpoints ``n=1``, ``n=2``, ..., step = n), the
   two KL estimates (the analytic bound and the pool's plug-in) and the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from rlhf_eval.analysis.runner import AnalysisOptions, RunReport, analyze_database
from rlhf_eval.errors import UserInputError
from rlhf_eval.pipeline import EvalConfig, EvalResult, evaluate

POOL_SUFFIX = "-pool"


@dataclass(frozen=True)
class BonConfig:
    """One ``rlhf-eval bon`` invocation; ``eval`` holds the pool's evaluation settings."""

    eval: EvalConfig
    pool: int
    ns: tuple[int, ...] = ()
    run: str = "bon"
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)


@dataclass(frozen=True)
class BonResult:
    pool: EvalResult
    run: str
    summary: list[dict[str, Any]]
    report: RunReport | None


def parse_ns(text: str | None, pool: int) -> tuple[int, ...]:
    """The n values: a comma list (``1,2,4,8``) or, when empty, 1, 2, 4, ... up to the pool (the
    pool itself included). n = 1 is always added: it is the policy itself, the reference point.

    >>> parse_ns("4,2", 8), parse_ns(None, 10)
    ((1, 2, 4), (1, 2, 4, 8, 10))
    """
    if pool < 1:
        raise UserInputError(f"--pool {pool}: the pool needs at least 1 sample per prompt (e.g. --pool 64)")
    if not text:
        ns = [1]
        while ns[-1] * 2 <= pool:
            ns.append(ns[-1] * 2)
        if ns[-1] != pool:
            ns.append(pool)
        return tuple(ns)
    values = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(part)
        except ValueError:
            raise UserInputError(f"--n {text!r}: {part!r} is not an integer; pass n values like 1,2,4,8") from None
        if not 1 <= n <= pool:
            raise UserInputError(f"--n {text!r}: n = {n} is outside 1..{pool}; raise --pool or drop it")
        values.add(n)
    return tuple(sorted(values | {1}))


def run_bon(config: BonConfig) -> BonResult:
    """Evaluate the pool, record the family and analyse it (see the module docstring)."""
    from rlhf_eval.query import fetch_dicts
    from rlhf_eval.store import Store

    ns = config.ns or parse_ns(None, config.pool)
    if max(ns) > config.pool:
        raise UserInputError(f"--n: n = {max(ns)} exceeds --pool {config.pool}; raise --pool or drop it")
    if config.run.endswith(POOL_SUFFIX):
        raise UserInputError(f"--run {config.run!r}: names ending in {POOL_SUFFIX!r} are kept for pools; pick another")
    pool_run = config.run + POOL_SUFFIX
    if len(config.eval.paths) != 1:
        raise UserInputError("--policy: best-of-n needs exactly one policy")
    policy = config.eval.paths[0]
    eval_config = replace(config.eval, ref=policy, run=pool_run, samples=config.pool)
    pool = evaluate(eval_config)
    rows = fetch_dicts(
        config.eval.db,
        "SELECT * FROM checkpoints WHERE run = ? AND is_reference",
        [pool_run],
    )
    if not rows:
        raise UserInputError(f"{policy}: the pool was not stored; run `rlhf-eval bon` again")
    pool_row = rows[0]
    store = Store(config.eval.db)
    with store.writer():
        store.stage(
            "bon_runs",
            [
                {
                    "run": config.run,
                    "pool_run": pool_run,
                    "pool_checkpoint": pool_row["checkpoint"],
                    "pool_size": config.pool,
                    "ns": list(ns),
                    "path": pool_row["path"],
                    "model_fp": pool_row["model_fp"],
                    "suite_fp": pool_row["suite_fp"],
                    "gen_key": pool_row["gen_key"],
                    "proxy_scorer": pool_row["proxy_scorer"],
                    "gold_scorer": pool_row["gold_scorer"],
                    "eval_id": pool_row["eval_id"],
                    "evaluated_at": datetime.now(timezone.utc).replace(tzinfo=None),
                }
            ],
        )
    reports, _ = analyze_database(config.eval.db, [config.run], config.analysis)
    summary = fetch_dicts(config.eval.db, "SELECT * FROM checkpoint_summary WHERE run = ? ORDER BY step", [config.run])
    return BonResult(pool, config.run, summary, reports[0] if reports else None)
