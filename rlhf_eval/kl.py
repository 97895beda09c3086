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

All four are computed from teacher-forced forwards of each model over the *generated token
ids* (never detokenized and retokenized). π is the processed distribution actually sampled
(``sampling.processed_logprobs``); π_ref is the reference's raw distribution.

Samples of the same prompt share its forward. When a batch holds several samples of a prompt
(``samples_per_prompt`` > 1), each model runs every distinct prompt once, with a KV cache, and
then the responses on top of it, in chunks of similar response length (``length_batches``), each
chunk reading its prompts' cache rows: the prompt tokens are computed once per prompt instead of
once per sample. The logits are those of one forward over prompt + response up to float
rounding (tested against it).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf_eval.attention import planless_attention
from rlhf_eval.batching import distinct, length_batches, prefix_batches
from rlhf_eval.generate import continuation_forward, output_cache, prompt_forward, takes_cache
from rlhf_eval.models import as_tensor
from rlhf_eval.sampling import SamplingParams, processed_logprobs
from rlhf_eval.stages import KL_LOGIT_BUDGET

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
    policy: Any,
    reference: Any,
    items: Sequence[KLItem],
    params: SamplingParams,
    pad_id: int,
    *,
    token_budget: int = 16384,
    logit_budget: int = KL_LOGIT_BUDGET,
) -> list[KLEstimate]:
    """Teacher-forced forwards of policy and reference on (prompt + response) ids; one batch.
    Samples sharing a prompt share its forward (module docstring) when both models take a KV
    cache, their responses in chunks within ``token_budget`` and ``logit_budget``. Otherwise one
    forward per model over prompt + response, in ``length_groups`` within the same budgets (a
    batch of distinct prompts is one such group already: ``plan_kl_batches``)."""
    prompts, _ = distinct_prompts(items)
    shareable = len(prompts) < len(items) and all(item.response_ids for item in items)
    if shareable and takes_cache(policy) and takes_cache(reference):
        with planless_attention(policy.device):
            sums = shared_prompt_sums(policy, reference, items, params, pad_id, token_budget, logit_budget)
        return estimates_of(items, sums)
    groups = length_groups(items, token_budget, int(policy.config.vocab_size), logit_budget)
    if len(groups) == 1:
        return estimates_of(items, one_forward_sums(policy, reference, items, params, pad_id))
    accumulated = {name: torch.zeros(len(items), dtype=torch.float64) for name in _SUMS}
    for group in groups:
        sums = one_forward_sums(policy, reference, [items[i] for i in group], params, pad_id)
        for name in _SUMS:
            accumulated[name][group] = sums[name]
    return estimates_of(items, accumulated)


def one_forward_sums(
    policy: Any, reference: Any, items: Sequence[KLItem], params: SamplingParams, pad_id: int
) -> dict[str, torch.Tensor]:
    """The estimators' sums from one forward per model over the left-padded prompt + response."""
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
    return kl_from_logits(policy_logits, ref_logits.to(device), targets.to(device), response_mask.to(device), params)


def estimates_of(items: Sequence[KLItem], sums: dict[str, torch.Tensor]) -> list[KLEstimate]:
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


def distinct_prompts(items: Sequence[KLItem]) -> tuple[list[tuple[int, ...]], list[int]]:
    """The distinct prompt ids of ``items`` (first appearance first) and each item's index among them."""
    return distinct([item.prompt_ids for item in items])


#: A prompt forward's result: its KV cache, the last position's logits, the attention mask.
PromptCache = tuple[Any, torch.Tensor, torch.Tensor]


def _prompt_cache(model: Any, prompts: Sequence[tuple[int, ...]], pad_id: int) -> PromptCache:
    """One forward over the left-padded distinct prompts: their KV cache, the logits of each
    prompt's last position (which predict the first response token) and the attention mask."""
    output, last_logits, mask, _ = prompt_forward(model, prompts, pad_id)
    return output_cache(output), last_logits, mask


def _chunk_logits(
    model: Any, prompt: PromptCache, rows: torch.Tensor, responses: list[list[int]], pad_id: int
) -> torch.Tensor:
    """Logits predicting each response token of a chunk, right-padded (rows, width, V): the
    first from the prompt's last position, the rest from one forward of the responses (less
    their last token) on the chunk's copy of the prompt cache."""
    cache, last_logits, prompt_mask = prompt
    first = last_logits[rows].unsqueeze(1)
    if max(len(r) for r in responses) == 1:
        return first
    output = continuation_forward(model, cache, prompt_mask, rows, [r[:-1] for r in responses], pad_id)
    return torch.cat([first, output.logits], dim=1)


#: Response tokens below which a chunk stays open whatever its padding: a chunk's forward reads
#: its prompts from the cache, so a small chunk costs little more than its tokens.
CHUNK_MIN_TOKENS = 256


