"""GRPO with TRL's ``GRPOTrainer`` against the sandbox's proxy reward model, with a KL penalty.

Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", section 4.1) drops PPO's
value model: for each prompt q it samples a group of G responses o_1..o_G from the current
policy, scores them with the reward model (r_1..r_G), and gives every token of o_i the advantage

    Â_i = (r_i − mean(r_1..r_G)) / (std(r_1..r_G) + 1e-4)

(TRL's ``scale_rewards="group"``). The loss keeps PPO's clipped ratio and adds the KL to the
reference policy as a per-token penalty, estimated with k3 (Schulman 2020):

    L(θ) = −1/N Σ_i Σ_t [min(ρ_t Â_i, clip(ρ_t, 1 − ε, 1 + ε) Â_i) − β · D_t],
    ρ_t = π_θ(o_t | q, o_<t) / π_old(o_t | q, o_<t),
    D_t = π_ref(o_t | ·) / π_θ(o_t | ·) − log(π_ref(o_t | ·) / π_θ(o_t | ·)) − 1  (≥ 0).

N is the number of completion tokens in the batch (TRL's default ``loss_type="dapo"``, DAPO: Yu
et al. 2025). One gradient step per generation batch (μ = 1) keeps ρ_t = 1, so the clip never
binds and the update is a group-baselined policy gradient with the KL term (TRL multiplies D_t by
ρ_t, ``use_bias_correction_kl``: 1 in value, it makes the term's gradient that of the reverse KL,
as in DeepSeek-V3.2). β > 0 is required
here: it is what makes TRL load the reference model and log ``kl`` (the batch's mean D_t per
token), which the harness reads; a small β lets the policy drift far from the reference, which is
what makes it over-optimize the proxy.

The reward is the proxy scored exactly as the harness's scorer scores a sample
(``ProxyReward``): TRL decodes each completion with ``skip_special_tokens=True``, which drops
``<eos>`` and padding, as the harness's sampler does with its response, and the word-level
tokenizer's decoder joins words with single spaces and never starts with one, so the text the
proxy sees is ``join_prompt_response(prompt, completion)``, the harness's input. Training prompts
are ``prompts(world, n_prompts, seed=seed + 100)``, apart from the evaluation prompts; prompts are
plain text and the tokenizer adds no special token, as in the base policy's SFT data.

The run directory holds ``checkpoint-N/`` every ``save_steps`` optimizer steps, as the Trainer
writes them with ``save_only_model``: ``model.safetensors``, ``config.json``,
``generation_config.json``, the tokenizer and ``trainer_state.json`` whose ``log_history`` has
TRL's GRPO metrics every ``logging_steps`` (``kl``, ``reward``, ``reward_std``,
``rewards/proxy/mean``, ``completions/mean_length``, ``entropy``, ...). The Trainer's pickled
``training_args.bin`` is removed as each checkpoint is written. ``save_steps`` divides ``steps``, so
the last checkpoint is the final policy; no model is saved at the run's root (the harness would
count it as one more checkpoint, "final", of the same step). TRL's model card ``README.md`` at the
root tags the run ``grpo``. ``run.json`` records the config, the seconds taken, the last log entry
and the library versions.

Determinism: seeded, fp32, dropout off, one CPU thread; the same config, base policy and proxy
give the same checkpoints on the same machine and library versions.

Measured on a 2-core CPU (loading, scoring and saving included; the first call in a process also
spends about 8 s importing TRL): the ``tiny`` preset (20 steps of 16 completions) in about 5 s; the
``demo`` preset (80 steps of 32 completions) in 60 to 75 s.

The demo preset's β = 0.02 is small enough for the run to over-optimize. In ``rlhf-eval demo``
(64 prompts, 2 samples each, 48 new tokens) the proxy rises from −0.46 (base policy) to 1.70,
while gold goes 0.78 (base), 0.88 (checkpoint-10), 0.37 (checkpoint-20) and then recovers to 1.73
at checkpoint-80, as the run's KL to the reference first grows to 29 nats (checkpoint-40) and
then shrinks to 15. The policy learns what this proxy
rewards and gold penalizes (longer answers, "first ... second ... third" enumerations, repeated
and off-topic facts; 4-gram repetition goes from 0.03 to 0.15). A larger β keeps the policy
closer to the reference and gains less proxy reward.

>>> GRPO_PRESETS["tiny"].beta > 0, GRPO_PRESETS["demo"].steps % GRPO_PRESETS["demo"].save_steps
(True, 0)
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rlhf_eval.sandbox.base import cpu_trainer_args, library_versions, pickle_free_checkpoints, quiet_datasets
from rlhf_eval.sandbox.proxy import ProxyReward
from rlhf_eval.sandbox.world import World, prompts
from rlhf_eval.tiny.training import one_thread, quiet_transformers

#: Training prompts are drawn with this offset from the run's seed, apart from evaluation prompts.
PROMPT_SEED_OFFSET = 100
RUN_FILE = "run.json"
#: The name TRL gives the proxy's reward in its metrics: ``rewards/proxy/mean``.
#: The Trainer pickles its arguments into every checkpoint; the run keeps no pickle.
#: TRL's token-level GRPO losses: they differ in what the summed token losses are divided by
#: (each sequence's length then the batch, the batch's tokens, a constant, the local batch's tokens).
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")


@dataclass(frozen=True)
class GRPORunConfig:
    """How to build a GRPO run; names follow TRL's ``GRPOConfig`` where they exist.

    Each optimizer step samples ``batch_size`` completions: ``batch_size // num_generations``
    prompts, ``num_generations`` completions each (the group G)."""

    seed: int = 0
    n_prompts: int = 64
    steps: int = 20
    num_generations: int = 4
    batch_size: int = 16
    learning_rate: float = 1e-3
    beta: float = 0.04
    max_completion_length: int = 48
    temperature: float = 1.0
    save_steps: int = 4
    logging_steps: int = 1
    loss_type: str = "dapo"

    def __post_init__(self) -> None:
        for name in ("n_prompts", "steps", "batch_size", "max_completion_length", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(
                f"beta={self.beta}: the KL coefficient must be a finite number > 0; with beta=0 TRL loads no "
                "reference model and logs no kl, so the run has no KL penalty to study"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r}: unknown; use one of {', '.join(LOSS_TYPES)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations}: a group needs at least 2 completions")
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of num_generations={self.num_generations} "
                "(every prompt's group is in one batch)"
            )
        for name in ("learning_rate", "temperature"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={value}: must be a finite number > 0")
        if not 1 <= self.save_steps <= self.steps or self.steps % self.save_steps:
            raise ValueError(
                f"save_steps={self.save_steps}: use a divisor of steps ({self.steps}), so the last checkpoint "
                "is the final policy"
            )


#: "tiny" for tests; "demo" for the demo (see the module docstring for times).
GRPO_PRESETS: dict[str, GRPORunConfig] = {
    "tiny": GRPORunConfig(),
    "demo": GRPORunConfig(n_prompts=256, steps=80, batch_size=32, learning_rate=5e-4, beta=0.02, save_steps=10),
}


def training_prompts(world: World, config: GRPORunConfig) -> list[str]:
    """The run's training prompts: ``prompts(world, n_prompts, seed=seed + PROMPT_SEED_OFFSET)``."""
    return prompts(world, config.n_prompts, seed=config.seed + PROMPT_SEED_OFFSET)


