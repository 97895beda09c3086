"""Repetition detectors: seq-rep-n, distinct-n, compression ratio and tail loops.

Words are ``text.split()`` (runs of non-whitespace, punctuation attached), so the values do not
depend on any model's tokenizer and two checkpoints with different vocabularies compare fairly.
All n-gram counts are within one response: repetition across responses is not measured here.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from rlhf_eval.detectors.registry import detector


def _ngram_counts(text: str, n: int) -> tuple[int, int]:
    """(unique n-grams, total n-grams) of the words of ``text``; total = max(0, words - n + 1)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)), len(grams)


def seq_rep(text: str, n: int) -> float:
    """1 - |unique n-grams| / |n-grams| of one response, as (total - unique) / total; 0.0 below n words.

    >>> seq_rep("a b a b a b", 2)
    0.6
    """
    unique, total = _ngram_counts(text, n)
    return (total - unique) / total if total else 0.0


def distinct(text: str, n: int) -> float:
    """|unique n-grams| / |n-grams| of one response; 0.0 when it has fewer than n words.

    >>> distinct("a b a b a b", 2)
    0.4
    """
    unique, total = _ngram_counts(text, n)
    return unique / total if total else 0.0


@detector("seq_rep_1", higher_is_better=False, unit="fraction")
def seq_rep_1(texts: list[str]) -> list[float]:
    """Share of repeated words: 1 - |unique 1-grams| / |1-grams| (Welleck et al. 2019).

    Fewer than 1 word (empty or whitespace-only text): 0.0.

    >>> seq_rep_1(["the cat the dog", ""])
    [0.25, 0.0]
    """
    return [seq_rep(t, 1) for t in texts]


@detector("seq_rep_2", higher_is_better=False, unit="fraction")
def seq_rep_2(texts: list[str]) -> list[float]:
    """Share of repeated word bigrams: 1 - |unique 2-grams| / |2-grams| (Welleck et al. 2019).

    Fewer than 2 words: 0.0. "a b a b a b" has 5 bigrams, 2 unique: 1 - 2/5 = 0.6.

    >>> seq_rep_2(["a b a b a b", "one"])
    [0.6, 0.0]
    """
    return [seq_rep(t, 2) for t in texts]


@detector("seq_rep_3", higher_is_better=False, unit="fraction")
def seq_rep_3(texts: list[str]) -> list[float]:
    """Share of repeated word trigrams: 1 - |unique 3-grams| / |3-grams| (Welleck et al. 2019).

    Fewer than 3 words: 0.0. "a b c a b c" has 4 trigrams, 3 unique: 1 - 3/4 = 0.25.

    >>> seq_rep_3(["a b c a b c", "a b"])
    [0.25, 0.0]
    """
    return [seq_rep(t, 3) for t in texts]


@detector("seq_rep_4", higher_is_better=False, unit="fraction")
def seq_rep_4(texts: list[str]) -> list[float]:
    """Share of repeated word 4-grams: 1 - |unique 4-grams| / |4-grams| (Welleck et al. 2019).

    Fewer than 4 words: 0.0. "a b c d a b c d" has 5 4-grams, 4 unique: 1 - 4/5 = 0.2.

    >>> seq_rep_4(["a b c d a b c d", "a b c"])
    [0.2, 0.0]
    """
    return [seq_rep(t, 4) for t in texts]


@detector("distinct_1", higher_is_better=True, unit="fraction")
def distinct_1(texts: list[str]) -> list[float]:
    """Distinct words: |unique 1-grams| / |1-grams|; denominator = the response's word count.

    Li et al. 2016 ("A Diversity-Promoting Objective Function for Neural Conversation Models")
    pool n-grams over all responses; this value is per response. Fewer than 1 word: 0.0.

    >>> distinct_1(["the cat the dog", "  "])
    [0.75, 0.0]
    """
    return [distinct(t, 1) for t in texts]


@detector("distinct_2", higher_is_better=True, unit="fraction")
def distinct_2(texts: list[str]) -> list[float]:
    """Distinct bigrams: |unique 2-grams| / |2-grams|; denominator = the response's bigram count.

    Li et al. 2016 ("A Diversity-Promoting Objective Function for Neural Conversation Models")
    pool n-grams over all responses; this value is per response. Fewer than 2 words: 0.0.

    >>> distinct_2(["a b a b a b", "one"])
    [0.4, 0.0]
    """
    return [distinct(t, 2) for t in texts]


@detector("compression_ratio", higher_is_better=False, unit="ratio")
def compression_ratio(texts: list[str]) -> list[float]:
    """UTF-8 bytes / zlib-compressed bytes (level 9); higher = more redundant. Empty text: 0.0.

    zlib adds 6 bytes of header and checksum plus block framing, so short texts score below 1: compare
    ratios only above a length floor, calibrated on the reference policy's samples.

    Lone surrogates (possible in text decoded from malformed JSON) are encoded with
    ``surrogatepass`` instead of raising. "x" * 60 is 60 bytes; zlib gives 12 (2 header +
    6 deflate + 4 checksum): 60 / 12 = 5.0.

    >>> compression_ratio(["x" * 60, ""])
    [5.0, 0.0]
    """
    out = []
    for text in texts:
        raw = text.encode("utf-8", "surrogatepass")
        out.append(len(raw) / len(zlib.compress(raw, 9)) if raw else 0.0)
    return out


def ends_in_loop(words: Sequence[object], min_copies: int = 3) -> bool:
    """Whether ``words`` ends in ``min_copies`` consecutive copies of one span of L >= 1 words.

    The last k*L words repeat with period L iff words[i] == words[i + L] for every i in the
    last (k - 1)*L positions before the final span; trying every L <= n / k costs O(n^2) at worst.

    >>> ends_in_loop("it goes on and on and on and on".split())
    True
    >>> ends_in_loop("on and on".split())
    False
    """
    n = len(words)
    for span in range(1, n // min_copies + 1):
        start = n - min_copies * span
        if words[start : n - span] == words[start + span : n]:
            return True
    return False


@detector("tail_loop", higher_is_better=False, unit="flag")
def tail_loop(texts: list[str]) -> list[float]:
    """1.0 if the response's words end in >= 3 consecutive copies of one span of >= 1 words, else 0.0.

    A degenerate-decoding symptom (Holtzman et al. 2020, "The Curious Case of Neural Text
    Degeneration"): generation stuck in a loop until the length limit. Fewer than 3 words: 0.0.

    >>> tail_loop(["I think so. I think so. I think so.", "I think so."])
    [1.0, 0.0]
    """
    return [1.0 if ends_in_loop(t.split()) else 0.0 for t in texts]
