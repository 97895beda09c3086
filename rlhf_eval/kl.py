"""KL divergence of a checkpoint from the reference, per sample, in nats.

Notation (DESIGN.md): x prompt, y = y_1..y_T the sampled response, s_t = (x, y_<t),
π the sampling distribution of the checkpoint, π_ref the reference.
Per token, log r_t = log π_ref(y_t|s_t) − log π(y_t|s_t). Estimators (Schulman 2020,
"Approximating KL Divergence"), summed over the response's tokens up to and including EOS:

- k1 = −log r            unbiased, high variance, can be negative;
- k2 = ½ (log r)²         biased, low variance;
- k3 = (r − 1) − log r    unbiased, ≥ 0, variance can blow up where π_ref ≫ π; unbiased only
  when π_ref puts no mass outside π's support (it relies on E_π[r] = 1), so with top-k or
  top-p sampling it underestimates;
- full = Σ_t Σ_v π(v|s_t) (log π(v|s_t) − log π_ref(v|s_t))   the full-vocabulary
  ("Rao-Blackwellized", Amini et al. 2025) estimator: unbiased, ≥ 0, lowest variance.

All four are computed from one teacher-forced forward of each model over the *generated token
ids* (never detokenized and retokenized). π is the processed distribution actually sampled
(``sampling.processed_logprobs``); π_ref is the reference's raw distribution.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf_eval.attention import planless_attention
from rlhf_eval.batching import length_batches
from rlhf_eval.models import as_tensor
from rlhf_eval.sampling import SamplingParams, processed_logprobs

#: The per-sequence sums ``kl_from_logits`` returns: log π, log π_ref of the response, k1, k2, k3, full.
_SUMS = ("lp", "lq", "k1", "k2", "k3", "full")


@dataclass(frozen=True)
class KLItem:
    """What the KL stage needs of a sample: its key, prompt ids and response ids."""

    sample_id: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]


@dataclass(frozen=True)
class KLEstimate:
    """Sequence-level log-probs and KL estimates of one sample (nats)."""

    sample_id: str
    logp_policy: float
    logp_ref: float
    k1: float
    k2: float
    k3: float
    full: float
    n_tokens: int


def token_estimators(log_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token k1, k2, k3 from log r = log π_ref − log π (Schulman 2020).

    >>> k1, k2, k3 = token_estimators(torch.tensor([0.0, -1.0]))
    >>> [round(float(x), 4) for x in (*k1, *k2, *k3)]
    [-0.0, 1.0, 0.0, 0.5, 0.0, 0.3679]
    """
    k1 = -log_r
    k2 = 0.5 * log_r.square()
    k3 = torch.expm1(log_r) - log_r
    return k1, k2, k3


