"""The sandbox's base policy: its tokenizer, the trained model, its samples, and determinism.

The "tiny" preset is built once per module and shared; the determinism test builds it once more
into another directory and compares the bytes.
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path

import pytest

from rlhf_eval.generate import EncodedPrompt, GeneratedSample, GenerationRequest, TransformersBackend
from rlhf_eval.records import Prompt
from rlhf_eval.sampling import SamplingParams, sample_seed
from rlhf_eval.sandbox.base import (
    BASE_PRESETS,
    EOS_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    BaseConfig,
    build_base_policy,
    build_tokenizer,
    read_sandbox_record,
)
from rlhf_eval.sandbox.gold import gold_terms
from rlhf_eval.sandbox.world import World, build_world, corpus, prompts

N_PROMPTS = 16


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(0)


@pytest.fixture(scope="module")
def samples(tiny_base: Path, world: World) -> list[GeneratedSample]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_base), use_safetensors=True).eval()
    backend = TransformersBackend(model, tokenizer, SamplingParams(max_new_tokens=48))
    requests = []
    for i, text in enumerate(prompts(world, N_PROMPTS, seed=1)):
        prompt = Prompt(prompt_id=f"p{i}", index=i, text=text)
        ids = tuple(tokenizer(text, add_special_tokens=True)["input_ids"])
        encoded = EncodedPrompt(prompt, ids, truncated=False)
        requests.append(GenerationRequest(f"p{i}-0", encoded, 0, sample_seed(0, prompt.prompt_id, 0)))
    return backend.generate(requests)


def test_presets_are_valid_and_small() -> None:
    for name, config in BASE_PRESETS.items():
        # parameters of a GPT-2 block: about 12 * hidden^2; "demo": 12 * 128^2 * 4 = 786k, plus embeddings
        assert 12 * config.hidden_size**2 * config.num_layers < 3_000_000, name
    with pytest.raises(ValueError, match="num_heads"):
        BaseConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="arch"):
        BaseConfig(arch="mamba")


def test_tokenizer_covers_the_vocabulary_without_unk(tmp_path: Path, world: World) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(build_tokenizer(world, tmp_path, corpus_size=200)))
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in SPECIAL_TOKENS] == [0, 1, 2]
    assert set(world.vocabulary) <= set(vocab)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token_id == 0
    unk = tokenizer.convert_tokens_to_ids(UNK_TOKEN)
    for example in corpus(world, 300, seed=7):
        for text in (example.prompt, example.answer):
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            assert unk not in ids and len(ids) == len(text.split()), text
            assert tokenizer.decode(ids) == text
    # an answer and its EOS, joined as SFTTrainer joins them, split into the words and the EOS
    assert tokenizer("the whale eats fish" + EOS_TOKEN)["input_ids"][-1] == tokenizer.eos_token_id


def test_base_policy_loads_with_safetensors(tiny_base: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_base), use_safetensors=True)
    config = BASE_PRESETS["tiny"]
    assert model.config.n_embd == config.hidden_size and model.config.n_layer == config.num_layers
    assert (tiny_base / "model.safetensors").exists() and not list(tiny_base.glob("*.bin"))
    record = read_sandbox_record(tiny_base)
    assert record["config"] == {**vars(config)} and record["world_seed"] == 0


def test_training_loss_decreased(tiny_base: Path) -> None:
    losses = [row["loss"] for row in read_sandbox_record(tiny_base)["losses"]]
    # logged every sft_steps // 20 steps; the loss starts near ln(vocabulary size) = ln(237) ~ 5.5
    assert len(losses) >= 10
    assert losses[-1] < 0.5 * losses[0], losses


def test_samples_end_with_eos_and_vary(samples: list[GeneratedSample], world: World) -> None:
    ended = sum(s.ended_eos for s in samples)
    assert ended > N_PROMPTS / 2, f"{ended}/{N_PROMPTS} samples ended with EOS"
    lengths = [len(s.text.split()) for s in samples]
    assert statistics.pstdev(lengths) > 2, lengths


def test_some_sample_states_a_fact_of_its_topic(samples: list[GeneratedSample], world: World) -> None:
    covered = [gold_terms(s.request.encoded.prompt.text or "", s.text, world).facts_covered for s in samples]
    assert max(covered) >= 1, [s.text for s in samples]


def test_same_config_gives_the_same_weights(tmp_path: Path, world: World, tiny_base: Path) -> None:
    again = build_base_policy(tmp_path / "again", world, BASE_PRESETS["tiny"])  # a second directory
    assert file_hash(again / "model.safetensors") == file_hash(tiny_base / "model.safetensors")
    assert (again / "tokenizer.json").read_bytes() == (tiny_base / "tokenizer.json").read_bytes()
