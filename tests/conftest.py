"""Tiny offline checkpoints shared by the test session, built once under pytest's temp dir.

Every model is a random-init or briefly fine-tuned GPT-2/Llama over a word-level vocabulary
(``rlhf_eval.tiny``), with the builders' default size (hidden size 16, 2 layers, 2 heads) unless
said; the whole set builds in about 5 s on a CPU, with no network.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from rlhf_eval import tiny  # noqa: E402


def words(text: str) -> list[str]:
    return text.split()


#: The policies' vocabulary: 60 words (63 tokens with <pad>, <eos>, <unk>).
POLICY_WORDS = words(
    "the cat sat on a mat dog runs fast explain why sky is blue list three good ideas "
    "and it was very big small red green sun moon star tree bird sings today because of light "
    "water cold warm one two first second also so then but not yes no I think you can help "
    "house road rain snow wind"
)
#: The reward model's vocabulary: the same words in another order plus a few, so ids differ.
REWARD_WORDS = [*reversed(POLICY_WORDS), "great", "bad", "answer"]
#: The Llama policy's vocabulary: its own words and the tokens of its chat template.
LLAMA_WORDS = ["user", "assistant", "system", ":", *POLICY_WORDS[:30]]
LLAMA_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
TINY_VOCAB_WORDS = ["a", "b", "c", "d", "e"]  # 8 tokens with the specials

VARIANT_A_TEXTS = ["the cat sat on a mat", "a dog runs fast", "the cat sat on the mat and the dog runs"]
VARIANT_B_TEXTS = [
    "explain why the sky is blue because of light",
    "list three good ideas first one second two",
    "the sun is warm and the moon is cold",
]
TRAINER_RUN_TEXTS = ["the bird sings today", "one two three", "the tree is green and the sun is red"]


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def word_tokenizer_dir(tiny_models_root: Path) -> Path:
    return tiny.build_word_tokenizer(tiny_models_root / "word_tokenizer", POLICY_WORDS)


@pytest.fixture(scope="session")
def gpt2_ref(tiny_models_root: Path, word_tokenizer_dir: Path) -> Path:
    return tiny.build_causal_lm(tiny_models_root / "gpt2_ref", word_tokenizer_dir, seed=0)


@pytest.fixture(scope="session")
def gpt2_variant_a(tiny_models_root: Path, gpt2_ref: Path) -> Path:
    return tiny.finetune_causal_lm(gpt2_ref, tiny_models_root / "gpt2_variant_a", VARIANT_A_TEXTS, steps=8)


@pytest.fixture(scope="session")
def gpt2_variant_b(tiny_models_root: Path, gpt2_ref: Path) -> Path:
    return tiny.finetune_causal_lm(gpt2_ref, tiny_models_root / "gpt2_variant_b", VARIANT_B_TEXTS, steps=8)


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tiny_models_root: Path) -> Path:
    return tiny.build_word_tokenizer(
        tiny_models_root / "llama_tokenizer", LLAMA_WORDS, chat_template=LLAMA_CHAT_TEMPLATE
    )


@pytest.fixture(scope="session")
def llama_ref(tiny_models_root: Path, llama_tokenizer_dir: Path) -> Path:
    return tiny.build_causal_lm(tiny_models_root / "llama_ref", llama_tokenizer_dir, arch="llama", seed=3)


@pytest.fixture(scope="session")
def reward_tokenizer_dir(tiny_models_root: Path) -> Path:
    return tiny.build_word_tokenizer(tiny_models_root / "reward_tokenizer", REWARD_WORDS)


@pytest.fixture(scope="session")
def reward_train_pairs() -> list[tuple[str, str]]:
    """(chosen, rejected) texts the reward model of ``reward_model_dir`` was trained on."""
    return [
        ("explain why the sky is blue because of light", "sky sky sky"),
        ("the cat sat on a mat", "cat cat"),
        ("list three good ideas first one second two", "no no no no"),
        ("the sun is warm and the moon is cold", "cold"),
        ("a dog runs fast", "dog dog dog dog dog"),
        ("the bird sings today", "bad bad"),
    ]


@pytest.fixture(scope="session")
def reward_model_dir(
    tiny_models_root: Path, reward_tokenizer_dir: Path, reward_train_pairs: list[tuple[str, str]]
) -> Path:
    out = tiny_models_root / "reward_model"
    return tiny.build_reward_model(out, reward_tokenizer_dir, seed=4, train_pairs=reward_train_pairs, steps=30)


@pytest.fixture(scope="session")
def reward_model_two_labels_dir(tiny_models_root: Path, reward_tokenizer_dir: Path) -> Path:
    return tiny.build_reward_model(
        tiny_models_root / "reward_model_two_labels",
        reward_tokenizer_dir,
        seed=5,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
    )


@pytest.fixture(scope="session")
def lora_dir(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    # its own parent, so tests can check that nothing (a merged copy) is written next to it
    return tiny.build_lora_adapter(gpt2_ref, tmp_path_factory.mktemp("lora") / "lora_adapter", seed=6)


@pytest.fixture(scope="session")
def trainer_run_dir(tiny_models_root: Path, gpt2_ref: Path) -> Path:
    """A real Trainer run (checkpoint-2/, checkpoint-4/, final model at the root) with PPO's
    metric names in its logs and TRL's PPO model card."""

    def ppo_metrics(step: int) -> dict[str, float]:
        return {"objective/kl": 0.25 * step, "objective/scores": 1.0 + 0.1 * step}

    return tiny.build_trainer_run(
        tiny_models_root / "trainer_run", gpt2_ref, TRAINER_RUN_TEXTS, save_steps=2, max_steps=4, seed=7,
        extra_logs=ppo_metrics, card_method="ppo",
    )  # fmt: skip


