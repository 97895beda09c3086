"""The sampling distribution, defined once and used by both generation and KL.

KL from the reference is only meaningful under the distribution that was actually sampled.
Generation draws tokens from ``processed_logprobs(logits, params)`` and the KL stage scores the
same token ids with the very same function, so a user who changes temperature, top-k or top-p
gets KL of the distribution they sampled, never a mix of raw and processed log-probs.

Draws use inverse-CDF sampling with one uniform number per (sample, position) from a
generator seeded by the sample's own seed. A sample therefore does not depend on which other
samples share its batch: a resumed run regenerates exactly the samples an uninterrupted run
would have, and every checkpoint sees the same random numbers for the same (prompt, sample)
(common random numbers, which lowers the variance of checkpoint comparisons).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from rlhf_eval.records import content_hash

if TYPE_CHECKING:  # torch is imported where tensors are made: a fully cached run never needs it
    import torch


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings. The defaults sample the model's own distribution unchanged."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64

    @property
    def is_raw(self) -> bool:
        """True when no setting changes the model's distribution."""
        return self.temperature == 1.0 and self.top_p >= 1.0 and self.top_k <= 0

    def key(self) -> str:
        return content_hash("sampling", asdict(self))


def processed_logprobs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probabilities of the sampling distribution: temperature, then top-k, then top-p.

    Filtered tokens get -inf; tokens tied with the k-th are kept. Same order and tie rule as
    transformers' logits warpers. fp32 throughout.

    >>> import torch
    >>> lp = processed_logprobs(torch.tensor([[1.0, 1.0, 0.0, -1.0]]), SamplingParams(top_k=2))
    >>> [round(float(x), 4) for x in lp.exp()[0]]
    [0.5, 0.5, 0.0, 0.0]
    """
    import torch

    scores = logits.float()
    if params.temperature != 1.0:
        scores = scores / params.temperature
    if params.top_k > 0 and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1.0 - params.top_p)
        remove_sorted[..., -1] = False  # always keep the most likely token
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def sample_seed(seed: int, prompt_id: str, sample_idx: int) -> int:
    """The seed of one sample: a function of the run seed, the prompt and the sample index only."""
    return int(content_hash("sample-seed", seed, prompt_id, sample_idx), 16) % (2**63 - 1)


def uniforms(seed: int, count: int) -> torch.Tensor:
    """``count`` uniform numbers in [0, 1) (float64) from a CPU generator seeded with ``seed``."""
    import torch

    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return torch.rand(count, generator=generator, dtype=torch.float64)


def inverse_cdf_sample(logprobs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one token per row: the first index whose cumulative probability exceeds ``u``.

    ``logprobs`` is (batch, vocab), ``u`` is (batch,) in [0, 1). Computed in float64 so the
    draw does not depend on the summation order of a batched kernel.

    >>> import torch
    >>> lp = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    >>> [int(inverse_cdf_sample(lp, torch.tensor([x], dtype=torch.float64))) for x in (0.1, 0.6, 0.9)]
    [0, 1, 2]
    """
    import torch

    probs = logprobs.double().exp()
    cdf = probs.cumsum(dim=-1)
    target = (u.to(cdf.device).double() * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    index = index.clamp(max=probs.shape[-1] - 1)
    # never return a token of probability 0 (possible only at float boundaries)
    bad = probs.gather(-1, index.unsqueeze(-1)).squeeze(-1) <= 0
    if bool(bad.any()):
        index = torch.where(bad, probs.argmax(dim=-1), index)
    return index
