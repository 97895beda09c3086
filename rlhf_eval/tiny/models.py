"""Builders of tiny Hugging Face model directories: a word-level tokenizer, random-init causal
LMs and reward models (GPT-2 or Llama), a LoRA adapter, and two variants the harness must
handle: a policy saved with value-head tensors, and one saved only as a pickle.

Every builder writes ``out_dir`` and returns it as a Path; weights are safetensors unless the
point is the pickle. Special tokens are ``<pad>`` (id 0), ``<eos>`` (1) and ``<unk>`` (2); the
tokenizer has no BOS token, so models use EOS as BOS, as GPT-2 does.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from rlhf_eval.tiny.training import (
    load_causal_lm_and_tokenizer,
    quiet_transformers,
    save_model_and_tokenizer,
    train_bradley_terry,
)

Arch = Literal["gpt2", "llama"]
SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
#: One token under the Whitespace pre-tokenizer: a run of word characters or of punctuation.
ONE_TOKEN = re.compile(r"\w+|[^\w\s]+")
#: Modules LoRA adapts per architecture (the attention projections).
LORA_TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}


def build_word_tokenizer(
    out_dir: Path | str,
    words: Sequence[str],
    *,
    chat_template: str | None = None,
    model_max_length: int = 256,
) -> Path:
    """A word-level tokenizer: ``<pad>`` 0, ``<eos>`` 1, ``<unk>`` 2, then ``words`` in order
    (repeats dropped). Text is split on whitespace and punctuation (the ``Whitespace``
    pre-tokenizer); decoding joins tokens with spaces. Five words give a vocabulary of 8."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        if not ONE_TOKEN.fullmatch(word):
            raise ValueError(f"{word!r}: not one token under a whitespace/punctuation split; split it into words")
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out


def model_config(
    arch: Arch,
    tokenizer: Any,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    max_positions: int,
    **extra: Any,
) -> Any:
    """A GPT-2 or Llama config sized to ``tokenizer``, with its pad, EOS and BOS (= EOS) ids."""
    from transformers import GPT2Config, LlamaConfig

    eos = int(tokenizer.eos_token_id)
    ids: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "bos_token_id": eos if tokenizer.bos_token_id is None else int(tokenizer.bos_token_id),
        "eos_token_id": eos,
        "pad_token_id": int(tokenizer.pad_token_id),
    }
    if arch == "gpt2":
        return GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_positions,
            **ids,
            **extra,
        )
    if arch == "llama":
        return LlamaConfig(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_positions,
            **ids,
            **extra,
        )
    raise ValueError(f"arch={arch!r}: use 'gpt2' or 'llama'")


