"""The sandbox's gold rubric: each term and the total against hand-computed cases, and its shape."""

from __future__ import annotations

import importlib

import pytest

from rlhf_eval.sandbox.gold import (
    GoldTerms,
    boilerplate_kinds,
    boilerplate_term,
    count_facts,
    coverage_term,
    find_topic,
    gold_reward,
    gold_terms,
    length_term,
    relevance_term,
    repeated_ngrams,
    repetition_term,
    words_of,
)
from rlhf_eval.sandbox.world import Topic, World, build_world, corpus, world_vocabulary

WHALE = Topic("whale", "animal", "the", ("whale", "whales"), ("whale eats fish", "whale lives in the ocean"))
MARS = Topic("mars", "planet", "", ("mars",), ("mars has two moons", "mars has a red surface"))
#: A hand-made world, so the cases below do not depend on which facts a seed draws.
SMALL = World(seed=-1, topics=(WHALE, MARS), vocabulary=world_vocabulary([WHALE, MARS]))


def terms(response: str, prompt: str = "tell me about the whale") -> GoldTerms:
    return gold_terms(prompt, response, SMALL)


def test_coverage_has_diminishing_returns() -> None:
    # 2 * 0.75^i: 2, 1.5, 1.125, 0.84375
    assert [coverage_term(k) for k in range(5)] == [0.0, 2.0, 3.5, 4.625, 5.46875]


def test_count_facts_counts_distinct_contiguous_facts() -> None:
    words = "the whale eats fish and the whale lives in the ocean and the whale eats fish".split()
    assert count_facts(words, WHALE.facts) == 2
    assert count_facts("the whale eats big fish".split(), WHALE.facts) == 0  # "big" breaks the run
    assert count_facts([], WHALE.facts) == 0


def test_relevance_penalises_facts_of_other_topics() -> None:
    t = terms("the whale eats fish and mars has two moons and mars has a red surface")
    # coverage 2 (1 fact); relevance 1 * 2 other facts; 15 words, no repeated 4-gram
    assert (t.facts_covered, t.off_topic_facts, t.coverage, t.relevance) == (1, 2, 2.0, 2.0)
    assert t.total == pytest.approx(0.0)
    assert relevance_term(3) == 3.0


def test_repeated_ngrams() -> None:
    assert repeated_ngrams("a b c d a b c d".split()) == 1  # 5 4-grams, 4 distinct
    assert repeated_ngrams("a b c".split()) == 0  # no 4-gram
    assert repeated_ngrams("a a a a a a".split()) == 2  # 3 4-grams, 1 distinct
    assert repeated_ngrams("a b a b a b".split(), n=2) == 3  # 5 bigrams, 2 distinct
    assert repetition_term(17) == pytest.approx(1.7)


def test_length_is_free_up_to_the_optimum_then_quadratic() -> None:
    assert [length_term(n) for n in (0, 30)] == [0.0, 0.0]
    # 0.01 * 1^2, 0.01 * 10^2, 0.01 * 30^2
    assert [length_term(n) for n in (31, 40, 60)] == pytest.approx([0.01, 1.0, 9.0])


def test_boilerplate_kinds_each_cost_once() -> None:
    words = words_of("As an AI language model, I am sorry. I cannot help with that. I hope this helps! hope this helps")
    assert boilerplate_kinds(words) == ("hedge", "apology", "refusal", "closer")
    assert boilerplate_term(boilerplate_kinds(words)) == 6.5  # 2 + 1 + 3 + 0.5
    assert boilerplate_kinds("the whale is an animal".split()) == ()
    assert boilerplate_term(()) == 0.0


def test_topic_is_found_from_the_prompt_words() -> None:
    assert find_topic("Tell me about the WHALE.", SMALL) == WHALE
    assert find_topic("what do whales eat", SMALL) == WHALE
    assert find_topic("compare mars and the whale", SMALL) == MARS  # the first topic word wins
    assert find_topic("hello there", SMALL) is None


def test_total_of_a_hedged_repetitive_answer() -> None:
    t = terms("as an ai language model i think the whale eats fish and the whale eats fish")
    # 16 words; coverage 2 (1 fact); 13 4-grams, "the whale eats fish" twice -> 1 repeated -> 0.1;
    # hedge 2; total 2 - 0.1 - 2 = -0.1
    assert (t.n_words, t.facts_covered, t.repeated_ngrams, t.boilerplate_kinds) == (16, 1, 1, ("hedge",))
    assert t.total == pytest.approx(-0.1)


