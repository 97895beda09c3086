"""``rlhf-eval demo``: build small offline checkpoints (if missing), evaluate them, summarize.

The build (``rlhf_eval.tiny``) trains, on this machine and without any download, a reference
policy on a generated corpus, a Trainer run fine-tuned from it towards long hedging answers,
a plain variant fine-tuned towards short ones, and a proxy reward model that learned to
prefer length; the gold reward is a documented rubric (``rlhf_eval.tiny.gold``). It is cached
by its configuration, so a second demo only re-reads the database.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlhf_eval.errors import UserInputError
from rlhf_eval.pipeline import EvalConfig, EvalResult, evaluate


def run_demo(out: Path, db: str, *, limit: int, progress: bool, samples: int = 2) -> EvalResult:
    """Build (or reuse) the demo checkpoints under ``out`` and evaluate them into ``db``."""
    from rlhf_eval.tiny import build_demo_checkpoints

    print(f"building demo checkpoints under {out} (cached after the first build) ...", file=sys.stderr, flush=True)
    try:
        demo = build_demo_checkpoints(out)
    except FileExistsError as exc:
        raise UserInputError(f"{exc}; or pass --out with a new directory") from None
    config = EvalConfig(
        paths=(str(demo.runs),),
        ref=str(demo.reference),
        suite=str(demo.prompts),
        proxy=(str(demo.reward_model),),
        gold=(demo.gold,),
        db=db,
        samples=samples,
        limit=limit,
        max_new_tokens=48,
        progress=progress,
    )
    return evaluate(config)