def build_causal_lm(
    out_dir: Path | str,
    tokenizer_dir: Path | str,
    *,
    arch: Arch = "gpt2",
    hidden_size: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    seed: int = 0,
    max_positions: int = 256,
) -> Path:
    """A random-init ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` (seeded) over the tokenizer in
    ``tokenizer_dir``, saved with that tokenizer; pad/EOS/BOS ids in config and generation config."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = model_config(
        arch,
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        max_positions=max_positions,
    )
    torch.manual_seed(seed)
    model = (GPT2LMHeadModel if arch == "gpt2" else LlamaForCausalLM)(config)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, name, getattr(config, name))
    return save_model_and_tokenizer(model.eval(), tokenizer, Path(out_dir))


def build_reward_model(
    out_dir: Path | str,
    tokenizer_dir: Path | str,
    *,
    arch: Arch = "gpt2",
    seed: int = 0,
    num_labels: int = 1,
    id2label: Mapping[int, str] | None = None,
    train_pairs: Sequence[tuple[str, str]] | None = None,
    steps: int = 0,
    lr: float = 1e-2,
    hidden_size: int = 16,
    num_layers: int = 2,
    num_heads: int = 2,
    max_positions: int = 256,
) -> Path:
    """A reward model (``GPT2ForSequenceClassification`` / ``LlamaForSequenceClassification``)
    with ``num_labels`` outputs and ``pad_token_id`` set, so it scores the last real token.

    With ``train_pairs`` of (chosen, rejected) texts and ``steps`` > 0 it is trained with the
    Bradley-Terry loss (``training.train_bradley_terry``) to score the chosen side higher."""
    import torch
    from transformers import AutoTokenizer, GPT2ForSequenceClassification, LlamaForSequenceClassification

    labels = {int(k): str(v) for k, v in (id2label or {}).items()}
    if labels and sorted(labels) != list(range(num_labels)):
        raise ValueError(f"id2label {labels} does not name labels 0..{num_labels - 1}; pass num_labels={len(labels)}")
    if train_pairs and steps > 0 and num_labels != 1:
        raise ValueError("Bradley-Terry training needs num_labels=1 (one scalar reward)")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    extra: dict[str, Any] = {"num_labels": num_labels}
    if labels:
        extra.update(id2label=labels, label2id={v: k for k, v in labels.items()})
    config = model_config(
        arch,
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        max_positions=max_positions,
        **extra,
    )
    torch.manual_seed(seed)
    model = (GPT2ForSequenceClassification if arch == "gpt2" else LlamaForSequenceClassification)(config)
    if train_pairs and steps > 0:
        train_bradley_terry(model, tokenizer, train_pairs, steps=steps, lr=lr, seed=seed)
    return save_model_and_tokenizer(model.eval(), tokenizer, Path(out_dir))


def build_lora_adapter(base_dir: Path | str, out_dir: Path | str, *, r: int = 4, seed: int = 0) -> Path:
    """A PEFT LoRA adapter on the attention projections of the model in ``base_dir`` (GPT-2
    ``c_attn``, Llama ``q_proj``/``v_proj``), with random A and B (``init_lora_weights=False``) so
    that it changes the outputs. Saves adapter_config.json (``base_model_name_or_path`` = the
    absolute base path), adapter_model.safetensors, PEFT's README.md and the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = Path(base_dir).resolve()
    model, tokenizer = load_causal_lm_and_tokenizer(base)
    model_type = model.config.model_type
    if model_type not in LORA_TARGETS:
        raise ValueError(f"{base}: no LoRA targets known for model_type {model_type!r}; use gpt2 or llama")
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS[model_type],
        fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        peft_model.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
    return out


def add_value_head(model_dir: Path | str, out_dir: Path | str, *, seed: int = 0) -> Path:
    """A copy of ``model_dir`` whose safetensors file also holds ``v_head.summary.weight``
    ([1, hidden]) and ``v_head.summary.bias`` ([1]), as older TRL
    ``AutoModelForCausalLMWithValueHead`` saved them next to the policy's weights."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out = Path(out_dir)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    files = sorted(out.glob("*.safetensors"))
    if len(files) != 1:
        raise ValueError(f"{model_dir}: expected one safetensors file, found {len(files)}; save the model unsharded")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    hidden = int(config.get("n_embd") or config["hidden_size"])
    with safe_open(str(files[0]), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(files[0]))
    generator = torch.Generator().manual_seed(seed)
    tensors["v_head.summary.weight"] = torch.randn(1, hidden, generator=generator) * 0.02
    tensors["v_head.summary.bias"] = torch.zeros(1)
    save_file(tensors, str(files[0]), metadata=metadata)
    return out


def save_pickle_only(model_dir: Path | str, out_dir: Path | str) -> Path:
    """The model of ``model_dir`` with its weights only as a pickle (``pytorch_model.bin``, no
    safetensors), plus config, generation config and tokenizer. Written with ``torch.save``:
    transformers 5's ``save_pretrained`` writes safetensors whatever ``safe_serialization`` says."""
    import torch

    model, tokenizer = load_causal_lm_and_tokenizer(Path(model_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(out))
    model.generation_config.save_pretrained(str(out))
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    tokenizer.save_pretrained(str(out))
    return out
