"""A compact PPO for language models that optimizes the sandbox's proxy reward model.

TRL no longer ships a ``PPOTrainer``, and PPO is the method in which over-optimization was first
measured (Gao et al. 2022), so the sandbox carries its own, readable one. Each iteration:

1. **Rollout.** ``batch_size`` training prompts are drawn at random; the policy samples a response
   to each (temperature 1, no top-k/top-p, ``max_new_tokens`` at most, ending at ``<eos>``).
2. **Score.** The proxy reward model scores every (prompt, response) exactly as the harness's
   scorer does (``rlhf_eval.rewards``): that is the score being optimized.
3. **Rewards.** Per response token, r_t = −β·(log π_old(y_t) − log π_ref(y_t)), plus the score at
   the last token (InstructGPT; ``ppo_math.kl_penalized_rewards``). β is fixed: a small β lets
   the policy drift far from the reference, which is what makes it over-optimize.
4. **Advantages.** The value head V (a linear layer on the last hidden state, as in old TRL's
   ``AutoModelForCausalLMWithValueHead``) gives V_t; GAE (γ, λ) gives advantages and returns,
   advantages are whitened over the batch's tokens (``ppo_math.gae``, ``masked_whiten``).
5. **Update.** ``ppo_epochs`` passes over shuffled minibatches minimize the clipped policy loss
   plus ``vf_coef`` × the clipped value loss (Schulman et al. 2017), with Adam and gradient
   clipping at 1.

Every ``save_every`` iterations, and at the iterations in ``save_at``, the policy is saved as
``out_dir/checkpoint-N/``, where N is the iteration: ``model.safetensors`` holding the policy's
weights and the value head as ``v_head.summary.weight`` / ``v_head.summary.bias`` (the layout
old TRL PPO checkpoints have), ``config.json``, the tokenizer, and ``trainer_state.json`` whose
``log_history`` carries one entry per iteration with old TRL's metric names:

- ``objective/kl``: mean over the batch of Σ_t (log π_old − log π_ref), the sampled sequence KL (k1);
- ``objective/scores``: mean proxy score; ``objective/rlhf_reward``: mean of score − β·KL;
- ``objective/non_score_reward``: mean of −β·KL; ``objective/entropy``: mean of −Σ_t log π_old;
- ``policy/approxkl_avg``, ``policy/clipfrac_avg``, ``loss/policy_avg``, ``loss/value_avg``,
  ``val/num_eos_tokens``, ``lr``, ``episode``.

Determinism: seeded, fp32, one CPU thread; the same config, base policy and proxy give the same
checkpoints on the same machine and library versions.

Measured on a 2-core CPU: the ``tiny`` preset (30 iterations of 16 rollouts) trains in about
7 s; the ``demo`` preset (48 iterations of 32 rollouts) in about 70 s.

>>> PPO_PRESETS["tiny"].beta > 0
True
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf_eval.sandbox.base import library_versions
from rlhf_eval.sandbox.proxy import ProxyReward
from rlhf_eval.sandbox.world import World, prompts
from rlhf_eval.tiny.training import one_thread, quiet_transformers

if TYPE_CHECKING:
    import torch

#: Training prompts are drawn with this offset from the run's seed, apart from evaluation prompts.
PROMPT_SEED_OFFSET = 300
TRAINER_STATE = "trainer_state.json"
RUN_FILE = "run.json"
VALUE_HEAD_WEIGHT = "v_head.summary.weight"
VALUE_HEAD_BIAS = "v_head.summary.bias"


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; names follow old TRL's ``PPOConfig`` where they exist."""

    seed: int = 0
    n_prompts: int = 256
    iterations: int = 30
    batch_size: int = 16
    minibatch_size: int = 8
    ppo_epochs: int = 2
    learning_rate: float = 1e-3
    beta: float = 0.01
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    max_new_tokens: int = 48
    save_every: int = 5
    #: Iterations saved besides every ``save_every``-th: denser early checkpoints resolve a peak
    #: that comes early. Saving reads no random state, so the run trains the same either way.
    save_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ValueError(f"beta={self.beta}: the KL coefficient must be >= 0")
        if min(self.n_prompts, self.iterations, self.batch_size, self.minibatch_size, self.ppo_epochs) < 1:
            raise ValueError(f"{self}: n_prompts, iterations, batch_size, minibatch_size and ppo_epochs must be >= 1")
        if self.batch_size % self.minibatch_size:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of minibatch_size={self.minibatch_size}")
        if not 1 <= self.save_every <= self.iterations:
            raise ValueError(f"save_every={self.save_every}: use 1..iterations ({self.iterations})")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma={self.gamma}, lam={self.lam}: use 0 < gamma <= 1 and 0 <= lam <= 1")
        if any(not 1 <= i <= self.iterations for i in self.save_at):
            raise ValueError(f"save_at={self.save_at}: iterations are 1..{self.iterations}")

    def saves(self, iteration: int) -> bool:
        """Whether ``checkpoint-<iteration>`` is written."""
        return iteration % self.save_every == 0 or iteration in self.save_at


