"""A reward model's forwards: length-sorted batches, and each prompt's shared prefix once.

A scorer formats every (prompt, response) pair into one token sequence, and the samples of a
prompt begin with the same tokens (the chat template and the prompt). In a causal (decoder-only)
classifier, the hidden states of those tokens do not depend on what follows them, so
``shared_prefix_scores`` forwards each group's common prefix once with a KV cache and each
sample's remainder on a copy of its prefix's cache rows (``generate.continuation_forward``), the
way the KL stage shares a prompt's forward. The classifier pools the last token of the remainder,
so the score is that of one forward over the whole sequence up to float rounding. With k samples
of a prompt whose formatted prefix is P tokens and whose remainders are R tokens, the forwards
cost P + k·R tokens instead of k·(P + R).

The prefix is the longest common prefix of the encoded ids themselves, never a separate
tokenization of the prompt (a BPE merge may cross the prompt's boundary); each sample keeps at
least one token of its own, and a sample whose last token is the pad id is scored whole (the
classifier pools the last token that is not the pad id, which would then lie elsewhere).

Whether a model can take this path is checked once, on a few made-up tokens, when the scorer
loads it (``shares_prefixes``): its forward takes a KV cache, the hidden states of a shared
prefix are the same whatever follows (causal attention: an encoder such as BERT or DeBERTa
fails this), and the scores of the shared path equal those of whole forwards. A model that
fails any of these is scored with whole sequences (``pooled_scores``).
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlhf_eval.batching import distinct, length_batches, prefix_batches
from rlhf_eval.generate import continuation_forward, output_cache, prefix_forward, takes_cache
from rlhf_eval.models import as_tensor, context_length

#: Share of a group's tokens that sharing its prefix must save, (k − 1)·P of k·(P + R), for the
#: group to take the shared path: near a quarter, the extra forward and the cache copies cost
#: about what they save. Measured with a 4-layer GPT-2 reward model, 4 samples per prompt, 2 CPU
#: threads: on the end-to-end benchmark's generated samples (28% saved) the shared path ran at
#: 0.88x to 1.0x the speed of whole forwards; on ``bench/reward_prefix.py``'s made-up prompts it
#: ran 1.26x to 1.30x faster at 25% saved, 1.41x to 1.49x at 39%, 1.82x at 50%, 2.70x at 61%.
MIN_SAVED_SHARE = 1 / 3

#: Relative agreement ``shares_prefixes`` asks of the shared path against whole forwards (fp32
#: rounding of a few layers is about 1e-6; an encoder's prefix states move by far more).
PROBE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PrefixGroup:
    """Rows of a scoring call that begin with the same ``prefix`` tokens."""

    prefix: tuple[int, ...]
    rows: tuple[int, ...]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``sequences``, leaving at least one token of the
    shortest to follow it.

    >>> common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9]])
    3
    >>> common_prefix_length([[1, 2], [1, 2, 3]])  # the shorter keeps its last token
    1
    >>> common_prefix_length([[5, 1], [6, 1]])
    0
    """
    if not sequences:
        return 0
    first = sequences[0]
    limit = min(len(s) for s in sequences) - 1
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


def prefix_groups(
    encoded: Sequence[Sequence[int]], keys: Sequence[Hashable], pad_id: int, *, min_saved_share: float = MIN_SAVED_SHARE
) -> tuple[list[PrefixGroup], list[int]]:
    """The rows of each key (a prompt) that share a common prefix, as groups of two or more, and
    the rows to score whole: alone under their key, ending in the pad id, or in a group whose
    prefix would save less than ``min_saved_share`` of its tokens.

    >>> encoded = [[1, 2, 3], [1, 2, 4], [1, 5], [7, 0], [8, 9, 9], [8, 5, 5]]
    >>> prefix_groups(encoded, ["a", "a", "b", "c", "d", "d"], pad_id=0)  # "d" would save 1 of 6 tokens
    ([PrefixGroup(prefix=(1, 2), rows=(0, 1))], [2, 3, 4, 5])
    """
    scorable = [i for i, ids in enumerate(encoded) if ids and ids[-1] != pad_id]
    names, key_of = distinct([keys[i] for i in scorable])
    members: list[list[int]] = [[] for _ in names]
    for row, key in zip(scorable, key_of, strict=True):
        members[key].append(row)
    groups: list[PrefixGroup] = []
    shared: set[int] = set()
    for rows in members:
        length = common_prefix_length([encoded[i] for i in rows]) if len(rows) > 1 else 0
        if length and (len(rows) - 1) * length >= min_saved_share * sum(len(encoded[i]) for i in rows):
            groups.append(PrefixGroup(tuple(encoded[rows[0]][:length]), tuple(rows)))
            shared.update(rows)
    return groups, [i for i in range(len(encoded)) if i not in shared]


