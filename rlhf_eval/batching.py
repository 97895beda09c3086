"""How many padded tokens a batch may carry.

A forward over a batch costs its padded size (rows x longest row), so the batch planners of the
KL stage (``kl.plan_kl_batches``) and of reward-model scoring (``rewards.RewardModelScorer``)
sort their rows by length and close a batch once its padding would exceed ``MAX_PADDING`` of its
real tokens. Below ``MIN_BATCH_TOKENS`` real tokens a batch stays open whatever its padding:
smaller batches lose more to per-call overheads than padding costs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

MAX_PADDING = 0.15
MIN_BATCH_TOKENS = 1024


def too_padded(rows: int, width: int, real: int, real_before: int, min_tokens: int = MIN_BATCH_TOKENS) -> bool:
    """Whether a batch of ``rows`` rows padded to ``width``, holding ``real`` real tokens, pads
    too much, given it held ``real_before`` before its last row (below ``min_tokens`` it never does).

    >>> too_padded(3, 600, 1210, 1190)  # a short row after two long ones: 1800 padded for 1210 real
    True
    >>> too_padded(3, 600, 1210, 900)  # the same, while the batch is still small
    False
    """
    return real_before >= min_tokens and rows * width > (1 + MAX_PADDING) * real


def length_batches(
    lengths: Sequence[int],
    token_budget: int,
    *,
    widths: Sequence[int] | None = None,
    width_budget: int | None = None,
    min_tokens: int = MIN_BATCH_TOKENS,
) -> list[list[int]]:
    """Indices of ``lengths`` in batches, longest first, each within ``token_budget`` padded
    tokens (a longer row is a batch of its own) and not ``too_padded``. With ``widths``, each
    batch also keeps rows x (its largest width) within ``width_budget`` (the KL stage bounds the
    logits it holds this way). ``min_tokens``: real tokens below which a batch stays open
    whatever its padding. Deterministic.

    >>> length_batches([20, 600, 10, 590], 10_000)
    [[1, 3], [0, 2]]
    >>> length_batches([600, 590, 580], 1_000)  # the token budget: one row each
    [[0], [1], [2]]
    >>> length_batches([50, 40, 30], 1_000, widths=[5, 9, 2], width_budget=18)
    [[0, 1], [2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = widest = real = 0
    for index in order:
        length = max(lengths[index], 1)
        extra = widths[index] if widths is not None else 0
        rows, new_width, new_widest, new_real = len(current) + 1, max(width, length), max(widest, extra), real + length
        too_big = rows * new_width > token_budget or (width_budget is not None and rows * new_widest > width_budget)
        if current and (too_big or too_padded(rows, new_width, new_real, real, min_tokens)):
            batches.append(current)
            current, new_width, new_widest, new_real = [], length, extra, length
        current.append(index)
        width, widest, real = new_width, new_widest, new_real
    if current:
        batches.append(current)
    return batches


def prefix_batches(prefix_lengths: Sequence[int], member_tokens: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices of distinct prefixes in batches for one forward each, every continuation of a
    prefix in its batch (the KL stage's prompts, a reward model's shared prefixes): prefixes
    sorted by length, a batch closing once its prefixes would pass ``token_budget`` padded
    tokens or pad too much (``length_batches``), or once the real tokens of its members
    (``member_tokens``: each prefix's continuations, prefix included) would pass ``token_budget``
    (a prefix with more is a batch of its own).

    >>> prefix_batches([10, 30, 20], [40, 100, 60], 150)
    [[1], [2, 0]]
    """
    batches: list[list[int]] = []
    for group in length_batches(prefix_lengths, token_budget):
        current: list[int] = []
        real = 0
        for prefix in group:
            if current and real + member_tokens[prefix] > token_budget:
                batches.append(current)
                current, real = [], 0
            current.append(prefix)
            real += member_tokens[prefix]
        batches.append(current)
    return batches


def distinct(keys: Sequence[K]) -> tuple[list[K], list[int]]:
    """The distinct keys in order of first appearance, and each key's index among them: how the
    samples of a batch find the one forward of their prompt (generation and KL).

    >>> distinct([(1, 2), (3,), (1, 2)])
    ([(1, 2), (3,)], [0, 1, 0])
    """
    index: dict[K, int] = {}
    rows = [index.setdefault(key, len(index)) for key in keys]
    return list(index), rows