#: "tiny" for tests (about 15 s); "demo": 64 iterations of 32 rollouts (about 90 s), a checkpoint
#: every 8 and at 2, 4, 6, 12 and 20, where a policy that drifts fast has its peak.
PPO_PRESETS: dict[str, PPOConfig] = {
    "tiny": PPOConfig(),
    "demo": PPOConfig(
        iterations=64, batch_size=32, minibatch_size=16, learning_rate=1e-4, save_every=8, save_at=(2, 4, 6, 12, 20)
    ),
}


def policy_with_value_head(model: Any) -> Any:
    """``model`` (a causal LM) with a value head ``model.v_head.summary``: Linear(hidden, 1), small
    random init (seeded by the caller), the head old TRL put on PPO policies."""
    import torch

    hidden = int(model.config.hidden_size)
    head = torch.nn.Module()
    head.summary = torch.nn.Linear(hidden, 1)
    torch.nn.init.normal_(head.summary.weight, std=1.0 / (hidden + 1))
    torch.nn.init.zeros_(head.summary.bias)
    model.v_head = head
    return model


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them (a padded
    position after the last real token repeats its position; it is masked out anyway).

    >>> import torch
    >>> position_ids_of(torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])).tolist()
    [[0, 0, 1, 2], [0, 1, 2, 2]]
    """
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def response_mask(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True on each response token up to and including the first ``eos_id`` (later tokens are padding).

    >>> import torch
    >>> response_mask(torch.tensor([[5, 1, 7], [5, 6, 7]]), eos_id=1).tolist()
    [[True, True, False], [True, True, True]]
    """
    is_eos = (responses == eos_id).long()
    eos_before = is_eos.cumsum(dim=1) - is_eos
    return eos_before == 0