def _scores(logits: torch.Tensor, label_index: int) -> list[float]:
    return [float(v) for v in logits[:, label_index].float().cpu().tolist()]


def pooled_scores(
    model: Any, encoded: Sequence[Sequence[int]], pad_id: int, token_budget: int, label_index: int
) -> list[float]:
    """Whole-sequence forwards in length-sorted, right-padded batches of at most ``token_budget``
    padded tokens: each row's ``label_index`` logit, in the order of ``encoded``."""
    results = [0.0] * len(encoded)
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    for rows in length_batches([len(e) for e in encoded], token_budget):
        ids, mask = as_tensor([list(encoded[i]) for i in rows], pad_id, left=False)
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **extra).logits
        for row, value in zip(rows, _scores(logits, label_index), strict=True):
            results[row] = value
    return results


def shared_prefix_scores(
    model: Any,
    encoded: Sequence[Sequence[int]],
    groups: Sequence[PrefixGroup],
    pad_id: int,
    token_budget: int,
    label_index: int,
) -> dict[int, float]:
    """The scores of the groups' rows (module docstring): batches of whole groups
    (``batching.prefix_batches``), each forwarding its distinct prefixes once, then the rows'
    remainders in length-sorted chunks of at most ``token_budget`` tokens of context (prefix
    width included)."""
    tokens = [sum(len(encoded[i]) for i in g.rows) for g in groups]
    results: dict[int, float] = {}
    for batch in prefix_batches([len(g.prefix) for g in groups], tokens, token_budget):
        output, prefix_mask, _ = prefix_forward(model, [groups[g].prefix for g in batch], pad_id)
        cache = output_cache(output)
        members = [(slot, row) for slot, g in enumerate(batch) for row in groups[g].rows]
        rests = [encoded[row][len(groups[batch[slot]].prefix) :] for slot, row in members]
        width = prefix_mask.shape[1]
        chunks = length_batches(
            [len(r) for r in rests], token_budget, widths=[width + len(r) for r in rests], width_budget=token_budget
        )
        for chunk in chunks:
            rows = torch.tensor([members[j][0] for j in chunk], device=prefix_mask.device)
            logits = continuation_forward(model, cache, prefix_mask, rows, [rests[j] for j in chunk], pad_id).logits
            for j, value in zip(chunk, _scores(logits, label_index), strict=True):
                results[members[j][1]] = value
    return results


def _probe_ids(vocab_size: int, pad_id: int, count: int, seed: int) -> list[int]:
    """Up to ``count`` seeded random token ids other than the pad id (fewer only for a vocabulary
    of little but the pad id)."""
    generator = torch.Generator().manual_seed(seed)
    ids = [int(t) for t in torch.randint(0, vocab_size, (count * 2,), generator=generator) if int(t) != pad_id]
    return ids[:count]


def shares_prefixes(model: Any, pad_id: int, label_index: int) -> bool:
    """Whether ``shared_prefix_scores`` gives ``model``'s whole-forward scores (module docstring),
    checked on made-up token ids no longer than its context (at most 9): two groups of two rows,
    with remainders of 1 to 3 tokens, so that both paddings are exercised."""
    config = model.config
    vocab_size = int(getattr(config, "vocab_size", 0) or 0)
    length = min(9, context_length(model))
    if getattr(config, "is_encoder_decoder", False) or vocab_size < 4 or length < 4 or not takes_cache(model):
        return False
    base = _probe_ids(vocab_size, pad_id, length, seed=0)
    other = _probe_ids(vocab_size, pad_id, length, seed=1)
    if len(base) < length or len(other) < length:  # a vocabulary of the pad id and little else
        return False
    cut = length - 3
    sequences = [base, base[:cut] + other[:1], other[:4], other[:2] + base[:1]]
    groups = [PrefixGroup(tuple(base[:cut]), (0, 1)), PrefixGroup(tuple(other[:2]), (2, 3))]
    try:
        with torch.inference_mode():
            ids = torch.tensor([base, base[:cut] + other[:3]], device=model.device)
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
            prefix_a, prefix_b = hidden[-1][0, :cut].float(), hidden[-1][1, :cut].float()
            scale = float(prefix_a.abs().max())
            if not torch.allclose(prefix_a, prefix_b, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE * scale):
                return False  # the prefix's states depend on what follows: not causal
            whole = pooled_scores(model, sequences, pad_id, 1 << 16, label_index)
            shared = shared_prefix_scores(model, sequences, groups, pad_id, 1 << 16, label_index)
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError):
        return False  # a forward that takes a cache, but not this way
    return all(abs(shared[i] - whole[i]) <= PROBE_TOLERANCE * (1.0 + abs(whole[i])) for i in range(len(sequences)))
