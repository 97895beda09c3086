"""How much does forwarding each prompt's shared prefix once save a reward model, by the share of
the tokens it saves? Side by side in one run, on a reward model built offline:

    .venv/bin/python bench/reward_prefix.py            # 32 prompts x 4 samples, prompts x1 .. x16 (about 1 min)
    .venv/bin/python bench/reward_prefix.py --quick    # 8 prompts x 4 samples
    .venv/bin/python bench/reward_prefix.py --json

A random-init GPT-2 sequence classifier (``--hidden``, ``--layers``; the end-to-end benchmark's
reward model by default: 4 layers of 256) with its own word tokenizer scores P prompts x S
samples, prompts of ``--words`` made-up words times each factor of ``--factors`` and responses of
1 to ``--max-response`` words, twice each repeat: whole forwards (``reward_forward.pooled_scores``)
and the samples of a prompt sharing one forward of their common prefix
(``reward_forward.shared_prefix_scores``, every prompt taken as a group whatever it saves). For
each factor it prints the tokens the sharing saves, (k − 1)·P of k·(P + R), the best time of each
path, their ratio and the largest score difference (float rounding). The scorer shares a prompt's
prefix only where it saves at least ``MIN_SAVED_SHARE`` of the group's tokens: this benchmark is
where that bound comes from.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_eval.models import LoadOptions
from rlhf_eval.records import Prompt
from rlhf_eval.reward_forward import MIN_SAVED_SHARE, pooled_scores, prefix_groups, shared_prefix_scores
from rlhf_eval.rewards import RewardModelScorer

TOKEN_BUDGET = 16384  # the scorer's default batch budget (padded tokens)


def build_scorer(root: Path, args: argparse.Namespace, words: list[str]) -> RewardModelScorer:
    from rlhf_eval.tiny import build_reward_model, build_word_tokenizer
    from rlhf_eval.tiny.training import quiet_transformers

    tokenizer = build_word_tokenizer(root / "tok", words, model_max_length=4096)
    with quiet_transformers():
        model = build_reward_model(
            root / "rm", tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
            max_positions=4096, seed=args.seed,
        )  # fmt: skip
    scorer = RewardModelScorer(model, None, LoadOptions())
    with quiet_transformers():
        scorer.load()
    return scorer


def best_seconds(call: Any, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def measure(scorer: RewardModelScorer, prompts: list[Prompt], responses: list[str], repeats: int) -> dict[str, Any]:
    encoded = [scorer.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
    pad = int(scorer.tokenizer.pad_token_id)
    label = scorer.label_index
    groups, _ = prefix_groups(encoded, prompts, pad, min_saved_share=0.0)  # every prompt: time the shared path
    total = sum(len(e) for e in encoded)
    saved = sum((len(g.rows) - 1) * len(g.prefix) for g in groups)
    with torch.inference_mode():
        whole_s, whole = best_seconds(lambda: pooled_scores(scorer.model, encoded, pad, TOKEN_BUDGET, label), repeats)
        shared_s, shared = best_seconds(
            lambda: shared_prefix_scores(scorer.model, encoded, groups, pad, TOKEN_BUDGET, label), repeats
        )
    grouped = [row for g in groups for row in g.rows]
    taken, _ = prefix_groups(encoded, prompts, pad)  # what the scorer itself shares
    return {
        "mean_tokens": total / len(encoded),
        "mean_prefix": sum(len(g.prefix) for g in groups) / max(len(groups), 1),
        "saved_share": saved / total,
        "whole_seconds": whole_s,
        "shared_seconds": shared_s,
        "speedup": whole_s / shared_s,
        "max_abs_difference": max((abs(shared[i] - whole[i]) for i in grouped), default=0.0),
        "scorer_shared_rows": sum(len(g.rows) for g in taken) / len(encoded),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--words", type=int, default=13, help="words of a prompt at factor 1")
    parser.add_argument("--factors", default="1,2,4,8,16")
    parser.add_argument("--max-response", type=int, default=48, help="words of the longest response")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.factors, args.repeats = 8, "1,4", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    words = [f"w{i}" for i in range(2000)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scorer = build_scorer(Path(tmp), args, words)
        for factor in (int(f) for f in args.factors.split(",")):
            prompts, responses = [], []
            for p in range(args.prompts):
                prompt = Prompt(f"p{p}", p, text=" ".join(rng.choice(words, size=args.words * factor)))
                for _ in range(args.samples):
                    prompts.append(prompt)
                    responses.append(" ".join(rng.choice(words, size=int(rng.integers(1, args.max_response + 1)))))
            results.append({"factor": factor, **measure(scorer, prompts, responses, args.repeats)})
    report = {"threads": torch.get_num_threads(), "min_saved_share": MIN_SAVED_SHARE, "results": results}
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return
    print(f"reward model scoring, {args.prompts} prompts x {args.samples} samples, {report['threads']} threads")
    print("prompt  tokens  prefix  saved  whole (s)  shared (s)  speedup  max |diff|  scorer shares (rows)")
    for r in results:
        print(
            f"x{r['factor']:<5} {r['mean_tokens']:7.1f} {r['mean_prefix']:7.1f} {r['saved_share']:6.0%} "
            f"{r['whole_seconds']:10.3f} {r['shared_seconds']:11.3f} {r['speedup']:7.2f}x "
            f"{r['max_abs_difference']:11.1e}  {r['scorer_shared_rows']:13.0%}"
        )
    print(f"the scorer shares a prompt's prefix where it saves at least {MIN_SAVED_SHARE:.0%} of the tokens")


if __name__ == "__main__":
    main()