@pytest.fixture(scope="session")
def vhead_dir(tiny_models_root: Path, gpt2_variant_a: Path) -> Path:
    return tiny.add_value_head(gpt2_variant_a, tiny_models_root / "vhead")


@pytest.fixture(scope="session")
def pickle_only_dir(tiny_models_root: Path, gpt2_variant_a: Path) -> Path:
    return tiny.save_pickle_only(gpt2_variant_a, tiny_models_root / "pickle_only")


@pytest.fixture(scope="session")
def tiny_vocab_tokenizer_dir(tiny_models_root: Path) -> Path:
    return tiny.build_word_tokenizer(tiny_models_root / "tiny_vocab_tokenizer", TINY_VOCAB_WORDS)


@pytest.fixture(scope="session")
def tiny_vocab_ref(tiny_models_root: Path, tiny_vocab_tokenizer_dir: Path) -> Path:
    return tiny.build_causal_lm(tiny_models_root / "tiny_vocab_ref", tiny_vocab_tokenizer_dir, hidden_size=8, seed=8)


@pytest.fixture(scope="session")
def tiny_vocab_policy(tiny_models_root: Path, tiny_vocab_ref: Path) -> Path:
    """The tiny-vocabulary reference fine-tuned towards "a" and short answers."""
    texts = ["a a b", "a b", "a a", "b a a", "a"]
    return tiny.finetune_causal_lm(tiny_vocab_ref, tiny_models_root / "tiny_vocab_policy", texts, steps=30)


TRL_PROMPTS = ["explain why the sky is blue", "list three good ideas", "the cat sat", "a dog runs"]


@pytest.fixture(scope="session")
def trl_dpo_lora_run(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    """A real TRL ``DPOTrainer`` run with a PEFT LoRA adapter: adapter ``checkpoint-2/``,
    ``checkpoint-4/`` and the final adapter at the root, as TRL writes them (CPU, fp32)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    out = tmp_path_factory.mktemp("trl") / "dpo-lora"
    rows = [
        {"prompt": "explain why the sky is blue", "chosen": " because of light", "rejected": " the cat sat on a mat"},
        {"prompt": "list three good ideas", "chosen": " one two three", "rejected": " no no no"},
    ] * 8
    config = DPOConfig(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=4, save_steps=2, logging_steps=1,
        bf16=False, use_cpu=True, report_to=[], learning_rate=5e-2, beta=0.1, disable_tqdm=True,
    )  # fmt: skip
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(gpt2_ref)),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(str(gpt2_ref)),
        peft_config=LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"),
    )
    with tiny.training.one_thread(), tiny.training.quiet_transformers():
        trainer.train()
    trainer.save_model(str(out))
    return out


@pytest.fixture(scope="session")
def trl_grpo_run(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    """A real TRL ``GRPOTrainer`` run with a KL penalty (beta > 0), full-model checkpoints."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    def reward_length(completions: list[str], **_: object) -> list[float]:
        return [float(len(c.split())) for c in completions]

    out = tmp_path_factory.mktemp("trl") / "grpo"
    config = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        max_steps=4, save_steps=2, logging_steps=1, bf16=False, use_cpu=True, report_to=[],
        learning_rate=1e-2, beta=0.1, disable_tqdm=True,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(gpt2_ref)),
        reward_funcs=reward_length,
        args=config,
        train_dataset=Dataset.from_list([{"prompt": p} for p in TRL_PROMPTS * 2]),
        processing_class=AutoTokenizer.from_pretrained(str(gpt2_ref)),
    )
    with tiny.training.one_thread(), tiny.training.quiet_transformers():
        trainer.train()
    trainer.save_model(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    """The tiny sandbox preset built and evaluated by the demo (about a minute), shared by the
    sandbox tests and the dashboard's browser test: (sandbox dir, database, DemoResult)."""
    from rlhf_eval.demo import run_demo

    root = tmp_path_factory.mktemp("sandbox")
    out, db = root / "sandbox", root / "demo.duckdb"
    return out, db, run_demo(out, str(db), preset="tiny", quiet=True)
