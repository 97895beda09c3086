"""Batch planning by length: every row planned once, budgets kept, padding bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rlhf_eval.batching import MAX_PADDING, MIN_BATCH_TOKENS, length_batches
from rlhf_eval.kl import KLItem, plan_kl_batches

LENGTHS = st.lists(st.integers(min_value=1, max_value=700), max_size=300)


def check_padding(batch_lengths: list[list[int]]) -> None:
    """A batch that kept a row despite its padding was below MIN_BATCH_TOKENS before it."""
    for lengths in batch_lengths:
        for rows in range(2, len(lengths) + 1):
            kept = lengths[:rows]
            if rows * max(kept) > (1 + MAX_PADDING) * sum(kept):
                assert sum(kept[:-1]) < MIN_BATCH_TOKENS


@given(LENGTHS, st.integers(min_value=64, max_value=20_000))
def test_length_batches_plan_every_row_once_within_budget_and_padding(lengths: list[int], budget: int) -> None:
    batches = length_batches(lengths, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)  # longest first, across and within batches
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget
    check_padding([[lengths[i] for i in b] for b in batches])
    assert length_batches(lengths, budget) == batches


@given(st.lists(st.tuples(st.integers(1, 200), st.integers(1, 300)), max_size=200), st.integers(256, 20_000))
def test_kl_batches_keep_both_budgets_and_bound_padding(shapes: list[tuple[int, int]], budget: int) -> None:
    vocab, logit_budget = 50, 2_000_000
    items = [KLItem(f"s{i}", (i,) * p, (8,) * r) for i, (p, r) in enumerate(shapes)]  # every prompt distinct
    batches = plan_kl_batches(items, budget, vocab, logit_budget)
    assert sorted(item.sample_id for b in batches for item in b) == sorted(item.sample_id for item in items)
    for batch in batches:
        width = max(len(i.prompt_ids) + len(i.response_ids) for i in batch)
        resp = max(len(i.response_ids) for i in batch)
        assert len(batch) == 1 or (len(batch) * width <= budget and len(batch) * (resp + 1) * vocab <= logit_budget)
    check_padding([[len(i.prompt_ids) + len(i.response_ids) for i in b] for b in batches])


@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(1, 120), st.integers(1, 300)), max_size=200),
    st.integers(256, 20_000),
)
def test_kl_batches_of_repeated_prompts_hold_whole_prompts(shapes: list[tuple[int, int, int]], budget: int) -> None:
    """Samples of one prompt all land in the batch of their prompt (forwarded once there); the
    distinct prompts of a batch keep the token budget and bounded padding, its samples the
    budget in real tokens, unless a single prompt exceeds it alone."""
    lengths: dict[int, int] = {}
    items = []
    for i, (prompt, length, response) in enumerate(shapes):
        width = lengths.setdefault(prompt, length)  # one prompt, one length
        items.append(KLItem(f"s{i}", (prompt,) * width, (8,) * response))
    if len({item.prompt_ids for item in items}) == len(items):
        return  # no prompt repeats: the test above
    batches = plan_kl_batches(items, budget, 50, 2_000_000)
    assert sorted(item.sample_id for b in batches for item in b) == sorted(item.sample_id for item in items)
    home = {item.prompt_ids: n for n, batch in enumerate(batches) for item in batch}
    assert all(home[item.prompt_ids] == n for n, batch in enumerate(batches) for item in batch)
    for batch in batches:
        prompts = {item.prompt_ids for item in batch}
        real = sum(len(item.prompt_ids) + len(item.response_ids) for item in batch)
        assert len(prompts) == 1 or real <= budget
        assert len(prompts) == 1 or len(prompts) * max(len(p) for p in prompts) <= budget
    assert plan_kl_batches(items, budget, 50, 2_000_000) == batches
