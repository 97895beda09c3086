"""The tensor-level pieces of PPO for language models: KL-penalized rewards, GAE, whitening, clipped losses.

Notation: a batch of B responses, right-padded to T tokens; ``mask[b, t]`` is true on response
token t of row b. π is the policy being trained, π_old the policy that sampled the batch, π_ref the
frozen reference, V the value head. The pieces follow InstructGPT (Ouyang et al. 2022), Ziegler et
al. 2019 ("Fine-Tuning Language Models from Human Preferences") and TRL's original ``PPOTrainer``:

1. ``kl_penalized_rewards``: per-token reward −β·(log π − log π_ref), plus the sequence score at
   the last response token;
2. ``gae``: advantages and value targets from those rewards and the value head;
3. ``masked_whiten``: advantages normalized over the valid tokens of the batch;
4. ``clipped_policy_loss`` and ``clipped_value_loss``: the PPO-clip objectives (Schulman et al. 2017).

Every function is pure and batched: no loop over rows, padded positions never change a result
(they are selected away with ``torch.where``, so even −inf or nan there does not leak), and masks
may be bool or 0/1 tensors. An all-false mask has no mean: ``masked_mean`` then returns nan.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PolicyLossStats",
    "clipped_policy_loss",
    "clipped_value_loss",
    "gae",
    "kl_penalized_rewards",
    "masked_mean",
    "masked_whiten",
]


def _check_shapes(mask: Tensor, **tensors: Tensor) -> Tensor:
    """Raise unless every tensor has the mask's shape; return the mask as bool."""
    for name, tensor in tensors.items():
        if tensor.shape != mask.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but mask has {tuple(mask.shape)}; "
                "pass per-token tensors of the same (batch, tokens) shape as the mask"
            )
    return mask.bool()