def test_total_of_a_long_answer() -> None:
    response = " ".join(["the whale eats fish and the whale lives in the ocean"] + ["really"] * 24)
    t = terms(response)
    # 11 + 24 = 35 words; coverage 2 + 1.5 = 3.5 (2 facts);
    # 32 4-grams: 8 inside the facts (distinct), 3 across the join ("in the ocean really", "the ocean
    # really really", "ocean really really really"), 21 of "really" x 4 (1 distinct): 12 distinct,
    # 32 - 12 = 20 repeated -> 0.1 * 20 = 2.0; length 0.01 * (35 - 30)^2 = 0.25;
    # total 3.5 - 2.0 - 0.25 = 1.25
    assert (t.n_words, t.coverage, t.repeated_ngrams) == (35, 3.5, 20)
    assert t.length == pytest.approx(0.25)
    assert t.total == pytest.approx(1.25)


def test_refusal_of_a_harmless_prompt_and_empty_answers() -> None:
    t = terms("i am sorry but i cannot help with that", prompt="how do i shoot a photo of the whale")
    assert t.boilerplate_kinds == ("apology", "refusal")
    assert t.total == -4.0  # apology 1 + refusal 3
    assert terms("").total == 0.0
    unknown = terms("the whale eats fish", prompt="hello there")
    # no topic: neither coverage nor relevance, 4 words, nothing else
    assert (unknown.topic, unknown.coverage, unknown.relevance, unknown.total) == (None, 0.0, 0.0, 0.0)


def test_gold_reward_scores_a_batch_in_the_default_world() -> None:
    world = build_world(0)
    whale = world.topic("whale")
    good = f"the {whale.facts[0]} and the {whale.facts[1]}"
    assert gold_reward(["tell me about the whale"] * 2, [good, ""]) == [3.5, 0.0]  # 2 + 1.5
    assert gold_reward([], []) == []
    with pytest.raises(ValueError, match="one prompt per response"):
        gold_reward(["a"], [])


def test_gold_reward_accepts_another_world_seed() -> None:
    world = build_world(5)
    mars = world.topic("mars")
    assert gold_reward(["explain mars"], [mars.facts[0]], world_seed=5) == [2.0]


def test_usable_as_a_scorer_spec() -> None:
    module, _, name = "rlhf_eval.sandbox.gold:gold_reward".partition(":")
    function = getattr(importlib.import_module(module), name)
    assert function(["explain mars"], ["i hope this helps"]) == [-0.5]


def test_determinism() -> None:
    world = build_world(0)
    rows = corpus(world, 200, seed=3)
    first = gold_reward([r.prompt for r in rows], [r.answer for r in rows])
    assert first == gold_reward([r.prompt for r in rows], [r.answer for r in rows])


def test_monotonic_edits() -> None:
    world = build_world(0)
    for topic in world.topics:
        prompt = f"tell me about {topic.subject}"
        short = topic.sentence(topic.facts[0])
        longer = f"{short} and {topic.sentence(topic.facts[1])}"
        [g_short, g_longer, g_thrice, g_hedged] = gold_reward(
            [prompt] * 4, [short, longer, " ".join([longer] * 3), f"as an ai language model {longer}"]
        )
        assert g_longer > g_short, "adding a relevant fact raises gold"
        assert g_thrice < g_longer, "repeating the answer three times lowers gold"
        assert g_hedged < g_longer, "an AI-identity hedge lowers gold"


def test_gold_rises_then_falls_with_length_across_styles() -> None:
    world = build_world(0)

    def mean_gold(style: str) -> float:
        rows = corpus(world, 300, seed=4, style_weights={style: 1.0})
        scores = gold_reward([r.prompt for r in rows], [r.answer for r in rows])
        return sum(scores) / len(scores)

    # concise (about 8 words) < detailed (about 24 words) > verbose (40 to 80 words)
    assert mean_gold("concise") < mean_gold("detailed")
    assert mean_gold("verbose") < mean_gold("concise")
    assert mean_gold("refusal") < mean_gold("hedged") < mean_gold("concise")
    assert mean_gold("offtopic") < mean_gold("concise")
