"""Invariants of the detectors over arbitrary text (hypothesis)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_eval.detectors import REGISTRY, run_detectors

# No example database: nothing is written into the checkout.
settings.register_profile("detectors", database=None, deadline=None, max_examples=150)
PROFILE = settings.get_profile("detectors")

FLAGS = [name for name, det in REGISTRY.items() if det.unit == "flag"]
COUNTS = [name for name, det in REGISTRY.items() if det.unit in ("count", "characters", "words")]
FRACTIONS = [name for name, det in REGISTRY.items() if det.unit == "fraction"]

# Arbitrary Unicode, lone surrogates included (text decoded from malformed JSON can hold them).
any_text = st.text(alphabet=st.characters(exclude_categories=[]), max_size=300)
# Few distinct words, so that n-grams repeat often.
wordy_text = st.lists(st.sampled_from(["a", "b", "c", "Ü", "日本", "a."]), max_size=40).map(" ".join)
texts = st.one_of(any_text, wordy_text)


@PROFILE
@given(st.lists(texts, max_size=5))
def test_every_detector_runs_on_any_text(batch: list[str]) -> None:
    out = run_detectors(batch)
    assert set(out) == set(REGISTRY)
    for name, values in out.items():
        assert len(values) == len(batch)
        assert all(isinstance(v, float) and math.isfinite(v) and v >= 0.0 for v in values), name


@PROFILE
@given(texts)
def test_fractions_lie_in_unit_interval(text: str) -> None:
    out = run_detectors([text], FRACTIONS)
    for name, (v,) in out.items():
        assert 0.0 <= v <= 1.0, f"{name} = {v} for {text!r}"


@PROFILE
@given(texts)
def test_seq_rep_and_distinct_sum_to_one_where_ngrams_exist(text: str) -> None:
    words = len(text.split())
    out = run_detectors([text], ["seq_rep_1", "seq_rep_2", "distinct_1", "distinct_2"])
    for n in (1, 2):
        rep, dist = out[f"seq_rep_{n}"][0], out[f"distinct_{n}"][0]
        if words >= n:
            assert math.isclose(rep + dist, 1.0, abs_tol=1e-12)
        else:
            assert rep == dist == 0.0


@PROFILE
@given(texts)
def test_flags_are_zero_or_one_and_counts_are_whole(text: str) -> None:
    out = run_detectors([text], FLAGS + COUNTS)
    for name in FLAGS:
        assert out[name][0] in (0.0, 1.0)
    for name in COUNTS:
        assert out[name][0] == int(out[name][0])


@PROFILE
@given(st.lists(texts, min_size=1, max_size=4))
def test_values_depend_on_each_text_alone(batch: list[str]) -> None:
    together = run_detectors(batch)
    for i, text in enumerate(batch):
        alone = run_detectors([text])
        assert {k: v[i] for k, v in together.items()} == {k: v[0] for k, v in alone.items()}


@PROFILE
@given(wordy_text, st.lists(st.sampled_from(["x", "y", "z", "ß"]), min_size=1, max_size=5).map(" ".join))
def test_three_copies_of_a_span_at_the_end_is_a_tail_loop(prefix: str, span: str) -> None:
    assert run_detectors([f"{prefix} {span} {span} {span}"], ["tail_loop"]) == {"tail_loop": [1.0]}


@PROFILE
@given(texts)
def test_repeated_ngram_count_never_grows_with_n(text: str) -> None:
    # Every repeated n-gram starts a repeated (n-1)-gram, so repeats of (n-1)-grams are at least
    # repeats of n-grams: (total_n - unique_n) <= (total_{n-1} - unique_{n-1}).
    words = text.split()
    out = run_detectors([text], ["seq_rep_1", "seq_rep_2", "seq_rep_3", "seq_rep_4"])
    for n in (2, 3, 4):
        total_n, total_m = len(words) - n + 1, len(words) - n + 2
        if total_n <= 0:
            continue
        repeats_n = out[f"seq_rep_{n}"][0] * total_n
        repeats_m = out[f"seq_rep_{n - 1}"][0] * total_m
        assert repeats_n <= repeats_m + 1e-9


BOUNDED_UNITS = {"flag", "count", "characters", "words", "fraction", "ratio"}


def test_every_detector_has_its_bound_checked_here() -> None:
    """A detector with a new unit needs its bound stated in this file."""
    for name, det in REGISTRY.items():
        assert det.unit in BOUNDED_UNITS, f"{name}: unit {det.unit!r} has no property here; add one and add the unit"


@PROFILE
@given(texts)
def test_lengths_markdown_counts_and_compression_stay_in_their_bounds(text: str) -> None:
    out = {name: v for name, (v,) in run_detectors([text]).items()}
    assert out["length_chars"] == len(text) and out["length_words"] == len(text.split())
    lines = text.count("\n") + 1  # "^" matches at the start and after each "\n"
    assert out["md_headers"] <= lines and out["md_list_items"] <= lines
    assert out["md_bold"] <= len(text) // 5  # a bold span takes 4 marker characters and at least 1 more
    # Empty text scores 0; otherwise deflate never shrinks data more than 1032:1, zlib's framing aside.
    assert (out["compression_ratio"] == 0.0) == (text == "") and out["compression_ratio"] < 1032
