"""Length detectors: characters and whitespace-separated words of a response.

Length is the first thing a reward model learns to exploit (Singhal et al. 2023, "A Long Way
to Go: Investigating Length Correlations in RLHF"); AlpacaEval 2's length-controlled win rate
(Dubois et al. 2024) exists for the same reason. These raw counts are the inputs of such
corrections. Neither direction is better in itself, so ``higher_is_better`` is None.
"""

from __future__ import annotations

from rlhf_eval.detectors.registry import detector


@detector("length_chars", higher_is_better=None, unit="characters")
def length_chars(texts: list[str]) -> list[float]:
    """Number of Unicode code points of the response, ``len(text)``, whitespace included.

    Empty text: 0.0. "héllo" is 5 code points (7 UTF-8 bytes).

    >>> length_chars(["héllo", ""])
    [5.0, 0.0]
    """
    return [float(len(t)) for t in texts]


@detector("length_words", higher_is_better=None, unit="words")
def length_words(texts: list[str]) -> list[float]:
    """Number of whitespace-separated words, ``len(text.split())``.

    Empty or whitespace-only text: 0.0; punctuation stays attached to its word.

    >>> length_words(["Hello,  world !", " \\n "])
    [3.0, 0.0]
    """
    return [float(len(t.split())) for t in texts]
