"""Tiny offline models for tests and the demo: word-level tokenizers, random-init causal LMs and
reward models, LoRA adapters, real Trainer runs, and the sandbox of the demo.

Every builder writes a Hugging Face-format directory (safetensors unless the point is a pickle)
and returns its path, so the harness reads these exactly as it reads downloaded checkpoints.
Nothing here touches the network. Builders run fp32 on the CPU and take well under a second
each at the default sizes (hidden size 16, 2 layers).

- ``models``: tokenizer, causal LM, reward model, LoRA adapter, value-head and pickle variants;
- ``training``: plain-torch fine-tuning, Bradley-Terry reward training, ``transformers.Trainer`` runs;
- ``gold``: the programmatic gold reward of the demo;
- ``demo``: the demo's corpus and checkpoints.
"""

from rlhf_eval.tiny.demo import DEMO_GOLD, DemoCheckpoints, DemoConfig, build_demo_checkpoints, demo_corpus
from rlhf_eval.tiny.gold import demo_gold_reward
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
    "DEMO_GOLD",
    "DemoCheckpoints",
    "DemoConfig",
    "add_value_head",
    "build_causal_lm",
    "build_demo_checkpoints",
    "build_lora_adapter",
    "build_reward_model",
    "build_trainer_run",
    "build_word_tokenizer",
    "demo_corpus",
    "demo_gold_reward",
    "finetune_causal_lm",
    "save_pickle_only",
]
