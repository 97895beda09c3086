"""Tiny offline models for tests: word-level tokenizers, random-init causal LMs and reward models,
LoRA adapters, and real Trainer runs (the demo's world is ``rlhf_eval.sandbox``).

Every builder writes a Hugging Face-format directory (safetensors unless the point is a pickle)
and returns its path, so the harness reads these exactly as it reads downloaded checkpoints.
Nothing here touches the network. Builders run fp32 on the CPU and take well under a second
each at the default sizes (hidden size 16, 2 layers).

- ``models``: tokenizer, causal LM, reward model, LoRA adapter, value-head and pickle variants;
- ``training``: plain-torch fine-tuning, Bradley-Terry reward training, ``transformers.Trainer`` runs.
"""

from rlhf_eval.tiny.models import (
    add_value_head,
    build_causal_lm,
    build_lora_adapter,
    build_reward_model,
    build_word_tokenizer,
    save_pickle_only,
)
from rlhf_eval.tiny.training import build_trainer_run, finetune_causal_lm

__all__ = [
    "add_value_head",
    "build_causal_lm",
    "build_lora_adapter",
    "build_reward_model",
    "build_trainer_run",
    "build_word_tokenizer",
    "finetune_causal_lm",
    "save_pickle_only",
]