def build_grpo_run(
    out_dir: Path | str,
    base_dir: Path | str,
    proxy_dir: Path | str,
    world: World,
    config: GRPORunConfig | None = None,
) -> Path:
    """Train a GRPO run from the base policy in ``base_dir`` against the proxy in ``proxy_dir`` and
    write its ``checkpoint-N/`` dirs, model card and ``run.json`` into ``out_dir`` (see the module
    docstring); returns ``out_dir``."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    config = GRPO_PRESETS["tiny"] if config is None else config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(base_dir).resolve()
    started = time.perf_counter()

    set_seed(config.seed)
    rows = [{"prompt": text} for text in training_prompts(world, config)]
    with quiet_transformers(), quiet_datasets(), one_thread():
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        model = AutoModelForCausalLM.from_pretrained(str(base), use_safetensors=True)
        args = GRPOConfig(
            output_dir=str(out),
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            top_p=1.0,
            top_k=0,
            learning_rate=config.learning_rate,
            lr_scheduler_type="constant",
            beta=config.beta,
            loss_type=config.loss_type,
            disable_dropout=True,  # the policy's and the reference's log-probs must be the same function at step 0
            logging_steps=config.logging_steps,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_only_model=True,
            activation_checkpointing=False,
            **cpu_trainer_args(config.seed),
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=ProxyReward(proxy_dir),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[pickle_free_checkpoints()],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    logged = [row for row in trainer.state.log_history if "kl" in row]
    record = {
        "method": "grpo",
        "config": asdict(config),
        "seconds": round(time.perf_counter() - started, 2),
        "last_log": logged[-1] if logged else {},
        "versions": library_versions(),
    }
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
