"""The sandbox's PPO loop: batched log-probs against one-at-a-time ones, its checkpoints as the harness reads them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rlhf_eval.discover import discover
from rlhf_eval.sandbox.ppo import (
    PPO_PRESETS,
    VALUE_HEAD_BIAS,
    VALUE_HEAD_WEIGHT,
    PPOConfig,
    build_ppo_run,
    policy_with_value_head,
    token_logprobs_and_values,
)
from rlhf_eval.sandbox.world import World

#: A short run: 6 iterations, a checkpoint every 2.
SHORT = dataclasses.replace(PPO_PRESETS["tiny"], iterations=6, save_every=2)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_proxy: Path, sandbox_world: World) -> Path:
    return build_ppo_run(tmp_path_factory.mktemp("ppo") / "ppo", tiny_base, tiny_proxy, sandbox_world, SHORT)


def test_batched_logprobs_match_unpadded_single_sequences(tiny_base: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    model = policy_with_value_head(AutoModelForCausalLM.from_pretrained(str(tiny_base))).eval()
    prompts = ["describe the violin", "tell me about the whale please"]
    responses = [[5, 9, 12, 1], [7, 8]]
    pad = tokenizer.pad_token_id
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, encoded))
    rows, masks = [], []
    for ids, response in zip(encoded, responses, strict=True):
        tail = response + [pad] * (4 - len(response))
        rows.append([pad] * (width - len(ids)) + ids + tail)
        masks.append([0] * (width - len(ids)) + [1] * len(ids) + [1] * len(response) + [0] * (4 - len(response)))
    with torch.no_grad():
        logprobs, values = token_logprobs_and_values(
            model, torch.tensor(rows), torch.tensor(masks), width, with_values=True
        )
        for i, (ids, response) in enumerate(zip(encoded, responses, strict=True)):
            sequence = torch.tensor([ids + response])
            out = model(sequence, output_hidden_states=True)
            expected = torch.log_softmax(out.logits[0, len(ids) - 1 : -1], -1)[torch.arange(len(response)), response]
            assert logprobs[i, : len(response)] == pytest.approx(expected, abs=1e-5)
            expected_values = model.v_head.summary(out.hidden_states[-1][0, len(ids) - 1 : -1]).squeeze(-1)
            assert values is not None and values[i, : len(response)] == pytest.approx(expected_values, abs=1e-5)


def test_run_writes_trainer_style_checkpoints_with_a_value_head(ppo_run: Path) -> None:
    from safetensors import safe_open

    assert sorted(p.name for p in ppo_run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    last = ppo_run / "checkpoint-6"
    assert not list(ppo_run.rglob("*.bin")) and not list(ppo_run.rglob("*.partial"))
    with safe_open(str(last / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
        hidden = json.loads((last / "config.json").read_text())["n_embd"]
        assert handle.get_tensor(VALUE_HEAD_WEIGHT).shape == (1, hidden)
        assert handle.get_tensor(VALUE_HEAD_BIAS).shape == (1,)
    assert any(k.startswith("transformer.") for k in keys)
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and [row["step"] for row in state["log_history"]] == [1, 2, 3, 4, 5, 6]
    for row in state["log_history"]:
        for name in ("objective/kl", "objective/scores", "objective/rlhf_reward"):
            assert isinstance(row[name], float)
        assert row["objective/rlhf_reward"] == pytest.approx(
            row["objective/scores"] - SHORT.beta * row["objective/kl"], abs=1e-5
        )
        assert row["objective/non_score_reward"] == pytest.approx(-SHORT.beta * row["objective/kl"], abs=1e-6)
    assert state["log_history"][0]["objective/kl"] == pytest.approx(0.0, abs=1e-4)  # first rollout: policy = reference


def test_harness_discovers_the_run_as_ppo_and_loads_the_policy(ppo_run: Path, tiny_base: Path) -> None:
    from rlhf_eval.models import LoadOptions, load_causal_lm

    [run] = discover([str(ppo_run)])
    assert run.method == "ppo" and [c.step for c in run.checkpoints] == [2, 4, 6]
    assert {log.metric for log in run.training_logs} >= {"objective/kl", "objective/scores", "objective/rlhf_reward"}
    model = load_causal_lm(run.checkpoints[-1].path, LoadOptions())
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_base))
    changed = [name for name, p in model.state_dict().items() if not torch.equal(p, base.state_dict()[name])]
    assert changed  # training moved the policy


def test_same_seed_gives_identical_weights(
    tmp_path: Path, ppo_run: Path, tiny_base: Path, tiny_proxy: Path, sandbox_world: World
) -> None:
    again = build_ppo_run(tmp_path / "again", tiny_base, tiny_proxy, sandbox_world, SHORT)
    for step in (2, 6):
        name = f"checkpoint-{step}/model.safetensors"
        assert (again / name).read_bytes() == (ppo_run / name).read_bytes()


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="beta=-0.1"):
        PPOConfig(beta=-0.1)
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig(batch_size=10, minibatch_size=4)
    with pytest.raises(ValueError, match="save_every"):
        PPOConfig(iterations=4, save_every=5)


def test_extra_saves_add_checkpoints_without_changing_the_training(
    tmp_path: Path, ppo_run: Path, tiny_base: Path, tiny_proxy: Path, sandbox_world: World
) -> None:
    config = dataclasses.replace(SHORT, save_every=3, save_at=(2,))
    assert [i for i in range(1, 7) if config.saves(i)] == [2, 3, 6]
    again = build_ppo_run(tmp_path / "again", tiny_base, tiny_proxy, sandbox_world, config)
    assert sorted(p.name for p in again.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3", "checkpoint-6"]
    for step in (2, 6):  # the same weights as the run saved every 2 iterations
        name = f"checkpoint-{step}/model.safetensors"
        assert (again / name).read_bytes() == (ppo_run / name).read_bytes()


def test_save_at_must_name_iterations_of_the_run() -> None:
    with pytest.raises(ValueError, match=r"save_at=\(0, 4\): iterations are 1..6"):
        PPOConfig(iterations=6, save_every=2, save_at=(0, 4))