def response_chunks(items: Sequence[KLItem], prompt_width: int, token_budget: int, logit_rows: int) -> list[list[int]]:
    """The chunks of ``shared_prompt_sums``: indices of ``items``, longest response first, each
    chunk holding at most ``logit_rows`` logit rows (rows x widest response), at most
    ``token_budget`` tokens in its forward's context (rows x (prompt width + widest response))
    and not ``too_padded`` in its responses past ``CHUNK_MIN_TOKENS`` (the prompt part is read
    from the cache, not computed).

    >>> items = [KLItem(str(i), (1,), (2,) * n) for i, n in enumerate([3, 40, 38, 5])]
    >>> response_chunks(items, 10, 10_000, 1_000)  # small chunks stay open whatever their padding
    [[1, 2, 3, 0]]
    >>> response_chunks(items, 10, 100, 1_000)  # 2 x (10 + 40) context tokens fit, not 3
    [[1, 2], [3, 0]]
    >>> response_chunks(items, 10, 10_000, 80)  # 2 x 40 logit rows fit, not 3
    [[1, 2], [3, 0]]
    """
    return length_batches(
        [len(item.response_ids) for item in items],
        max(1, logit_rows),
        widths=[prompt_width + len(item.response_ids) for item in items],
        width_budget=token_budget,
        min_tokens=CHUNK_MIN_TOKENS,
    )


def shared_prompt_sums(
    policy: Any, reference: Any, items: Sequence[KLItem], params: SamplingParams, pad_id: int,
    token_budget: int, logit_budget: int,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The estimators' sums with each distinct prompt forwarded once per model (module
    docstring); responses in chunks bounded by ``token_budget`` padded tokens (prompt width
    included) and ``logit_budget`` logits."""
    prompts, prompt_of = distinct_prompts(items)
    policy_prompt = _prompt_cache(policy, prompts, pad_id)
    ref_prompt = _prompt_cache(reference, prompts, pad_id)
    prompt_width = policy_prompt[2].shape[1]
    vocab = int(policy_prompt[1].shape[-1])
    device = policy.device
    accumulated = {name: torch.zeros(len(items), dtype=torch.float64) for name in _SUMS}
    for chunk in response_chunks(items, prompt_width, token_budget, logit_budget // vocab):
        responses = [list(items[i].response_ids) for i in chunk]
        targets, mask = as_tensor(responses, pad_id, left=False)
        rows = torch.tensor([prompt_of[i] for i in chunk], device=device)
        policy_logits = _chunk_logits(policy, policy_prompt, rows, responses, pad_id)
        ref_logits = _chunk_logits(reference, ref_prompt, rows.to(reference.device), responses, pad_id)
        sums = kl_from_logits(policy_logits, ref_logits.to(device), targets.to(device), mask.bool().to(device), params)
        for name in _SUMS:
            accumulated[name][chunk] = sums[name]
    return accumulated


def length_groups(items: Sequence[KLItem], token_budget: int, vocab_size: int, logit_budget: int) -> list[list[int]]:
    """Indices of ``items`` in length-sorted groups for one forward each over prompt + response,
    bounded by padded tokens, by the (B x (response + 1) x V) logits they hold and by their
    padding (``batching.length_batches``)."""
    return length_batches(
        [len(item.prompt_ids) + len(item.response_ids) for item in items],
        token_budget,
        widths=[len(item.response_ids) + 1 for item in items],
        width_budget=logit_budget // vocab_size,  # rows x width <= B // V  <=>  rows x width x V <= B
    )


def plan_kl_batches(
    items: Sequence[KLItem], token_budget: int, vocab_size: int, logit_budget: int
) -> list[list[KLItem]]:
    """The KL stage's batches. Deterministic: the same items always give the same batches.

    When every prompt appears once: ``length_groups``.
    When prompts repeat: batches of whole prompts, every sample of a prompt in the batch of its
    prompt, so that ``estimate_kl`` forwards each prompt once (it splits the responses into
    chunks itself); prompts sorted by length, a batch closing once its distinct prompts would
    pass ``token_budget`` padded tokens or pad too much, or its samples ``token_budget`` real
    tokens (a prompt with more is a batch of its own)."""
    prompts, prompt_of = distinct_prompts(items)
    if len(prompts) == len(items):
        return [[items[i] for i in group] for group in length_groups(items, token_budget, vocab_size, logit_budget)]
    members: list[list[int]] = [[] for _ in prompts]
    for i, prompt in enumerate(prompt_of):
        members[prompt].append(i)
    tokens = [sum(len(items[i].prompt_ids) + len(items[i].response_ids) for i in m) for m in members]
    batches = prefix_batches([len(p) for p in prompts], tokens, token_budget)
    return [[items[i] for prompt in batch for i in members[prompt]] for batch in batches]
