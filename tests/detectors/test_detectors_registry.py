"""The registry: declared metadata, run_detectors, fingerprints, families and documentation."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlhf_eval.detectors import (
    FAMILIES,
    REGISTRY,
    UNITS,
    Detector,
    aggregate,
    detector,
    detector_fingerprint,
    evaluate_module_path,
    get_detector,
    run_detectors,
)
from rlhf_eval.detectors.phrases import (
    APOLOGY_PHRASES,
    CLOSER_PHRASES,
    HEDGE_PHRASES,
    REFUSAL_PHRASES,
    compile_phrases,
)
from rlhf_eval.errors import UserInputError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "detectors.md"

# The stored feature names are a contract: other modules, the views and the gate read them.
EXPECTED_FEATURES = {
    "seq_rep_1": (False, "fraction"),
    "seq_rep_2": (False, "fraction"),
    "seq_rep_3": (False, "fraction"),
    "seq_rep_4": (False, "fraction"),
    "distinct_1": (True, "fraction"),
    "distinct_2": (True, "fraction"),
    "compression_ratio": (False, "ratio"),
    "tail_loop": (False, "flag"),
    "length_chars": (None, "characters"),
    "length_words": (None, "words"),
    "md_headers": (None, "count"),
    "md_list_items": (None, "count"),
    "md_bold": (None, "count"),
    "hedge": (False, "flag"),
    "apology": (False, "flag"),
    "refusal": (False, "flag"),
    "closer": (False, "flag"),
}


@pytest.fixture
def scratch_detector() -> Iterator[str]:
    """A temporary detector, removed from the registry afterwards."""
    name = "scratch_word_count"

    @detector(name, higher_is_better=None, unit="count", version=3)
    def scratch(texts: list[str]) -> list[float]:
        """Words per text."""
        return [float(len(t.split())) for t in texts]

    yield name
    REGISTRY.pop(name, None)


def test_registered_features_are_the_contract() -> None:
    got = {name: (d.higher_is_better, d.unit) for name, d in REGISTRY.items()}
    assert got == EXPECTED_FEATURES


def test_metadata_is_well_formed() -> None:
    for name, det in REGISTRY.items():
        assert isinstance(det, Detector)
        assert det.name == name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert det.unit in UNITS
        assert det.aggregation == "mean"
        assert det.version >= 1
        assert det.description, f"{name}: empty description (first docstring line)"


def test_families_partition_the_registry() -> None:
    listed = [name for names in FAMILIES.values() for name in names]
    assert sorted(listed) == sorted(REGISTRY), "each detector belongs to exactly one family"


def test_run_detectors_defaults_to_all_in_registry_order() -> None:
    out = run_detectors(["a b", ""])
    assert list(out) == list(REGISTRY)
    assert all(len(v) == 2 for v in out.values())


def test_run_detectors_keeps_requested_order_and_empty_batch() -> None:
    assert list(run_detectors(["x"], ["tail_loop", "hedge"])) == ["tail_loop", "hedge"]
    assert run_detectors([], ["seq_rep_4"]) == {"seq_rep_4": []}


def test_unknown_detector_suggests_a_name() -> None:
    with pytest.raises(UserInputError, match="Did you mean 'seq_rep_4'"):
        run_detectors(["x"], ["seq_rep4"])
    with pytest.raises(UserInputError, match="Unknown detector"):
        get_detector("nope")


def test_non_string_text_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="text 1 is NoneType"):
        run_detectors(["ok", None], ["length_words"])  # type: ignore[list-item]


def test_decorator_returns_the_function_and_records_metadata(scratch_detector: str) -> None:
    det = REGISTRY[scratch_detector]
    assert det.description == "Words per text."
    assert det.version == 3
    assert det(["a b", ""]) == [2.0, 0.0]
    assert run_detectors(["a b c"], [scratch_detector]) == {scratch_detector: [3.0]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad-Name", "unit": "count"}, "snake_case"),
        ({"name": "ok_name", "unit": "counts"}, "Did you mean 'count'"),
        ({"name": "ok_name", "unit": "count", "aggregation": "median"}, "aggregation"),
        ({"name": "ok_name", "unit": "count", "version": 0}, "version"),
    ],
)
def test_bad_registration_is_refused(kwargs: dict[str, object], message: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        detector(name, higher_is_better=None, **kwargs)  # type: ignore[arg-type]


def test_a_name_cannot_be_taken_twice() -> None:
    def other(texts: list[str]) -> list[float]:
        return [0.0 for _ in texts]

    with pytest.raises(ValueError, match="already registered"):
        detector("seq_rep_4", higher_is_better=False, unit="fraction")(other)
    assert REGISTRY["seq_rep_4"].fn.__name__ == "seq_rep_4"


def test_wrong_number_of_values_is_caught() -> None:
    @detector("scratch_broken", higher_is_better=None, unit="count")
    def scratch_broken(texts: list[str]) -> list[float]:
        """Always one value."""
        return [0.0]

    try:
        with pytest.raises(RuntimeError, match="returned 1 values for 2 texts"):
            run_detectors(["a", "b"], ["scratch_broken"])
    finally:
        REGISTRY.pop("scratch_broken")


def test_fingerprint_is_stable_and_tracks_names_and_versions() -> None:
    base = detector_fingerprint()
    assert base == detector_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", base)

    @detector("scratch_fp", higher_is_better=None, unit="count")
    def scratch_fp(texts: list[str]) -> list[float]:
        """Zero per text."""
        return [0.0 for _ in texts]

    try:
        added = detector_fingerprint()
        assert added != base
        REGISTRY["scratch_fp"] = dataclasses.replace(REGISTRY["scratch_fp"], version=2)
        assert detector_fingerprint() not in {base, added}
    finally:
        REGISTRY.pop("scratch_fp")
    assert detector_fingerprint() == base


def test_aggregate_is_the_mean() -> None:
    # (0.6 + 0.0 + 0.3) / 3 = 0.3
    assert aggregate("seq_rep_2", [0.6, 0.0, 0.3]) == pytest.approx(0.3)
    assert aggregate("seq_rep_2", []) != aggregate("seq_rep_2", [])  # NaN for no samples


def test_evaluate_module_paths_exist() -> None:
    for family in FAMILIES:
        folder = evaluate_module_path(family)
        assert folder == evaluate_module_path(folder.name)
        assert (folder / f"{folder.name}.py").is_file(), "evaluate needs <folder>/<folder>.py"
        assert (folder / "README.md").is_file()
    with pytest.raises(UserInputError, match="Did you mean 'markdown'"):
        evaluate_module_path("markdwn")


@pytest.mark.parametrize(
    "phrases", [HEDGE_PHRASES, APOLOGY_PHRASES, REFUSAL_PHRASES, CLOSER_PHRASES], ids=lambda p: str(len(p))
)
def test_phrase_lists_are_normalised_and_match_their_variants(phrases: tuple[str, ...]) -> None:
    pattern = compile_phrases(phrases)
    assert len(set(phrases)) == len(phrases), "duplicate phrase"
    for phrase in phrases:
        assert phrase == " ".join(phrase.lower().split()), f"{phrase!r}: write lowercase with single spaces"
        assert "\u2019" not in phrase, f"{phrase!r}: write the straight apostrophe; ’ is matched anyway"
        variants = [phrase, phrase.upper(), phrase.replace("'", "\u2019"), phrase.replace(" ", "\n  ")]
        for text in variants:
            assert pattern.search(f"Well. {text}. Done"), f"{text!r} should match"


def test_every_detector_is_documented() -> None:
    """Each detector has a docstring with a >>> example and a row in docs/detectors.md."""
    docs = DOCS.read_text(encoding="utf-8") if DOCS.exists() else ""
    problems = []
    for name, det in REGISTRY.items():
        if ">>>" not in (det.fn.__doc__ or ""):
            problems.append(f"{det.fn.__module__}.{det.fn.__qualname__}: add a '>>>' example to its docstring")
        if f"| `{name}` |" not in docs:
            direction = {True: "higher is better", False: "lower is better", None: "none"}[det.higher_is_better]
            problems.append(
                f"docs/detectors.md: add the line\n| `{name}` | {det.description} | {det.unit} | {direction} "
                "| <edge cases> | <source> |"
            )
    assert not problems, "\n".join(problems)