def token_logprobs_and_values(
    model: Any, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int, *, with_values: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(y_t | context) of every response token of ``sequences`` ([left-padded prompt | response]),
    and the value head's V_t at the position that predicts y_t when ``with_values``."""
    import torch

    out = model(
        input_ids=sequences,
        attention_mask=attention_mask,
        position_ids=position_ids_of(attention_mask),
        output_hidden_states=with_values,
    )
    logits = out.logits[:, prompt_width - 1 : -1].float()
    targets = sequences[:, prompt_width:]
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    if not with_values:
        return logprobs, None
    hidden = out.hidden_states[-1][:, prompt_width - 1 : -1]
    return logprobs, model.v_head.summary(hidden).squeeze(-1)


@dataclass(frozen=True)
class Rollout:
    """One iteration's batch: token tensors, the texts the proxy scored, and the per-token constants."""

    sequences: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    prompt_width: int
    prompts: list[str]
    responses: list[str]
    scores: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    ended: torch.Tensor


def rollout(
    policy: Any, ref: Any, tokenizer: Any, proxy: ProxyReward, batch_prompts: list[str], config: PPOConfig
) -> Rollout:
    """Sample a response to each prompt from ``policy`` and compute everything the update needs."""
    import torch

    eos_id, pad_id = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in batch_prompts]
    width = max(len(ids) for ids in encoded)
    prompt_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    for i, ids in enumerate(encoded):
        prompt_ids[i, width - len(ids) :] = torch.tensor(ids)
        prompt_mask[i, width - len(ids) :] = 1
    with torch.inference_mode():
        generated = policy.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=config.max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
        )
    responses_ids = generated[:, width:].clone()
    mask = response_mask(responses_ids, eos_id)
    ended = (responses_ids == eos_id).any(dim=1)
    responses_ids[~mask] = pad_id
    sequences = torch.cat([prompt_ids, responses_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, mask.long()], dim=1)
    texts = [
        tokenizer.decode([t for t in row.tolist() if t not in (eos_id, pad_id)], skip_special_tokens=True)
        for row in responses_ids
    ]
    scores = torch.tensor([0.0 if s is None else s for s in proxy(batch_prompts, texts)], dtype=torch.float32)
    with torch.no_grad():
        logprobs, values = token_logprobs_and_values(policy, sequences, attention_mask, width, with_values=True)
        ref_logprobs, _ = token_logprobs_and_values(ref, sequences, attention_mask, width, with_values=False)
    assert values is not None
    return Rollout(
        sequences, attention_mask, mask, width, batch_prompts, texts, scores, logprobs, ref_logprobs, values, ended
    )


def ppo_update(
    policy: Any, optimizer: Any, batch: Rollout, config: PPOConfig, rng: torch.Generator
) -> dict[str, float]:
    """``ppo_epochs`` passes of clipped policy + value updates over shuffled minibatches of ``batch``."""
    import torch

    from rlhf_eval.sandbox.ppo_math import (
        clipped_policy_loss,
        clipped_value_loss,
        gae,
        kl_penalized_rewards,
        masked_whiten,
    )

    rewards = kl_penalized_rewards(batch.scores, batch.logprobs, batch.ref_logprobs, batch.mask, config.beta)
    advantages, returns = gae(rewards, batch.values, batch.mask, config.gamma, config.lam)
    advantages = masked_whiten(advantages, batch.mask)
    totals = {"policy": 0.0, "value": 0.0, "approxkl": 0.0, "clipfrac": 0.0}
    updates = 0
    for _ in range(config.ppo_epochs):
        order = torch.randperm(config.batch_size, generator=rng)
        for start in range(0, config.batch_size, config.minibatch_size):
            idx = order[start : start + config.minibatch_size]
            logprobs, values = token_logprobs_and_values(
                policy, batch.sequences[idx], batch.attention_mask[idx], batch.prompt_width, with_values=True
            )
            assert values is not None
            mask = batch.mask[idx]
            stats = clipped_policy_loss(logprobs, batch.logprobs[idx], advantages[idx], mask, config.clip_range)
            value_loss = clipped_value_loss(values, batch.values[idx], returns[idx], mask, config.clip_range_value)
            loss = stats.loss + config.vf_coef * value_loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            totals["policy"] += float(stats.loss.detach())
            totals["value"] += float(value_loss.detach())
            totals["approxkl"] += float(stats.approx_kl)
            totals["clipfrac"] += float(stats.clip_fraction)
            updates += 1
    return {name: value / updates for name, value in totals.items()}