def full_vocab_kl(policy_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Σ_v π(v)(log π(v) − log π_ref(v)) over the last axis; tokens with π(v) = 0 add nothing.

    >>> p = torch.log(torch.tensor([[0.5, 0.5, 0.0]]))
    >>> q = torch.log(torch.tensor([[0.25, 0.25, 0.5]]))
    >>> round(float(full_vocab_kl(p, q)[0]), 6)  # ln 2
    0.693147
    """
    probs = policy_logprobs.exp()
    terms = probs * (policy_logprobs - ref_logprobs)
    return torch.where(probs > 0, terms, 0.0).sum(dim=-1)


def kl_from_logits(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    params: SamplingParams,
    *,
    chunk: int = 32,
) -> dict[str, torch.Tensor]:
    """Per-sequence sums of the estimators from logits aligned with the response tokens.

    ``policy_logits``/``ref_logits``: (B, T, V), position t predicting ``targets[:, t]``;
    ``mask``: (B, T) true on response tokens. Processed over T in chunks to bound memory; in each
    chunk only the masked positions go through the vocabulary-wide math (padding positions of
    short responses are skipped, not computed and zeroed), and their values are put back in
    place, so each sum adds the same numbers in the same order as a masked sum over the chunk.
    Sums stay on the logits' device until the end (one transfer, not one per chunk).
    """
    batch, width = targets.shape
    device = policy_logits.device
    accumulated = {name: torch.zeros(batch, dtype=torch.float64, device=device) for name in _SUMS}
    # masked positions ordered by position, then row: chunk k is a contiguous run of them
    cols, rows = mask.t().nonzero(as_tuple=True)
    ends = [0, *mask.sum(dim=0).cumsum(dim=0).tolist()]
    for start in range(0, width, chunk):
        stop = min(start + chunk, width)
        picked = slice(ends[start], ends[stop])
        if picked.start == picked.stop:
            continue
        row, col = rows[picked], cols[picked]
        logp = processed_logprobs(policy_logits[row, col], params)
        logq = torch.log_softmax(ref_logits[row, col].float(), dim=-1)
        target = targets[row, col].unsqueeze(-1)
        lp = logp.gather(-1, target).squeeze(-1)
        lq = logq.gather(-1, target).squeeze(-1)
        k1, k2, k3 = token_estimators(lq - lp)
        full = full_vocab_kl(logp, logq)
        for name, value in zip(_SUMS, (lp, lq, k1, k2, k3, full), strict=True):
            dense = torch.zeros((batch, stop - start), dtype=torch.float64, device=device)
            dense[row, col - start] = value.double()
            accumulated[name] += dense.sum(dim=-1)
    return {name: value.cpu() for name, value in accumulated.items()}


def _response_logits(model: Any, ids: torch.Tensor, mask: torch.Tensor, width: int) -> torch.Tensor:
    """Logits at the last ``width + 1`` positions, minus the final one: those that predict the
    last ``width`` tokens of each left-padded row."""
    accepted = inspect.signature(model.forward).parameters
    extra: dict[str, Any] = {"logits_to_keep": width + 1} if "logits_to_keep" in accepted else {}
    if "position_ids" in accepted:  # left padding shifts positions (ALiBi models take none)
        extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if "use_cache" in accepted:  # one forward, no decoding after it: a KV cache is only memory
        extra["use_cache"] = False
    logits = model(input_ids=ids, attention_mask=mask, **extra).logits
    return logits[:, -(width + 1) : -1, :]


@torch.inference_mode()
def estimate_kl(
    policy: Any, reference: Any, items: Sequence[KLItem], params: SamplingParams, pad_id: int
) -> list[KLEstimate]:
    """Teacher-forced forward of policy and reference on (prompt + response) ids; one batch."""
    sequences = [list(item.prompt_ids) + list(item.response_ids) for item in items]
    ids, mask = as_tensor(sequences, pad_id, left=True)
    lengths = torch.tensor([len(item.response_ids) for item in items])
    width = int(lengths.max())
    targets = ids[:, -width:]
    response_mask = torch.arange(width).unsqueeze(0) >= (width - lengths).unsqueeze(1)
    device = policy.device
    with planless_attention(device):
        policy_logits = _response_logits(policy, ids.to(device), mask.to(device), width)
        ref_logits = _response_logits(reference, ids.to(reference.device), mask.to(reference.device), width)
    sums = kl_from_logits(policy_logits, ref_logits.to(device), targets.to(device), response_mask.to(device), params)
    return [
        KLEstimate(
            item.sample_id,
            float(sums["lp"][i]),
            float(sums["lq"][i]),
            float(sums["k1"][i]),
            float(sums["k2"][i]),
            float(sums["k3"][i]),
            float(sums["full"][i]),
            len(item.response_ids),
        )
        for i, item in enumerate(items)
    ]


def plan_kl_batches(
    items: Sequence[KLItem], token_budget: int, vocab_size: int, logit_budget: int
) -> list[list[KLItem]]:
    """Length-sorted batches bounded by padded tokens, by the (B x (response + 1) x V) logits
    they hold and by their padding (``batching.length_batches``). Deterministic: the same items
    always give the same batches."""
    groups = length_batches(
        [len(item.prompt_ids) + len(item.response_ids) for item in items],
        token_budget,
        widths=[len(item.response_ids) + 1 for item in items],
        width_budget=logit_budget // vocab_size,  # rows x width <= B // V  <=>  rows x width x V <= B
    )
    return [[items[i] for i in group] for group in groups]
