"""The sandbox world: determinism, vocabulary coverage, style proportions, detector agreement."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from rlhf_eval.detectors.phrases import apology, closer, hedge, refusal
from rlhf_eval.sandbox.world import (
    APOLOGIES,
    CLOSERS,
    DEFAULT_STYLE_WEIGHTS,
    FACT_POOLS,
    HEDGES,
    MAX_FACTS,
    MIN_FACTS,
    REFUSAL_BAIT_TEMPLATES,
    REFUSALS,
    STYLES,
    answer,
    build_world,
    corpus,
    prompts,
)


def test_same_seed_same_world_corpus_and_prompts() -> None:
    assert build_world(7) == build_world(7)
    assert corpus(build_world(7), 50, seed=3) == corpus(build_world(7), 50, seed=3)
    assert prompts(build_world(7), 40, seed=2) == prompts(build_world(7), 40, seed=2)


def test_other_seed_other_facts_and_corpus() -> None:
    assert build_world(0).facts != build_world(1).facts
    world = build_world(0)
    assert corpus(world, 50, seed=0) != corpus(world, 50, seed=1)


def test_world_shape() -> None:
    world = build_world(0)
    assert 12 <= len(world.topics) <= 20
    names = [t.name for t in world.topics]
    assert len(set(names)) == len(names)
    topic_words = [w for t in world.topics for w in t.words]
    assert len(set(topic_words)) == len(topic_words), "a topic word must name one topic"
    all_facts = [f for t in world.topics for f in t.facts]
    assert len(set(all_facts)) == len(all_facts), "no two topics share a fact"
    for topic in world.topics:
        assert MIN_FACTS <= len(topic.facts) <= MAX_FACTS
        assert topic.words[0] == topic.name
        assert all(fact.split()[0] == topic.name for fact in topic.facts)
    assert world.facts["whale"] == world.topic("whale").facts
    with pytest.raises(KeyError, match="no topic"):
        world.topic("unicorn")


def test_no_fact_ending_contains_another() -> None:
    for pool in FACT_POOLS.values():
        for a in pool:
            for b in pool:
                assert a == b or f" {a} " not in f" {b} ", (a, b)


def test_vocabulary_is_sorted_and_covers_every_corpus_word() -> None:
    for seed in (0, 1, 2):
        world = build_world(seed)
        vocabulary = set(world.vocabulary)
        assert list(world.vocabulary) == sorted(vocabulary)
        weights = {style: 1.0 for style in STYLES}
        rows = corpus(world, 1500, seed=seed, style_weights=weights)
        words = {w for row in rows for w in f"{row.prompt} {row.answer}".split()}
        words |= {w for p in prompts(world, 200, seed=seed) for w in p.split()}
        assert words <= vocabulary, sorted(words - vocabulary)


def test_texts_are_lowercase_words_without_punctuation() -> None:
    for row in corpus(build_world(0), 500, seed=4, style_weights={style: 1.0 for style in STYLES}):
        for text in (row.prompt, row.answer):
            assert text == " ".join(text.split()) and text
            assert all(word.isalpha() and word.islower() for word in text.split()), text


def test_styles_roughly_in_the_requested_proportions() -> None:
    n = 4000
    counts = Counter(row.style for row in corpus(build_world(0), n, seed=5))
    total = sum(DEFAULT_STYLE_WEIGHTS.values())
    for style, weight in DEFAULT_STYLE_WEIGHTS.items():
        # binomial sd <= sqrt(0.25 / 4000) = 0.0079; 0.03 is more than 3.5 sd
        assert counts[style] / n == pytest.approx(weight / total, abs=0.03), style
    skewed = Counter(row.style for row in corpus(build_world(0), 2000, seed=6, style_weights={"list": 3, "verbose": 1}))
    assert set(skewed) == {"list", "verbose"}
    assert skewed["list"] / 2000 == pytest.approx(0.75, abs=0.04)


def test_unknown_style_or_bad_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        corpus(build_world(0), 1, style_weights={"rude": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        corpus(build_world(0), 1, style_weights={"list": 0.0})
    with pytest.raises(ValueError, match="use one of"):
        answer(build_world(0), build_world(0).topics[0], "rude", random.Random(0))


def test_every_world_phrase_fires_its_detector() -> None:
    for phrases, detect in ((HEDGES, hedge), (APOLOGIES, apology), (REFUSALS, refusal), (CLOSERS, closer)):
        assert detect(list(phrases)) == [1.0] * len(phrases), detect.__name__


def rate(detect: Callable[[list[str]], list[float]], texts: list[str]) -> float:
    return sum(detect(texts)) / len(texts)


def test_detectors_fire_on_their_styles_and_not_on_clean_ones() -> None:
    world = build_world(0)
    by_style = {
        style: [row.answer for row in corpus(world, 200, seed=8, style_weights={style: 1.0})] for style in STYLES
    }
    assert rate(hedge, by_style["hedged"]) == 1.0
    assert rate(hedge, by_style["verbose"]) == 1.0
    assert rate(apology, by_style["apologetic"]) == 1.0
    assert rate(refusal, by_style["refusal"]) == 1.0
    assert rate(closer, by_style["closer"]) == 1.0
    assert rate(closer, by_style["verbose"]) == 1.0
    for style in ("concise", "detailed", "list", "filler", "offtopic"):
        for detect in (hedge, apology, refusal, closer):
            assert rate(detect, by_style[style]) == 0.0, (style, detect.__name__)


def test_styles_differ_in_length_and_content() -> None:
    world = build_world(0)

    def mean_words(style: str) -> float:
        rows = corpus(world, 200, seed=9, style_weights={style: 1.0})
        return sum(len(r.answer.split()) for r in rows) / len(rows)

    assert mean_words("concise") < mean_words("detailed") < mean_words("verbose")
    assert min(len(r.answer.split()) for r in corpus(world, 100, seed=9, style_weights={"verbose": 1.0})) >= 40
    lists = corpus(world, 50, seed=9, style_weights={"list": 1.0})
    assert all(r.answer.startswith("first ") and " second " in r.answer for r in lists)


def test_answers_are_about_the_prompt_topic() -> None:
    world = build_world(0)
    for row in corpus(world, 300, seed=10, style_weights={"concise": 1, "detailed": 1, "list": 1}):
        topic = world.topic(row.topic)
        assert row.topic in row.prompt.split()
        assert any(fact in row.answer for fact in topic.facts)


def test_refusals_often_answer_refusal_bait() -> None:
    world = build_world(0)
    rows = corpus(world, 400, seed=11, style_weights={"refusal": 1.0})
    baits = {t.split("{")[0] for t in REFUSAL_BAIT_TEMPLATES}
    share = sum(any(row.prompt.startswith(b) for b in baits) for row in rows) / len(rows)
    assert share == pytest.approx(0.5, abs=0.1)


def test_prompts_cycle_through_every_topic() -> None:
    world = build_world(0)
    batch = prompts(world, len(world.topics), seed=12)
    named = {w for p in batch for w in p.split()} & {t.name for t in world.topics}
    assert named == {t.name for t in world.topics}
    assert prompts(world, 0, seed=12) == []