def _zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` on valid positions, 0 elsewhere (also where ``x`` is inf or nan)."""
    return torch.where(mask, x, torch.zeros_like(x))


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is true: Σ m·x / Σ m.

    Over all positions by default (a 0-dim tensor), or along ``dim``. An all-false mask (or
    row, with ``dim``) gives nan, as the mean of an empty tensor does.

    >>> x = torch.tensor([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]])
    >>> mask = torch.tensor([[True, True, False], [True, False, False]])
    >>> float(masked_mean(x, mask))  # (1 + 2 + 3) / 3
    2.0
    >>> masked_mean(x, mask, dim=1).tolist()  # rows: (1 + 2) / 2, 3 / 1
    [1.5, 3.0]
    """
    mask = _check_shapes(mask, x=x)
    total = _zero_padding(x, mask).sum() if dim is None else _zero_padding(x, mask).sum(dim=dim)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return total / count.to(x.dtype)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalize ``x`` to mean 0 and variance 1 over its valid positions: (x − μ) / √(σ² + eps).

    μ and σ² = mean((x − μ)²) (population variance) are taken over the positions where ``mask``
    is true, across the whole batch. With ``shift_mean=False`` the mean is added back, so only
    the scale changes (TRL whitens rewards this way). Padded positions are 0 in the output. One
    valid position has σ² = 0 and whitens to 0 (or to itself without the shift).

    >>> x = torch.tensor([[1.0, 3.0, 100.0]])
    >>> mask = torch.tensor([[True, True, False]])
    >>> [round(v, 4) for v in masked_whiten(x, mask)[0].tolist()]  # μ = 2, σ² = 1
    [-1.0, 1.0, 0.0]
    >>> [round(v, 4) for v in masked_whiten(x, mask, shift_mean=False)[0].tolist()]
    [1.0, 3.0, 0.0]
    """
    mask = _check_shapes(mask, x=x)
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean).square(), mask)
    whitened = (x - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _zero_padding(whitened, mask)


def kl_penalized_rewards(score: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token PPO rewards: r_t = −β·(log π(y_t) − log π_ref(y_t)), plus the score at the last token.

    The sequence-level reward-model ``score`` (B,) is added at the last valid position of each
    row; every other response token carries only the KL penalty, which is the k1 estimate of
    KL(π ‖ π_ref) scaled by β (Ziegler et al. 2019, eq. 2; InstructGPT; TRL ``compute_rewards``).
    Padded positions are 0. Rows may have different lengths; each needs at least one valid token.
    Rewards are constants for PPO: compute them under ``torch.no_grad()``.

    >>> score = torch.tensor([1.0, 2.0])
    >>> logprobs = torch.tensor([[-1.0, -2.0], [-1.0, -5.0]])
    >>> ref_logprobs = torch.tensor([[-2.0, -2.0], [-3.0, -5.0]])
    >>> mask = torch.tensor([[True, True], [True, False]])
    >>> # row 0: −0.5·(−1 + 2) = −0.5, then 0 + score 1; row 1: −0.5·(−1 + 3) + score 2 = 1, padding 0
    >>> kl_penalized_rewards(score, logprobs, ref_logprobs, mask, beta=0.5).tolist()
    [[-0.5, 1.0], [1.0, 0.0]]
    """
    mask = _check_shapes(mask, logprobs=logprobs, ref_logprobs=ref_logprobs)
    if score.shape != mask.shape[:1]:
        raise ValueError(f"score has shape {tuple(score.shape)}; pass one score per row, shape ({mask.shape[0]},)")
    if not bool(mask.any(dim=1).all()):
        raise ValueError("a row of mask has no valid token; every response needs at least one token to carry its score")
    penalty = _zero_padding(-beta * (logprobs - ref_logprobs), mask)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).amax(dim=1, keepdim=True)
    is_last = positions == last
    return penalty + torch.where(is_last, score.to(penalty.dtype).unsqueeze(1), torch.zeros_like(penalty))


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016): ``(advantages, returns)``, both (B, T).

    δ_t = r_t + γ·V_{t+1} − V_t, with V = 0 after the last valid token of a row;
    A_t = δ_t + γλ·A_{t+1}; returns R_t = A_t + V_t (the value head's regression target).
    With γ = λ = 1, A_t is the reward-to-go Σ_{k≥t} r_k minus V_t; with λ = 0 it is δ_t.
    Padded positions are 0 in both outputs. The outputs are detached: they are targets,
    not functions of the parameters being trained. One loop over T, vectorized over rows.

    >>> rewards = torch.tensor([[0.0, 1.0]])
    >>> values = torch.tensor([[1.0, 2.0]])
    >>> mask = torch.tensor([[True, True]])
    >>> # δ_1 = 1 + 0 − 2 = −1; δ_0 = 0 + 0.5·2 − 1 = 0; A_1 = −1; A_0 = 0 + 0.25·(−1)
    >>> advantages, returns = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    >>> advantages.tolist(), returns.tolist()
    ([[-0.25, -1.0]], [[0.75, 1.0]])
    """
    mask = _check_shapes(mask, rewards=rewards, values=values)
    rewards = _zero_padding(rewards.detach(), mask)
    values = _zero_padding(values.detach(), mask)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages_reversed = []
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = _zero_padding(delta + gamma * lam * next_advantage, mask[:, t])
        advantages_reversed.append(advantage)
        next_value, next_advantage = values[:, t], advantage
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = _zero_padding(advantages + values, mask)
    return advantages, returns


@dataclass(frozen=True)
class PolicyLossStats:
    """The PPO-clip policy loss and its diagnostics, all 0-dim tensors.

    ``loss`` carries the gradient; ``clip_fraction`` (share of valid tokens where the clipped
    term is the active one, so the token gives no gradient) and ``approx_kl`` (mean of
    ½·(log ρ)², the k2 estimate of KL(π_old ‖ π)) are detached.
    """

    loss: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> PolicyLossStats:
    """PPO-clip surrogate (Schulman et al. 2017, eq. 7), as a loss to minimize, per token.

    ρ_t = exp(log π(y_t) − log π_old(y_t));
    L = −mean_t min(ρ_t·A_t, clip(ρ_t, 1 − ε, 1 + ε)·A_t), the mean over valid tokens.
    ``old_logprobs`` and ``advantages`` are constants (detach them); the gradient flows into
    ``logprobs``. A token counts as clipped when clip(ρ)·A < ρ·A strictly (TRL's definition).

    >>> # ρ = 1.5, A = 1: min(1.5, 1.2) = 1.2, clipped; ρ = 1, A = −1: −1, unclipped
    >>> logprobs = torch.log(torch.tensor([[1.5, 1.0]]))
    >>> stats = clipped_policy_loss(logprobs, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]),
    ...                             torch.ones(1, 2, dtype=torch.bool), clip_range=0.2)
    >>> round(float(stats.loss), 4), float(stats.clip_fraction)  # −(1.2 − 1) / 2
    (-0.1, 0.5)
    """
    mask = _check_shapes(mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    log_ratio = _zero_padding(logprobs - old_logprobs, mask)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(ratio.dtype), mask)
        approx_kl = masked_mean(0.5 * log_ratio.square(), mask)
    return PolicyLossStats(loss=loss, clip_fraction=clip_fraction, approx_kl=approx_kl)


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range_value: float
) -> Tensor:
    """Clipped value loss (Schulman et al. 2017 baselines; TRL ``PPOTrainer``): a 0-dim tensor.

    V_clip = V_old + clip(V − V_old, −ε, ε);
    L = ½·mean_t max((V_t − R_t)², (V_clip,t − R_t)²), the mean over valid tokens.
    Once V has moved more than ε from V_old in the direction that raises the error, the clipped
    term wins and the token gives no gradient. ``old_values`` and ``returns`` are constants.

    >>> # V = 2.5, V_old = 1, R = 3: max(0.25, (1.5 − 3)² = 2.25) = 2.25; ½·2.25
    >>> float(clipped_value_loss(torch.tensor([[2.5]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]),
    ...                          torch.tensor([[True]]), clip_range_value=0.5))
    1.125
    """
    mask = _check_shapes(mask, values=values, old_values=old_values, returns=returns)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    squared_error = torch.maximum((values - returns).square(), (clipped_values - returns).square())
    return 0.5 * masked_mean(squared_error, mask)
