"""The gold reward of the demo sandbox: a programmatic rubric that pays for informative answers
and charges for what over-optimized policies drift into (repetition, hedging, excess length).

It lives in its own small module because the harness fingerprints a callable scorer by the
source of its module: editing the demo builders must not invalidate stored gold scores.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Words that carry no content: filler adverbs and the vocabulary of hedges and apologies.
_FILLER_TEXT = (
    "very really basically actually just quite so indeed honestly literally truly certainly definitely "
    "generally simply totally extremely absolutely well also "
    "as an ai i am cannot be sure sorry apologize but not may might perhaps think believe language model "
    "can help hope this helps"
)
FILLER_WORDS = frozenset(_FILLER_TEXT.split())
#: Boilerplate phrases; any one of them in a response costs HEDGE_PENALTY once.
HEDGE_PHRASES = ("as an ai", "i cannot be sure", "i am not sure", "i apologize")
DISTINCT_CAP = 12
REPEAT_PENALTY = 0.5
HEDGE_PENALTY = 2.0
FREE_LENGTH = 25
LENGTH_PENALTY = 0.05


def gold_score(response: str) -> float:
    """Rubric score of one response, over its lower-cased whitespace-separated words:

    min(distinct non-filler words, 12)
    - 0.5 x repeated words (occurrences beyond the first of each word, filler included)
    - 2 if a hedge phrase appears
    - 0.05 x words beyond 25.

    An empty response scores 0.

    >>> gold_score("the sky is blue and bright")  # 6 distinct, no repeats
    6.0
    >>> gold_score("as an ai i cannot be sure but the sky is very very blue")  # 4 - 0.5 - 2
    1.5
    """
    words = response.lower().split()
    distinct = {word for word in words if word not in FILLER_WORDS}
    repeats = len(words) - len(set(words))
    padded = f" {' '.join(words)} "
    hedged = any(f" {phrase} " in padded for phrase in HEDGE_PHRASES)
    return (
        min(len(distinct), DISTINCT_CAP)
        - REPEAT_PENALTY * repeats
        - (HEDGE_PENALTY if hedged else 0.0)
        - LENGTH_PENALTY * max(0, len(words) - FREE_LENGTH)
    )


def demo_gold_reward(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
    """Gold reward of the demo: ``gold_score`` of each response (the prompt is not used).

    >>> demo_gold_reward(["tell me about the sky", "q"], ["the sky is blue and bright", ""])
    [6.0, 0.0]
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    return [float(gold_score(response)) for response in responses]