def iteration_log(batch: Rollout, update: dict[str, float], config: PPOConfig, iteration: int) -> dict[str, Any]:
    """One ``log_history`` entry with old TRL's PPO metric names (see the module docstring)."""

    mask = batch.mask.float()
    kl = ((batch.logprobs - batch.ref_logprobs) * mask).sum(dim=1)
    entropy = (-batch.logprobs * mask).sum(dim=1)
    non_score = -config.beta * kl
    return {
        "objective/kl": float(kl.mean()),
        "objective/entropy": float(entropy.mean()),
        "objective/non_score_reward": float(non_score.mean()),
        "objective/rlhf_reward": float((batch.scores + non_score).mean()),
        "objective/scores": float(batch.scores.mean()),
        "policy/approxkl_avg": update["approxkl"],
        "policy/clipfrac_avg": update["clipfrac"],
        "loss/policy_avg": update["policy"],
        "loss/value_avg": update["value"],
        "val/num_eos_tokens": int(batch.ended.sum()),
        "lr": config.learning_rate,
        "episode": iteration * config.batch_size,
        "epoch": iteration / config.iterations,
        "step": iteration,
    }


def save_checkpoint(
    policy: Any, tokenizer: Any, out: Path, log_history: list[dict[str, Any]], config: PPOConfig
) -> Path:
    """Write ``checkpoint-N/``: weights with the value head in one safetensors file, config,
    tokenizer and ``trainer_state.json``; written under a temporary name and renamed, so a reader
    never sees a half-written checkpoint."""
    import shutil

    from safetensors.torch import load_file, save_file

    step = int(log_history[-1]["step"])
    final = out / f"checkpoint-{step}"
    partial = out / f".checkpoint-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    v_head = policy.v_head
    del policy.v_head  # save the causal LM's own weights under its own names
    try:
        with quiet_transformers():
            policy.save_pretrained(str(partial))
    finally:
        policy.v_head = v_head
    weights = partial / "model.safetensors"
    tensors = load_file(str(weights))
    tensors[VALUE_HEAD_WEIGHT] = v_head.summary.weight.detach().clone()
    tensors[VALUE_HEAD_BIAS] = v_head.summary.bias.detach().clone()
    save_file(tensors, str(weights), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(partial))
    state = {
        "global_step": step,
        "max_steps": config.iterations,
        "epoch": step / config.iterations,
        "logging_steps": 1,
        "save_steps": config.save_every,
        "train_batch_size": config.batch_size,
        "log_history": log_history,
        "trial_name": None,
        "is_world_process_zero": True,
    }
    (partial / TRAINER_STATE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def build_ppo_run(
    out_dir: Path | str, base_dir: Path | str, proxy_dir: Path | str, world: World, config: PPOConfig | None = None
) -> Path:
    """Train a PPO run from the base policy in ``base_dir`` against the proxy in ``proxy_dir`` and
    write its ``checkpoint-N/`` dirs and ``run.json`` (config, seconds, last log, versions) into
    ``out_dir``; returns ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    config = PPO_PRESETS["tiny"] if config is None else config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    set_seed(config.seed)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        policy = AutoModelForCausalLM.from_pretrained(str(base_dir), use_safetensors=True)
        ref = AutoModelForCausalLM.from_pretrained(str(base_dir), use_safetensors=True).eval()
    policy = policy_with_value_head(policy)
    for parameter in ref.parameters():
        parameter.requires_grad_(False)
    proxy = ProxyReward(proxy_dir)
    pool = prompts(world, config.n_prompts, seed=config.seed + PROMPT_SEED_OFFSET)
    rng = random.Random(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    log_history: list[dict[str, Any]] = []
    with quiet_transformers(), one_thread():
        for iteration in range(1, config.iterations + 1):
            policy.eval()  # no dropout: the rollout's and the update's log-probs must be the same function
            batch = rollout(policy, ref, tokenizer, proxy, rng.sample(pool, config.batch_size), config)
            update = ppo_update(policy, optimizer, batch, config, generator)
            log_history.append(iteration_log(batch, update, config, iteration))
            if config.saves(iteration):
                save_checkpoint(policy, tokenizer, out, log_history, config)
    record = {
        "method": "ppo",
        "config": asdict(config),
        "seconds": round(time.perf_counter() - started, 2),
        "last_log": log_history[-1],
        "versions": library_versions(),
    }
    (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
