"""The sandbox's base policy: a word-level tokenizer and a small GPT-2 trained with TRL's ``SFTTrainer``.

The corpus is ``world.corpus(...)`` with the default style mix, so the base policy's samples vary
in length, fact coverage and boilerplate, which gives optimization against a reward somewhere to
go. Each example becomes a ``{"prompt", "completion"}`` pair, ``"tell me about the whale"`` and
``" the whale eats fish"``; ``SFTTrainer`` appends ``<eos>`` to the completion and puts the loss on
the completion only, so the model learns to answer a plain-text prompt and to end its answer with
``<eos>``. At sampling time the prompt is the same plain text, tokenized without special tokens.

``build_base_policy`` writes a directory that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load: ``model.safetensors``, ``config.json``, the tokenizer files,
and ``sandbox.json`` (the config, the world seed, the training losses and the library versions).

Determinism: the same config and world give byte-identical ``model.safetensors`` on the same
machine with the same versions of torch, transformers, trl, tokenizers and datasets (everything
is seeded, runs in fp32 on one CPU thread, and the tokenizer's ids are sorted by frequency then by
word). Another CPU (other vector instructions) or other library versions can change the float
rounding and hence the weights; the tokenizer and the corpus stay the same.

>>> BASE_PRESETS["tiny"].hidden_size, BASE_PRESETS["tiny"].arch
(32, 'gpt2')
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_eval.sandbox.world import World, corpus
from rlhf_eval.tiny.training import one_thread, quiet_transformers

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)
#: The file, next to the weights, that records how a base policy was built.
SANDBOX_FILE = "sandbox.json"
ARCHES = ("gpt2",)
#: The pickle the Trainer writes into every checkpoint (its arguments); sandbox runs delete it.
TRAINING_ARGS_PICKLE = "training_args.bin"


@dataclass(frozen=True)
class BaseConfig:
    """How to build a base policy: model size, corpus size and SFT settings."""

    seed: int = 0
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 2
    max_positions: int = 128
    corpus_size: int = 2000
    sft_steps: int = 400
    learning_rate: float = 5e-3
    batch_size: int = 8
    arch: str = "gpt2"

    def __post_init__(self) -> None:
        if self.arch not in ARCHES:
            raise ValueError(f"arch={self.arch!r}: unknown; use one of {', '.join(ARCHES)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")
        if self.sft_steps < 1 or self.corpus_size < 1 or self.batch_size < 1:
            raise ValueError(f"{self}: sft_steps, corpus_size and batch_size must be at least 1")


#: "tiny" is for tests (about 15 s on two CPU cores); "demo" is the demo's base policy (under 3 min, 0.84M parameters).
BASE_PRESETS: dict[str, BaseConfig] = {
    "tiny": BaseConfig(),
    "demo": BaseConfig(
        hidden_size=128, num_layers=4, num_heads=4, corpus_size=8000, sft_steps=600, learning_rate=2e-3, batch_size=16
    ),
}


@dataclass(frozen=True)
class SFTExample:
    """One SFT row as ``SFTTrainer`` takes it: the completion starts with the space that joins it."""

    prompt: str
    completion: str


def sft_examples(world: World, config: BaseConfig) -> list[SFTExample]:
    """The training rows: ``config.corpus_size`` corpus examples (default style mix, ``config.seed``)."""
    return [SFTExample(e.prompt, " " + e.answer) for e in corpus(world, config.corpus_size, seed=config.seed)]


def build_tokenizer(world: World, out_dir: Path | str, corpus_size: int = 2000, seed: int = 0) -> Path:
    """Train a word-level tokenizer on ``corpus_size`` corpus texts (prompts and answers) plus every
    word of ``world.vocabulary``, wrap it as a transformers fast tokenizer and ``save_pretrained`` it
    into ``out_dir``. Ids: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then words by falling frequency
    (ties by word). No special token is added when encoding; decoding joins words with spaces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [text for e in corpus(world, corpus_size, seed=seed) for text in (e.prompt, e.answer)]
    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=0, show_progress=False)
    tokenizer.train_from_iterator([*texts, *world.vocabulary], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        wrapped.save_pretrained(str(out))
    return out


def gpt2_config(tokenizer: Any, *, hidden_size: int, num_layers: int, num_heads: int, max_positions: int) -> Any:
    """A GPT-2 config over the tokenizer's vocabulary, with its EOS as BOS and its pad id."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=num_heads,
        n_positions=max_positions,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def random_policy(config: BaseConfig, tokenizer: Any) -> Any:
    """A random-init causal LM of the config's size over the tokenizer's vocabulary (seeded)."""
    from transformers import GPT2LMHeadModel, set_seed

    set_seed(config.seed)
    return GPT2LMHeadModel(
        gpt2_config(
            tokenizer,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            max_positions=config.max_positions,
        )
    )


def training_losses(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The ``{"step", "loss"}`` entries of a Trainer's log history (the final summary left out)."""
    return [{"step": int(row["step"]), "loss": float(row["loss"])} for row in log_history if "loss" in row]


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence the progress bars of ``datasets`` (``SFTTrainer`` maps the dataset several times)."""
    from datasets.utils import logging as ds_logging

    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            ds_logging.enable_progress_bar()


def cpu_trainer_args(seed: int) -> dict[str, Any]:
    """The Trainer arguments every sandbox stage shares: seeded, fp32 on the CPU (bf16 matmul is
    hundreds of times slower on CPUs without it), no reporting, progress bars or dataloader workers."""
    return {
        "seed": seed,
        "data_seed": seed,
        "use_cpu": True,
        "bf16": False,
        "fp16": False,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def pickle_free_checkpoints() -> Any:
    """A Trainer callback that deletes the ``training_args.bin`` pickle from each checkpoint as soon
    as it is saved, so a run holds only safetensors and JSON (the harness never loads pickles)."""
    from transformers import TrainerCallback

    class DropPickledArgs(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (checkpoint / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)

    return DropPickledArgs()


def library_versions() -> dict[str, str]:
    import datasets
    import tokenizers
    import torch
    import transformers
    import trl

    return {m.__name__: str(m.__version__) for m in (torch, transformers, trl, tokenizers, datasets)}


def build_base_policy(out_dir: Path | str, world: World, config: BaseConfig | None = None) -> Path:
    """Build the base policy of ``world`` into ``out_dir`` and return ``out_dir``: a tokenizer
    (``build_tokenizer``), a random-init GPT-2 of ``config``'s size (the "tiny" preset when None)
    trained for ``config.sft_steps`` steps with TRL's ``SFTTrainer`` on the corpus' prompt-completion
    pairs (loss on completions only, ``<eos>`` appended, fp32 on the CPU, constant learning rate
    after a 5% warmup), saved with ``save_pretrained`` together with the tokenizer and ``sandbox.json``."""
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    config = BASE_PRESETS["tiny"] if config is None else config
    out = Path(out_dir)
    build_tokenizer(world, out, corpus_size=config.corpus_size, seed=config.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    rows = [asdict(example) for example in sft_examples(world, config)]
    with quiet_transformers(), quiet_datasets(), one_thread(), tempfile.TemporaryDirectory() as scratch:
        model = random_policy(config, tokenizer)
        args = SFTConfig(
            output_dir=scratch,
            max_steps=config.sft_steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant_with_warmup",
            warmup_steps=max(1, config.sft_steps // 20),
            logging_steps=max(1, config.sft_steps // 20),
            completion_only_loss=True,
            max_length=config.max_positions,
            activation_checkpointing=False,  # TRL turns it on by default; tiny models only lose time to it
            save_strategy="no",
            **cpu_trainer_args(config.seed),
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout
        trainer.train()
        model.eval()  # the trainer trained this very object in place (no wrapper on one CPU)
        model.save_pretrained(str(out))
    record = {
        "config": asdict(config),
        "world_seed": world.seed,
        "losses": training_losses(trainer.state.log_history),
        "versions": library_versions(),
    }
    (out / SANDBOX_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out


def read_sandbox_record(model_dir: Path | str) -> dict[str, Any]:
    """The ``sandbox.json`` that ``build_base_policy`` wrote into ``model_dir``."""
    path = Path(model_dir) / SANDBOX_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build the base policy with build_base_policy first")
    record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return record
