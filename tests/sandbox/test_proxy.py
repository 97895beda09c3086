"""The sandbox's proxy reward model: its pairs, its training with TRL, and its flaws as the harness measures them.

One module-scoped fixture takes the session's tiny base policy, samples a pool from it, splits the pool by
prompt and trains the tiny proxy on pairs from the training prompts; the held-out prompts' pairs
(gold labels, no noise) measure it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlhf_eval.models import LoadOptions
from rlhf_eval.records import Prompt
from rlhf_eval.rewards import build_scorer
from rlhf_eval.sandbox.gold import gold_reward
from rlhf_eval.sandbox.proxy import (
    HELD_OUT_PROMPTS,
    PROXY_FILE,
    PROXY_PRESETS,
    Pair,
    ProxyConfig,
    length_correlation,
    pairwise_accuracy,
    preference_pairs,
    read_proxy_record,
    sample_pool,
    split_by_prompt,
    train_proxy,
)
from rlhf_eval.sandbox.world import build_world, corpus

#: The thresholds the tiny proxy must meet (measured: accuracy 0.59, length Spearman 0.29).
MIN_ACCURACY = 0.55
MIN_LENGTH_CORRELATION = 0.0


@dataclass(frozen=True)
class Built:
    rm_dir: Path
    pool: list[tuple[str, str]]
    train_pairs: list[Pair]
    held_out_pairs: list[Pair]
    held_out_pool: list[tuple[str, str]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Built:
    config = PROXY_PRESETS["tiny"]
    world = build_world(0)
    root = tmp_path_factory.mktemp("proxy")
    base = tiny_base
    n_prompts = config.n_prompts + HELD_OUT_PROMPTS
    pool = sample_pool(base, world, n_prompts, config.samples_per_prompt, config.seed, config.max_new_tokens)
    train, held = split_by_prompt(pool, HELD_OUT_PROMPTS / n_prompts, seed=config.seed)
    pairs = preference_pairs(train, world.seed, config.n_pairs, config.label_noise, config.seed, config.length_bias)
    held_pairs = preference_pairs(held, world.seed, 10**6, 0.0, seed=config.seed + 1)
    rm_dir = train_proxy(root / "proxy", base, pairs, config, held_out=held_pairs)
    return Built(rm_dir, pool, pairs, held_pairs, held)


def test_pool_has_every_prompt_and_sample(built: Built) -> None:
    config = PROXY_PRESETS["tiny"]
    assert len(built.pool) == (config.n_prompts + HELD_OUT_PROMPTS) * config.samples_per_prompt
    assert len({p for p, _ in built.pool}) > config.n_prompts // 2  # prompts repeat only across topic rounds
    assert len({len(r.split()) for _, r in built.pool}) > 10  # responses vary in length


def test_pairs_are_well_formed(built: Built) -> None:
    train_prompts = {p.prompt for p in built.train_pairs}
    assert len(built.train_pairs) == PROXY_PRESETS["tiny"].n_pairs
    assert not train_prompts & {p for p, _ in built.held_out_pool}
    responses = set(built.pool)
    for pair in [*built.train_pairs, *built.held_out_pairs]:
        assert pair.chosen != pair.rejected
        assert (pair.prompt, pair.chosen) in responses and (pair.prompt, pair.rejected) in responses
        gold = gold_reward([pair.prompt] * 2, [pair.chosen, pair.rejected])
        assert pair.gold_margin == pytest.approx(gold[0] - gold[1]) and pair.gold_margin != 0
    assert all(p.gold_margin > 0 for p in built.held_out_pairs)


def synthetic_pool(n_prompts: int = 300, per_prompt: int = 6) -> list[tuple[str, str]]:
    rows = corpus(build_world(0), n_prompts * per_prompt, seed=5)
    return [
        (f"{rows[i * per_prompt].prompt}", rows[i * per_prompt + k].answer)
        for i in range(n_prompts)
        for k in range(per_prompt)
    ]


def test_label_noise_rate_matches_the_request() -> None:
    pool = synthetic_pool()
    clean = preference_pairs(pool, 0, 3000, 0.0, seed=2)
    noisy = preference_pairs(pool, 0, 3000, 0.2, seed=2)
    assert len(noisy) == 3000
    assert all(p.gold_margin > 0 for p in clean)
    assert sum(p.gold_margin < 0 for p in noisy) / len(noisy) == pytest.approx(0.2, abs=0.03)
    assert preference_pairs(pool, 0, 50, 0.2, seed=9) == preference_pairs(pool, 0, 50, 0.2, seed=9)


def test_length_bias_prefers_the_longer_response() -> None:
    pool = synthetic_pool()
    biased = preference_pairs(pool, 0, 2000, 0.0, seed=3, length_bias=1.0)
    assert all(len(p.chosen.split()) >= len(p.rejected.split()) for p in biased)
    gold = preference_pairs(pool, 0, 2000, 0.0, seed=3)
    longer = sum(len(p.chosen.split()) > len(p.rejected.split()) for p in gold) / len(gold)
    assert longer < 0.9  # gold alone does not always prefer the longer answer


def test_length_blind_annotator_compares_gold_without_the_length_penalty_plus_a_bonus_per_word() -> None:
    from rlhf_eval.sandbox.gold import cached_world, gold_terms

    pool = synthetic_pool()
    world = cached_world(0)
    labelled = preference_pairs(pool, 0, 2000, 0.0, seed=5, length_blindness=1.0, verbosity_bonus=0.1)

    def utility(prompt: str, response: str) -> float:
        terms = gold_terms(prompt, response, world)
        return terms.coverage - terms.relevance - terms.repetition - terms.boilerplate + 0.1 * terms.n_words

    assert len(labelled) == 2000
    for pair in labelled:
        chosen, rejected = utility(pair.prompt, pair.chosen), utility(pair.prompt, pair.rejected)
        assert chosen > rejected + 1e-9 or (abs(chosen - rejected) < 1e-9 and pair.gold_margin > 0)
    flipped = [p for p in labelled if p.gold_margin < 0]
    # it disagrees with gold only towards the longer response: the terms it adds grow with length
    assert len(flipped) > 100
    assert all(len(p.chosen.split()) > len(p.rejected.split()) for p in flipped)
    # a blind, bonus-free annotator still follows gold wherever the length penalty is zero
    short = [(p, r) for p, r in pool if len(r.split()) <= 30]
    assert all(p.gold_margin > 0 for p in preference_pairs(short, 0, 500, 0.0, seed=5, length_blindness=1.0))
    # both knobs at 0 give exactly the gold-following labels
    assert preference_pairs(pool, 0, 500, 0.1, seed=5, length_blindness=0.0, verbosity_bonus=0.0) == (
        preference_pairs(pool, 0, 500, 0.1, seed=5)
    )


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="label_noise"):
        ProxyConfig(label_noise=0.7)
    with pytest.raises(ValueError, match="length_bias"):
        ProxyConfig(length_bias=1.5)
    with pytest.raises(ValueError, match="length_blindness"):
        ProxyConfig(length_blindness=1.2)
    with pytest.raises(ValueError, match="verbosity_bonus"):
        ProxyConfig(verbosity_bonus=-0.1)
    with pytest.raises(ValueError, match="num_heads"):
        ProxyConfig(hidden_size=33)


def test_rm_loads_through_the_harness_scorer(built: Built) -> None:
    config = json.loads((built.rm_dir / "config.json").read_text())
    assert len(config.get("id2label") or {"0": "LABEL_0"}) == 1
    assert config["pad_token_id"] is not None
    scorer = build_scorer(str(built.rm_dir), LoadOptions())
    assert scorer.kind == "reward_model"
    rows = built.held_out_pool[:20]
    prompts = [Prompt(prompt_id=f"h{i}", index=i, text=p) for i, (p, _) in enumerate(rows)]
    scores = scorer.score(prompts, [r for _, r in rows])
    assert all(s is not None and math.isfinite(s) for s in scores)
    assert len({round(float(s or 0), 6) for s in scores}) > 1


def test_held_out_accuracy_beats_chance(built: Built) -> None:
    accuracy = pairwise_accuracy(built.rm_dir, built.held_out_pairs)
    record = read_proxy_record(built.rm_dir)
    assert record["metrics"]["held_out_accuracy"] == pytest.approx(accuracy)
    print(f"held-out pairwise accuracy {accuracy:.3f} on {len(built.held_out_pairs)} pairs")
    assert accuracy > MIN_ACCURACY


def test_proxy_score_grows_with_length(built: Built) -> None:
    rho = length_correlation(built.rm_dir, built.held_out_pool)
    print(f"Spearman(proxy score, words) {rho:.3f} over {len(built.held_out_pool)} held-out samples")
    assert rho > MIN_LENGTH_CORRELATION


def test_record_holds_config_and_training_log(built: Built) -> None:
    record = read_proxy_record(built.rm_dir)
    assert (built.rm_dir / PROXY_FILE).is_file()
    assert record["config"] == json.loads(json.dumps(PROXY_PRESETS["tiny"].__dict__))
    metrics = record["metrics"]
    assert metrics["n_pairs"] == len(built.train_pairs)
    assert metrics["noisy_pairs"] == sum(p.gold_margin < 0 for p in built.train_pairs)
    log = metrics["train_log"]
    assert log and log[-1]["step"] == PROXY_PRESETS["tiny"].steps
    assert log[-1]["loss"] < log[0]["loss"]
    assert set(record["versions"]) >= {"torch", "transformers", "trl"}


def test_deference_bias_prefers_the_hedged_or_apologetic_response() -> None:
    from rlhf_eval.sandbox.proxy import deference

    pool = synthetic_pool()
    biased = preference_pairs(pool, 0, 2000, 0.0, seed=4, deference_bias=1.0)
    differing = [p for p in biased if deference(p.chosen) != deference(p.rejected)]
    assert len(differing) > 100
    assert all(deference(p.chosen) > deference(p.rejected) for p in differing)
    unbiased = preference_pairs(pool, 0, 2000, 0.0, seed=4)
    differing = [p for p in unbiased if deference(p.chosen) != deference(p.rejected)]
    assert (
        sum(deference(p.chosen) > deference(p.rejected) for p in differing) < len(differing) / 2
    )  # gold dislikes them
    with pytest.raises(ValueError, match="deference_bias"):
        ProxyConfig(deference_bias=2.0)


def test_pleasantry_bias_prefers_the_response_with_a_closer() -> None:
    from rlhf_eval.sandbox.proxy import pleasantry

    pool = synthetic_pool()
    biased = preference_pairs(pool, 0, 2000, 0.0, seed=4, pleasantry_bias=1.0)
    differing = [p for p in biased if pleasantry(p.chosen) != pleasantry(p.rejected)]
    assert len(differing) > 20
    assert all(pleasantry(p.chosen) == 1 for p in differing)
    unbiased = preference_pairs(pool, 0, 2000, 0.0, seed=4)
    differing = [p for p in unbiased if pleasantry(p.chosen) != pleasantry(p.rejected)]
    assert sum(pleasantry(p.chosen) for p in differing) < len(differing) / 2  # gold counts a closer as filler
    # without the bias the labels are what they were: the bias draws no random number when 0
    plain = preference_pairs(pool, 0, 500, 0.1, seed=4)
    assert preference_pairs(pool, 0, 500, 0.1, seed=4, pleasantry_bias=0.0) == plain
    with pytest.raises(ValueError, match="pleasantry_bias"):
        ProxyConfig(pleasantry_bias=-0.1)
