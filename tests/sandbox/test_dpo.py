"""The sandbox's DPO runs: proxy-ranked pairs, TRL's checkpoints (full and LoRA) as the harness reads them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rlhf_eval.discover import discover
from rlhf_eval.sandbox.dpo import (
    DPO_LORA_PRESETS,
    DPO_PRESETS,
    RUN_FILE,
    DPORunConfig,
    RankedPair,
    build_dpo_run,
    proxy_ranked_pairs,
    training_rows,
)
from rlhf_eval.sandbox.world import World

#: Short runs: 32 prompts, 6 steps of 8 pairs, a checkpoint every 2 steps.
SHORT = dataclasses.replace(DPO_PRESETS["tiny"], n_prompts=32, steps=6, save_steps=2)
SHORT_LORA = dataclasses.replace(DPO_LORA_PRESETS["tiny"], n_prompts=32, steps=6, save_steps=2)


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_proxy: Path, sandbox_world: World) -> Path:
    return build_dpo_run(tmp_path_factory.mktemp("dpo") / "dpo", tiny_base, tiny_proxy, sandbox_world, SHORT)


@pytest.fixture(scope="module")
def dpo_lora_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_proxy: Path, sandbox_world: World
) -> Path:
    out = tmp_path_factory.mktemp("dpo") / "dpo-lora"
    return build_dpo_run(out, tiny_base, tiny_proxy, sandbox_world, SHORT_LORA)


def test_pairs_are_the_best_and_worst_response_per_prompt() -> None:
    pool = [
        ("explain mars", "mars is red"),  # 1.0
        ("explain mars", "mars has two moons and mars is red"),  # 2.5: best
        ("explain mars", "i must decline"),  # -1.5: worst
        ("explain mars", "mars"),  # 0.0
        ("describe the whale", "the whale eats fish"),  # 0.5, a tie with the next: no pair
        ("describe the whale", "the whale is big"),  # 0.5
        ("list facts about the drum", "the drum is loud"),  # a single response: no pair
        ("explain mars", "sorry"),  # -1.5: ties the worst; the first in the pool stays rejected
    ]
    scores = [1.0, 2.5, -1.5, 0.0, 0.5, 0.5, 3.0, -1.5]
    pairs = proxy_ranked_pairs(pool, scores)
    # margin = 2.5 - (-1.5) = 4.0
    assert pairs == [RankedPair("explain mars", "mars has two moons and mars is red", "i must decline", 2.5, -1.5)]
    assert pairs[0].margin == 4.0
    assert training_rows(pairs) == [
        {"prompt": "explain mars", "chosen": " mars has two moons and mars is red", "rejected": " i must decline"}
    ]
    assert proxy_ranked_pairs([], []) == []
    with pytest.raises(ValueError, match="2 .* rows against 1 scores"):
        proxy_ranked_pairs(pool[:2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        proxy_ranked_pairs(pool[:2], [1.0, float("nan")])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("beta", 0.0),
        ("beta", float("inf")),
        ("samples_per_prompt", 1),
        ("n_prompts", 0),
        ("n_pairs", 0),
        ("steps", 0),
        ("batch_size", 0),
        ("learning_rate", -1e-3),
        ("lora_learning_rate", 0.0),
        ("save_steps", 31),
        ("save_steps", 0),
        ("lora_rank", 0),
        ("lora_alpha", 0),
        ("lora_target_modules", ()),
        ("lora_target_modules", "c_attn"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}="):
        DPORunConfig(**{field: value})  # type: ignore[arg-type]


def test_presets_save_five_to_eight_checkpoints() -> None:
    for presets in (DPO_PRESETS, DPO_LORA_PRESETS):
        for config in presets.values():
            assert config.steps % config.save_steps == 0 and 5 <= config.steps // config.save_steps <= 8
    assert all(c.lora for c in DPO_LORA_PRESETS.values()) and not any(c.lora for c in DPO_PRESETS.values())


def test_full_run_writes_safetensors_checkpoints_with_dpo_logs(dpo_run: Path, tiny_base: Path) -> None:
    from safetensors.torch import load_file

    assert sorted(p.name for p in dpo_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not list(dpo_run.rglob("*.bin")) and not list(dpo_run.rglob("*.pt")) and not list(dpo_run.rglob("*.pth"))
    last = dpo_run / "checkpoint-6"
    assert (last / "config.json").is_file() and (last / "tokenizer.json").is_file()
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    logged = [row for row in state["log_history"] if "loss" in row]
    assert [row["step"] for row in logged] == [1, 2, 3, 4, 5, 6]
    for row in logged:
        assert row["rewards/margins"] == pytest.approx(row["rewards/chosen"] - row["rewards/rejected"], abs=1e-5)
    assert logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]  # the pairs are being fitted
    base, trained = load_file(str(tiny_base / "model.safetensors")), load_file(str(last / "model.safetensors"))
    assert base.keys() == trained.keys()
    assert any(not base[k].equal(trained[k]) for k in base)


def test_run_json_records_config_pairs_and_versions(dpo_run: Path) -> None:
    record = json.loads((dpo_run / RUN_FILE).read_text())
    assert record["method"] == "dpo" and DPORunConfig(**record["config"]) == SHORT
    pairs = record["pairs"]
    assert 1 <= pairs["n_pairs"] <= SHORT.n_prompts and pairs["pool_size"] == SHORT.n_prompts * SHORT.samples_per_prompt
    assert pairs["mean_proxy_margin"] > 0  # chosen always scores higher than rejected
    assert pairs["mean_gold_margin"] == pytest.approx(pairs["mean_gold_chosen"] - pairs["mean_gold_rejected"])
    assert 0.0 <= pairs["gold_agreement"] <= 1.0
    assert {"torch", "transformers", "trl"} <= set(record["versions"]) and record["seconds"] > 0


def test_lora_run_writes_adapters_the_harness_loads(dpo_lora_run: Path, tiny_base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf_eval.models import LoadOptions, load_causal_lm

    (run,) = discover([str(dpo_lora_run)])
    assert run.method == "dpo"
    assert [c.checkpoint for c in run.checkpoints] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert all(c.kind == "adapter" and c.base == tiny_base.resolve() for c in run.checkpoints)
    assert not list(dpo_lora_run.rglob("*.bin"))
    last = dpo_lora_run / "checkpoint-6"
    assert (last / "adapter_model.safetensors").is_file() and not (last / "model.safetensors").exists()
    config = json.loads((last / "adapter_config.json").read_text())
    assert config["r"] == SHORT_LORA.lora_rank and sorted(config["target_modules"]) == ["c_attn", "c_fc"]
    merged = load_causal_lm(last, LoadOptions(), adapter_base=run.checkpoints[-1].base)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base)).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(merged(ids).logits, base(ids).logits)  # the adapter moved the policy
    state = json.loads((last / "trainer_state.json").read_text())
    assert any("rewards/chosen" in row for row in state["log_history"])
