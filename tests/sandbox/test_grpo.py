"""The sandbox's GRPO run (TRL's ``GRPOTrainer``): its checkpoints as the harness reads them, its reward."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rlhf_eval.discover import discover
from rlhf_eval.sandbox.grpo import (
    GRPO_PRESETS,
    RUN_FILE,
    GRPORunConfig,
    build_grpo_run,
)
from rlhf_eval.sandbox.proxy import REWARD_NAME, ProxyReward, proxy_scores
from rlhf_eval.sandbox.world import World, corpus

TINY = GRPO_PRESETS["tiny"]
#: 20 steps with a checkpoint every 4: checkpoint-4, -8, -12, -16, -20.
STEPS = list(range(TINY.save_steps, TINY.steps + 1, TINY.save_steps))


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, tiny_proxy: Path, sandbox_world: World) -> Path:
    return build_grpo_run(tmp_path_factory.mktemp("grpo") / "grpo", tiny_base, tiny_proxy, sandbox_world, TINY)


def test_run_writes_trainer_checkpoints_in_safetensors(grpo_run: Path) -> None:
    assert STEPS == [4, 8, 12, 16, 20]
    assert {p.name for p in grpo_run.glob("checkpoint-*")} == {f"checkpoint-{n}" for n in STEPS}
    for step in STEPS:
        checkpoint = grpo_run / f"checkpoint-{step}"
        for name in ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.json"):
            assert (checkpoint / name).is_file(), checkpoint / name
    assert not list(grpo_run.rglob("*.bin")) and not list(grpo_run.rglob("*.pt")) and not list(grpo_run.rglob("*.pth"))
    assert not (grpo_run / "model.safetensors").exists()  # the final policy is the last checkpoint only
    record = json.loads((grpo_run / RUN_FILE).read_text())
    assert record["method"] == "grpo" and record["config"] == dataclasses.asdict(TINY)
    assert record["seconds"] > 0 and "trl" in record["versions"]


def test_log_history_has_kl_and_proxy_reward(grpo_run: Path) -> None:
    state = json.loads((grpo_run / f"checkpoint-{STEPS[-1]}" / "trainer_state.json").read_text())
    rows = [row for row in state["log_history"] if "kl" in row]
    assert state["global_step"] == TINY.steps and [row["step"] for row in rows] == list(range(1, TINY.steps + 1))
    for row in rows:
        assert row["kl"] >= 0  # k3 = r − log r − 1 ≥ 0 per token
        assert row["reward"] == pytest.approx(row[f"rewards/{REWARD_NAME}/mean"])  # one reward function, weight 1
        assert row["completions/mean_length"] > 0
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 1 samples from the reference itself
    assert max(row["kl"] for row in rows) > 0.01  # the policy moved away from the reference


def test_harness_discovers_the_run_as_grpo(grpo_run: Path) -> None:
    (run,) = discover([str(grpo_run)])
    assert run.method == "grpo"
    assert [c.step for c in run.checkpoints] == STEPS  # no extra "final" model at the root


def test_policy_weights_moved_from_the_base(grpo_run: Path, tiny_base: Path) -> None:
    from safetensors.torch import load_file

    base = load_file(str(tiny_base / "model.safetensors"))
    last = load_file(str(grpo_run / f"checkpoint-{STEPS[-1]}" / "model.safetensors"))
    assert set(last) == set(base)
    changed = [name for name in base if not bool((base[name] == last[name]).all())]
    assert len(changed) > len(base) // 2, changed


def test_reward_equals_the_harness_proxy_score_of_trl_decoded_completions(
    tiny_base: Path, tiny_proxy: Path, sandbox_world: World
) -> None:
    """TRL decodes a completion's ids (``<eos>`` included) with ``skip_special_tokens=True``; the
    reward of that text must be the proxy's score of the harness's sample, the response text
    before ``<eos>``, scored separately by ``proxy_scores``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    examples = corpus(sandbox_world, 6, seed=7)
    prompts = [e.prompt for e in examples] + [examples[0].prompt]
    answers = [e.answer for e in examples] + [""]  # an immediate <eos>: the empty response
    ids = [tokenizer(" " + a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for a in answers]
    completions = tokenizer.batch_decode(ids, skip_special_tokens=True)
    assert completions == answers  # no leading space, no <eos>
    rewards = ProxyReward(tiny_proxy)(prompts=prompts, completions=completions, completion_ids=ids)
    assert rewards == pytest.approx(proxy_scores(tiny_proxy, list(zip(prompts, answers, strict=True))), abs=1e-5)
    assert len(set(rewards)) > 1


@pytest.mark.parametrize("beta", [0.0, -0.1, float("nan")])
def test_config_requires_a_kl_penalty(beta: float) -> None:
    with pytest.raises(ValueError, match=r"beta=.*: the KL coefficient must be a finite number > 0"):
        GRPORunConfig(beta=beta)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 10, "num_generations": 4}, "multiple of num_generations"),
        ({"num_generations": 1, "batch_size": 4}, "at least 2 completions"),
        ({"steps": 20, "save_steps": 6}, "divisor of steps"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"loss_type": "ppo"}, "loss_type='ppo': unknown; use one of grpo, dapo"),
    ],
)
def test_config_rejects_inconsistent_settings(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GRPORunConfig(**change)  # type: ignore[arg-type]
