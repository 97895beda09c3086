"""The tiny builders make what they claim: loadable safetensors dirs, models that differ where
they should, the Trainer layout, a reward model that learned its pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhf_eval import tiny
from rlhf_eval.discover import method_from_card


def causal_lm(path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("use_safetensors", True)
    return AutoModelForCausalLM.from_pretrained(str(path), **kwargs).eval()


def reward_model(path: Path) -> Any:
    return AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True).eval()


def logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def sample_ids(tokenizer_dir: Path, text: str = "the cat sat on a mat") -> list[int]:
    return list(AutoTokenizer.from_pretrained(str(tokenizer_dir))(text)["input_ids"])


def test_word_tokenizer_ids_decoding_and_unknown_words(word_tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(word_tokenizer_dir))
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == 63  # 3 specials + 60 words
    assert tokenizer("the cat")["input_ids"] == [3, 4]  # first two words, after the specials
    assert tokenizer.decode(tokenizer("the cat sat")["input_ids"]) == "the cat sat"
    assert tokenizer("the zebra")["input_ids"] == [3, 2]  # unknown word -> <unk>
    assert tokenizer.decode([3, 4, 1], skip_special_tokens=True) == "the cat"


def test_word_tokenizer_rejects_multi_token_words(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not one token"):
        tiny.build_word_tokenizer(tmp_path / "bad", ["two words"])


def test_tiny_vocabulary_has_eight_tokens(tiny_vocab_tokenizer_dir: Path, tiny_vocab_ref: Path) -> None:
    assert len(AutoTokenizer.from_pretrained(str(tiny_vocab_tokenizer_dir))) == 8  # 3 specials + 5 words
    config = json.loads((tiny_vocab_ref / "config.json").read_text())
    assert (config["vocab_size"], config["n_embd"], config["n_layer"]) == (8, 8, 2)


POLICIES = ["gpt2_ref", "gpt2_variant_a", "gpt2_variant_b", "llama_ref", "tiny_vocab_policy"]


@pytest.mark.parametrize("name", POLICIES)
def test_causal_lms_load_from_safetensors_with_ids_set(name: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(name)
    assert (path / "model.safetensors").is_file() and not (path / "pytorch_model.bin").exists()
    model = causal_lm(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    assert model.config.vocab_size == len(tokenizer)
    for config in (model.config, model.generation_config):
        assert config.pad_token_id == tokenizer.pad_token_id == 0
        assert config.eos_token_id == tokenizer.eos_token_id == 1
        assert config.bos_token_id == 1  # no BOS token: EOS doubles as BOS, as in GPT-2


def test_variants_differ_from_the_reference_and_each_other(
    gpt2_ref: Path, gpt2_variant_a: Path, gpt2_variant_b: Path, word_tokenizer_dir: Path
) -> None:
    ids = sample_ids(word_tokenizer_dir)
    ref, a, b = (logits(causal_lm(p), ids) for p in (gpt2_ref, gpt2_variant_a, gpt2_variant_b))
    assert (a - ref).abs().max() > 0.1
    assert (b - ref).abs().max() > 0.1
    assert (a - b).abs().max() > 0.1


def test_tiny_vocab_policy_moves_clearly_away_from_the_reference(tiny_vocab_ref: Path, tiny_vocab_policy: Path) -> None:
    ids = [3]  # "a"
    p_ref = logits(causal_lm(tiny_vocab_ref), ids)[-1].softmax(-1)
    p_pol = logits(causal_lm(tiny_vocab_policy), ids)[-1].softmax(-1)
    assert 0.5 * (p_pol - p_ref).abs().sum() > 0.2  # total variation of the next-token distributions
    assert torch.allclose(p_ref.sum(), torch.tensor(1.0)) and p_ref.shape == (8,)


def test_llama_ref_has_its_own_tokenizer_and_chat_template(llama_ref: Path, word_tokenizer_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(llama_ref))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "the cat"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "user: the cat assistant: "
    assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]
    assert causal_lm(llama_ref).config.model_type == "llama"
    assert tokenizer.get_vocab() != AutoTokenizer.from_pretrained(str(word_tokenizer_dir)).get_vocab()


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # from peft
def test_lora_adapter_points_at_its_base_and_changes_logits(
    lora_dir: Path, gpt2_ref: Path, word_tokenizer_dir: Path
) -> None:
    from peft import PeftModel

    config = json.loads((lora_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(gpt2_ref.resolve())
    assert config["target_modules"] == ["c_attn"] and config["r"] == 4
    assert (lora_dir / "adapter_model.safetensors").is_file() and (lora_dir / "tokenizer.json").is_file()
    ids = sample_ids(word_tokenizer_dir)
    base = causal_lm(gpt2_ref)
    before = logits(base, ids)
    adapted = PeftModel.from_pretrained(base, str(lora_dir)).eval()
    assert (logits(adapted, ids) - before).abs().max() > 1e-3


def test_value_head_tensors_are_saved_and_ignored_by_the_causal_lm(
    vhead_dir: Path, gpt2_variant_a: Path, word_tokenizer_dir: Path
) -> None:
    with safe_open(str(vhead_dir / "model.safetensors"), framework="pt") as handle:
        assert handle.get_slice("v_head.summary.weight").get_shape() == [1, 16]
        assert handle.get_slice("v_head.summary.bias").get_shape() == [1]
    ids = sample_ids(word_tokenizer_dir)
    assert torch.equal(logits(causal_lm(vhead_dir), ids), logits(causal_lm(gpt2_variant_a), ids))


def test_pickle_only_dir_has_no_safetensors_and_the_same_weights(
    pickle_only_dir: Path, gpt2_variant_a: Path, word_tokenizer_dir: Path
) -> None:
    assert not list(pickle_only_dir.glob("*.safetensors"))
    assert (pickle_only_dir / "pytorch_model.bin").is_file()
    assert (pickle_only_dir / "tokenizer.json").is_file()
    ids = sample_ids(word_tokenizer_dir)
    loaded = causal_lm(pickle_only_dir, use_safetensors=False)
    assert torch.equal(logits(loaded, ids), logits(causal_lm(gpt2_variant_a), ids))


def test_trainer_run_has_the_trainer_layout_logs_and_card(trainer_run_dir: Path) -> None:
    for step in (2, 4):
        checkpoint = trainer_run_dir / f"checkpoint-{step}"
        for name in (
            "config.json",
            "model.safetensors",
            "trainer_state.json",
            "tokenizer.json",
            "rng_state.pth",
        ):
            assert (checkpoint / name).is_file(), f"{checkpoint} lacks {name}"
        history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
        kl = {entry["step"]: entry["objective/kl"] for entry in history if "objective/kl" in entry}
        assert kl == {s: 0.25 * s for s in range(1, step + 1)}  # one log per step, kl = 0.25 x step
    assert sorted(p.name for p in trainer_run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    root_state = json.loads((trainer_run_dir / "trainer_state.json").read_text())
    assert root_state["global_step"] == 4 and (trainer_run_dir / "model.safetensors").is_file()
    assert all("objective/kl" not in e for e in root_state["log_history"] if "train_runtime" in e)
    card = (trainer_run_dir / "README.md").read_text()
    assert card.startswith("---\n") and "- ppo\n" in card and "This model was trained with PPO" in card
    assert method_from_card(trainer_run_dir) == "ppo"


def test_trainer_run_rejects_an_unknown_card_method(tmp_path: Path, gpt2_ref: Path) -> None:
    with pytest.raises(ValueError, match="card_method='ppoo'"):
        tiny.build_trainer_run(tmp_path / "r", gpt2_ref, ["a"], save_steps=1, max_steps=1, card_method="ppoo")


def test_reward_models_have_their_own_tokenizer_and_labels(
    reward_model_dir: Path, reward_model_two_labels_dir: Path, word_tokenizer_dir: Path
) -> None:
    model = reward_model(reward_model_dir)
    assert model.config.num_labels == 1 and model.config.pad_token_id == 0
    rm_vocab = AutoTokenizer.from_pretrained(str(reward_model_dir)).get_vocab()
    policy_vocab = AutoTokenizer.from_pretrained(str(word_tokenizer_dir)).get_vocab()
    assert rm_vocab["the"] != policy_vocab["the"] and len(rm_vocab) != len(policy_vocab)
    two = reward_model(reward_model_two_labels_dir)
    assert two.config.num_labels == 2 and two.config.id2label == {0: "negative", 1: "positive"}


def test_trained_reward_model_prefers_the_chosen_side(
    reward_model_dir: Path, reward_train_pairs: list[tuple[str, str]]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(reward_model_dir))
    model = reward_model(reward_model_dir)

    def reward(text: str) -> float:
        with torch.no_grad():
            return float(model(**tokenizer(text, return_tensors="pt")).logits[0, 0])

    for chosen, rejected in reward_train_pairs:
        assert reward(chosen) > reward(rejected), (chosen, rejected)
