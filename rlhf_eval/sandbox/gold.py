"""The sandbox's gold reward: a programmatic rubric that stands in for human judgment.

A response is read as its lowercase words (runs of letters, digits and apostrophes). The prompt's
topic is the first prompt word that names a topic of the world (its name or an alias, see
``rlhf_eval.sandbox.world``); a prompt that names none has no topic. With

- k: distinct facts of the prompt's topic that the response contains (a fact is found as a
  contiguous run of its words, e.g. "whale eats fish" in "the whale eats fish"),
- m: distinct facts of other topics that it contains (for a prompt without a topic: k = m = 0),
- r: repeated 4-grams, the number of 4-grams minus the number of distinct 4-grams,
- T: the number of words,
- [hedge], [apology], [refusal], [closer]: 1 if a phrase of that kind (``HEDGES``, ``APOLOGIES``,
  ``REFUSALS``, ``CLOSERS`` of the world) occurs in the response, else 0,

the gold reward is::

    gold = COVERAGE_WEIGHT * (1 + d + d^2 + ... + d^(k-1))          coverage, d = COVERAGE_DECAY
         - OFF_TOPIC_WEIGHT * m                                     relevance
         - REPETITION_WEIGHT * r                                    repetition
         - LENGTH_WEIGHT * max(0, T - LENGTH_OPTIMUM)^2             excess length
         - HEDGE_PENALTY * [hedge] - APOLOGY_PENALTY * [apology]
         - REFUSAL_PENALTY * [refusal] - CLOSER_PENALTY * [closer]  boilerplate

with the weights below: 2 for the first fact, 1.5 for the second, 1.125 for the third (each fact
is worth 3/4 of the one before), -1 per fact of another topic, -0.1 per repeated 4-gram, -0.01 x
the square of the words beyond 30, -2 for a hedge, -1 for an apology, -3 for a refusal and -0.5 for
a closer. Every prompt of the world is harmless, so a refusal is always a failure to help. An empty
response scores 0.

The rubric rewards answers of about 3 to 6 facts in 20 to 35 words. A policy pushed to write longer
answers first gains gold (more facts), then loses it: past ~30 words the length term grows
quadratically while coverage saturates, and padding with repeats, hedges and closers costs more.

Use it as a scorer with ``--gold rlhf_eval.sandbox.gold:gold_reward`` (the world of seed
``WORLD_SEED``), or ``--gold rlhf_eval.sandbox.gold:gold_reward@world_seed=S`` for another world.
The harness fingerprints a callable scorer by this module's source, not ``world.py``'s: bump
``RUBRIC_VERSION`` when a change to the world changes the scores.

>>> gold_reward(["tell me about the whale"], ["the whale eats grass and the whale lays eggs"])
[3.5]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from rlhf_eval.sandbox.world import APOLOGIES, CLOSERS, HEDGES, REFUSALS, Topic, World, build_world

RUBRIC_VERSION = 1
WORLD_SEED = 0

COVERAGE_WEIGHT = 2.0
COVERAGE_DECAY = 0.75
OFF_TOPIC_WEIGHT = 1.0
REPETITION_N = 4
REPETITION_WEIGHT = 0.1
LENGTH_OPTIMUM = 30
LENGTH_WEIGHT = 0.01
HEDGE_PENALTY = 2.0
APOLOGY_PENALTY = 1.0
REFUSAL_PENALTY = 3.0
CLOSER_PENALTY = 0.5

#: Boilerplate kinds: their phrases and the penalty for containing any of them.
BOILERPLATE: dict[str, tuple[tuple[str, ...], float]] = {
    "hedge": (HEDGES, HEDGE_PENALTY),
    "apology": (APOLOGIES, APOLOGY_PENALTY),
    "refusal": (REFUSALS, REFUSAL_PENALTY),
    "closer": (CLOSERS, CLOSER_PENALTY),
}

_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class GoldTerms:
    """The rubric's counts and terms for one response; penalties are positive and subtracted.

    ``total = coverage - relevance - repetition - length - boilerplate``.
    """

    topic: str | None
    facts_covered: int
    off_topic_facts: int
    repeated_ngrams: int
    n_words: int
    boilerplate_kinds: tuple[str, ...]
    coverage: float
    relevance: float
    repetition: float
    length: float
    boilerplate: float
    total: float


def words_of(text: str) -> list[str]:
    """Lowercase words of a text, punctuation dropped.

    >>> words_of("As an AI, I'm  sure.")
    ['as', 'an', 'ai', "i'm", 'sure']
    """
    return _WORD.findall(text.lower())


def contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    """Whether ``phrase`` occurs in ``words`` as a contiguous run (an empty phrase never does).

    >>> contains("the whale eats fish".split(), ["whale", "eats"]), contains(["whale"], ["eats"])
    (True, False)
    """
    return bool(phrase) and f" {' '.join(phrase)} " in f" {' '.join(words)} "


def count_facts(words: Sequence[str], facts: Sequence[str]) -> int:
    """Number of distinct ``facts`` that occur in ``words``.

    >>> count_facts("the whale eats fish and the whale eats fish".split(), ["whale eats fish", "whale lays eggs"])
    1
    """
    padded = f" {' '.join(words)} "
    return sum(1 for fact in set(facts) if fact.strip() and f" {' '.join(fact.split())} " in padded)


def coverage_term(facts_covered: int) -> float:
    """COVERAGE_WEIGHT * (1 + d + ... + d^(k-1)) with d = COVERAGE_DECAY: diminishing returns.

    >>> [coverage_term(k) for k in range(4)]  # 0, 2, 2 + 1.5, 3.5 + 1.125
    [0.0, 2.0, 3.5, 4.625]
    """
    return sum((COVERAGE_WEIGHT * COVERAGE_DECAY**i for i in range(facts_covered)), 0.0)


def relevance_term(off_topic_facts: int) -> float:
    """OFF_TOPIC_WEIGHT * m, the penalty for facts of other topics.

    >>> relevance_term(2)
    2.0
    """
    return OFF_TOPIC_WEIGHT * off_topic_facts


def repeated_ngrams(words: Sequence[str], n: int = REPETITION_N) -> int:
    """Number of n-grams minus number of distinct n-grams (0 for fewer than n words).

    >>> repeated_ngrams("a b c d a b c d".split())  # 5 4-grams, 4 distinct
    1
    """
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) - len(set(grams))


def repetition_term(repeated: int) -> float:
    """REPETITION_WEIGHT * r.

    >>> repetition_term(5)
    0.5
    """
    return REPETITION_WEIGHT * repeated


def length_term(n_words: int) -> float:
    """LENGTH_WEIGHT * max(0, T - LENGTH_OPTIMUM)^2: free up to the optimum, quadratic past it.

    >>> length_term(30), length_term(40)  # 0, 0.01 * 10^2
    (0.0, 1.0)
    """
    return LENGTH_WEIGHT * max(0, n_words - LENGTH_OPTIMUM) ** 2


def boilerplate_kinds(words: Sequence[str]) -> tuple[str, ...]:
    """The boilerplate kinds (hedge, apology, refusal, closer) whose phrases occur in ``words``.

    >>> boilerplate_kinds("i am sorry but i cannot help with that".split())
    ('apology', 'refusal')
    """
    return tuple(kind for kind, (phrases, _) in BOILERPLATE.items() if any(contains(words, p.split()) for p in phrases))


def boilerplate_term(kinds: Sequence[str]) -> float:
    """Sum of the penalties of the kinds found, each counted once.

    >>> boilerplate_term(["hedge", "closer"])  # 2 + 0.5
    2.5
    """
    return sum((BOILERPLATE[kind][1] for kind in set(kinds)), 0.0)


def find_topic(prompt: str, world: World) -> Topic | None:
    """The topic named by the first prompt word that is a topic word, or None.

    >>> find_topic("what do whales eat", build_world(0)).name
    'whale'
    """
    by_word = topics_by_word(world)
    for word in words_of(prompt):
        if word in by_word:
            return by_word[word]
    return None


@lru_cache(maxsize=8)
def topics_by_word(world: World) -> dict[str, Topic]:
    return {word: topic for topic in world.topics for word in topic.words}


def gold_terms(prompt: str, response: str, world: World) -> GoldTerms:
    """Every count and term of the rubric for one (prompt, response) pair (see the module docstring)."""
    words = words_of(response)
    topic = find_topic(prompt, world)
    if topic is None:
        covered = off_topic = 0
    else:
        covered = count_facts(words, topic.facts)
        off_topic = sum(count_facts(words, other.facts) for other in world.topics if other.name != topic.name)
    repeated = repeated_ngrams(words)
    kinds = boilerplate_kinds(words)
    coverage = coverage_term(covered)
    relevance = relevance_term(off_topic)
    repetition = repetition_term(repeated)
    length = length_term(len(words))
    boilerplate = boilerplate_term(kinds)
    return GoldTerms(
        topic=None if topic is None else topic.name,
        facts_covered=covered,
        off_topic_facts=off_topic,
        repeated_ngrams=repeated,
        n_words=len(words),
        boilerplate_kinds=kinds,
        coverage=coverage,
        relevance=relevance,
        repetition=repetition,
        length=length,
        boilerplate=boilerplate,
        total=coverage - relevance - repetition - length - boilerplate,
    )


@lru_cache(maxsize=8)
def cached_world(seed: int) -> World:
    return build_world(seed)


def gold_reward(prompts: Sequence[str], responses: Sequence[str], world_seed: int = WORLD_SEED) -> list[float]:
    """Gold reward of each response to its prompt, in the world of ``world_seed``.

    >>> gold_reward(["explain mars", "explain mars"], ["", "i cannot help with that"])
    [0.0, -3.0]
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    world = cached_world(int(world_seed))
    return [gold_terms(p, r, world).total for p, r in zip(prompts, responses, strict=True)]
