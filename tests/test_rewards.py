"""Scorer specs, callables, labels, and ensemble aggregation."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlhf_eval.errors import UserInputError
from rlhf_eval.models import LoadOptions
from rlhf_eval.records import Prompt
from rlhf_eval.rewards import (
    EnsembleMode,
    aggregate,
    build_scorer,
    member_stats,
    parse_ensemble,
    parse_scorer_spec,
    resolve_label,
)

PROMPTS = [Prompt("a", 0, text="q1"), Prompt("b", 1, text="q2")]


def write_scorer(tmp_path: Path, body: str, name: str = "score.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def test_spec_options_and_callable_detection(tmp_path: Path) -> None:
    spec = parse_scorer_spec("org/rm@label=positive,scale=2")
    assert spec.target == "org/rm" and spec.options_dict == {"label": "positive", "scale": 2}
    assert not spec.is_callable
    assert parse_scorer_spec("pkg.module:fn").is_callable
    assert parse_scorer_spec("dir/file.py:fn").is_callable
    with pytest.raises(UserInputError, match="is not key=value"):
        parse_scorer_spec("rm@label=positive,oops")


def test_callable_scorer_from_a_file_with_kwargs(tmp_path: Path) -> None:
    path = write_scorer(
        tmp_path, "def length(prompts, responses, scale=1.0):\n    return [scale * len(r) for r in responses]\n"
    )
    scorer = build_scorer(f"{path}:length@scale=0.5", LoadOptions())
    assert scorer.kind == "callable"
    assert scorer.score(PROMPTS, ["abcd", "ab"]) == [2.0, 1.0]
    # same source and args -> same fingerprint; other args -> another one
    assert build_scorer(f"{path}:length@scale=0.5", LoadOptions()).scorer_id == scorer.scorer_id
    assert build_scorer(f"{path}:length@scale=2", LoadOptions()).scorer_id != scorer.scorer_id


def test_callable_fingerprint_follows_its_source(tmp_path: Path) -> None:
    path = write_scorer(tmp_path, "def f(p, r):\n    return [1.0] * len(r)\n")
    first = build_scorer(f"{path}:f", LoadOptions()).scorer_id
    path.write_text("def f(p, r):\n    return [2.0] * len(r)\n")
    assert build_scorer(f"{path}:f", LoadOptions()).scorer_id != first


def test_nan_and_inf_become_none_and_bad_outputs_are_errors(tmp_path: Path) -> None:
    path = write_scorer(
        tmp_path,
        "def nan(p, r):\n    return [float('nan'), float('inf')]\n"
        "def short(p, r):\n    return [1.0]\n"
        "def boom(p, r):\n    raise ValueError('no')\n"
        "def text(p, r):\n    return ['x', 'y']\n",
    )
    assert build_scorer(f"{path}:nan", LoadOptions()).score(PROMPTS, ["a", "b"]) == [None, None]
    with pytest.raises(UserInputError, match="returned 1 scores for 2 responses"):
        build_scorer(f"{path}:short", LoadOptions()).score(PROMPTS, ["a", "b"])
    with pytest.raises(UserInputError, match="scorer raised ValueError: no"):
        build_scorer(f"{path}:boom", LoadOptions()).score(PROMPTS, ["a", "b"])
    with pytest.raises(UserInputError, match="must return floats"):
        build_scorer(f"{path}:text", LoadOptions()).score(PROMPTS, ["a", "b"])


def test_bad_callable_specs(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="scorer file not found"):
        build_scorer(f"{tmp_path}/none.py:f", LoadOptions())
    path = write_scorer(tmp_path, "x = 1\n")
    with pytest.raises(UserInputError, match="'f' is not a callable"):
        build_scorer(f"{path}:f", LoadOptions())
    with pytest.raises(UserInputError, match="cannot import module 'no_such_module_xyz'"):
        build_scorer("no_such_module_xyz:f", LoadOptions())


def test_label_resolution() -> None:
    two = SimpleNamespace(num_labels=2, id2label={0: "negative", 1: "positive"})
    assert resolve_label(Path("rm"), SimpleNamespace(num_labels=1, id2label={}), None) == 0
    assert resolve_label(Path("rm"), two, "positive") == 1
    with pytest.raises(
        UserInputError, match=r"2 labels \(negative, positive\) and none was chosen; .*rm@label=positive"
    ):
        resolve_label(Path("rm"), two, None)
    with pytest.raises(UserInputError, match="no label 'neutral'"):
        resolve_label(Path("rm"), two, "neutral")


def test_ensemble_modes_against_hand_computation() -> None:
    members = [[1.0, 4.0, None], [3.0, 0.0, 1.0]]
    stats = [(1.0, 2.0), (0.0, 1.0)]
    # sample 0: z = ((1-1)/2, (3-0)/1) = (0, 3); sample 1: z = (1.5, 0); sample 2: a member is missing
    assert aggregate(members, stats, EnsembleMode("mean")) == [1.5, 0.75, None]
    assert aggregate(members, stats, EnsembleMode("min")) == [0.0, 0.0, None]
    # uwo: mean - 0.5 * population variance; var(0, 3) = 2.25, var(1.5, 0) = 0.5625
    uwo = aggregate(members, stats, EnsembleMode("uwo", 0.5))
    assert uwo[0] == pytest.approx(1.5 - 0.5 * 2.25) and uwo[1] == pytest.approx(0.75 - 0.5 * 0.5625)


def test_member_stats_and_parse_ensemble() -> None:
    mean, std = member_stats([1.0, 3.0, None])
    assert (mean, std) == (2.0, 1.0)
    assert member_stats([5.0, 5.0]) == (5.0, 1.0)  # constant member: shift only
    assert parse_ensemble("uwo") == EnsembleMode("uwo", 0.5)
    with pytest.raises(UserInputError, match="unknown mode"):
        parse_ensemble("median")
    with pytest.raises(UserInputError, match="only uwo takes a lambda"):
        parse_ensemble("min:2")
    assert math.isfinite(parse_ensemble("uwo:0").lam)


def test_reward_model_uses_its_own_chat_template_and_counts_truncation(tmp_path: Path) -> None:
    from rlhf_eval import tiny

    template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    words = ["user", "assistant", ":", "why", "blue", "sky", "light"]
    tok = tiny.build_word_tokenizer(tmp_path / "tok", words, chat_template=template)
    rm = tiny.build_reward_model(tmp_path / "rm", tok, max_positions=12)
    scorer = build_scorer(str(rm), LoadOptions())
    prompt = Prompt("p", 0, text="why blue sky")
    scores = scorer.score([prompt, prompt], ["light", " ".join(["light"] * 20)])
    assert all(isinstance(s, float) for s in scores)
    fn = scorer.score_fn
    encoded = fn.tokenizer.decode(fn.encode(prompt, "light"))  # type: ignore[attr-defined]
    assert encoded == "user : why blue sky assistant : light"
    assert fn.truncated == 1  # type: ignore[attr-defined]  # the 20-word response exceeded 12 positions


def test_reward_model_scores_do_not_depend_on_batching(tmp_path: Path) -> None:
    from rlhf_eval import tiny

    tok = tiny.build_word_tokenizer(tmp_path / "tok", ["a", "b", "c", "d"])
    rm = tiny.build_reward_model(tmp_path / "rm", tok)
    prompts = [Prompt(str(i), i, text="a b") for i in range(4)]
    responses = ["c", "c d c d", "d", "a b c d a b"]
    together = build_scorer(str(rm), LoadOptions()).score(prompts, responses)
    alone = [build_scorer(str(rm), LoadOptions()).score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    assert together == pytest.approx(alone, abs=1e-5)
