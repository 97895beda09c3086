"""Bradley–Terry and Plackett–Luce fits against brute-force likelihood maximization on a grid,
against each other (Plackett–Luce on pairs is Bradley–Terry), and against known strengths; the
prompt-cluster bootstrap against literal resampling; the pairwise label file's messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rlhf_eval.analysis.ranking import (
    DEFAULT_PENALTY,
    Comparisons,
    PairwiseLabel,
    bootstrap_bradley_terry,
    bradley_terry_ranking,
    combine_comparisons,
    fit_bradley_terry,
    fit_plackett_luce,
    labels_to_comparisons,
    pairwise_from_scores,
    plackett_luce_log_likelihood,
    rankings_from_scores,
    read_pairwise_labels,
    win_matrix,
    write_pairwise_labels,
)
from rlhf_eval.analysis.resample import percentile_interval, prompt_resamples
from rlhf_eval.errors import UserInputError

GRID_STEP = 0.01


def grid() -> tuple[np.ndarray, np.ndarray]:
    """θ_1, θ_2 over [−6, 6]² in steps of 0.01 (θ_0 = 0 is the anchor)."""
    axis = np.arange(-600, 601) * GRID_STEP
    return np.meshgrid(axis, axis, indexing="ij")


def grid_argmax(objective: np.ndarray, t1: np.ndarray, t2: np.ndarray) -> tuple[float, float, float]:
    best = np.unravel_index(np.argmax(objective), objective.shape)
    return float(objective[best]), float(t1[best]), float(t2[best])


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


# --------------------------------------------------------------------------- Bradley–Terry


# (a, b, outcome). "connected": every item has won and lost (a tie counts both ways), so the MLE
# exists. "separated": item 2 wins all four of its comparisons, so without the penalty θ_2 = +∞.
BT_CASES = {
    "connected": ([0, 1, 1, 2, 2, 0], [1, 0, 2, 0, 1, 2], [1.0, 1.0, 0.5, 1.0, 0.0, 1.0]),
    "separated": ([2, 2, 0, 1, 0, 2], [0, 0, 2, 0, 1, 1], [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("case", sorted(BT_CASES))
@pytest.mark.parametrize("penalty", [DEFAULT_PENALTY, 0.5])
def test_bradley_terry_matches_grid_maximum(case: str, penalty: float) -> None:
    a, b, outcome = BT_CASES[case]
    t1, t2 = grid()
    theta = [np.zeros_like(t1), t1, t2]
    objective = -0.5 * penalty * (t1**2 + t2**2)
    for i, j, y in zip(a, b, outcome, strict=True):
        diff = theta[i] - theta[j]
        objective = objective + y * log_sigmoid(diff) + (1 - y) * log_sigmoid(-diff)
    best, best_t1, best_t2 = grid_argmax(objective, t1, t2)

    fit = fit_bradley_terry(a, b, outcome, n_items=3, anchor=0, penalty=penalty)
    assert fit.converged
    assert fit.theta[0] == 0.0
    assert fit.objective >= best - 1e-12
    assert fit.objective - best < 1e-3  # the grid's best point is within a cell of the optimum
    assert fit.theta[1] == pytest.approx(best_t1, abs=GRID_STEP)
    assert fit.theta[2] == pytest.approx(best_t2, abs=GRID_STEP)


def test_plain_mle_where_it_exists_and_a_clear_error_where_not() -> None:
    a, b, outcome = BT_CASES["connected"]
    plain = fit_bradley_terry(a, b, outcome, n_items=3, penalty=0.0)
    penalized = fit_bradley_terry(a, b, outcome, n_items=3)
    assert plain.log_likelihood >= penalized.log_likelihood
    assert plain.theta == pytest.approx(penalized.theta, abs=0.05)  # the default penalty barely moves it

    a, b, outcome = BT_CASES["separated"]
    with pytest.raises(ValueError, match="MLE does not exist.*penalty > 0"):
        fit_bradley_terry(a, b, outcome, n_items=3, penalty=0.0)
    with pytest.raises(ValueError, match="MLE does not exist"):  # never compared with the others
        fit_bradley_terry([0, 1], [1, 0], [1.0, 1.0], n_items=3, penalty=0.0)
    fit = fit_bradley_terry(a, b, outcome, n_items=3)
    assert fit.converged and 2.0 < fit.theta[2] < 8.0  # finite, and far above the others
    isolated = fit_bradley_terry([0, 1], [1, 0], [1.0, 1.0], n_items=3)
    assert isolated.theta[2] == 0.0  # no evidence: the penalty keeps it level with the anchor


def test_bradley_terry_recovers_known_strengths() -> None:
    rng = np.random.default_rng(1)
    truth = np.array([0.0, 0.8, -0.5, 1.5])
    a = rng.integers(0, 4, size=20_000)
    b = (a + rng.integers(1, 4, size=a.size)) % 4
    outcome = (rng.random(a.size) < 1 / (1 + np.exp(-(truth[a] - truth[b])))).astype(float)
    fit = fit_bradley_terry(a, b, outcome, n_items=4, anchor=0)
    # about 10,000 comparisons per item: standard errors near 0.03, so 0.1 is over three of them
    assert np.abs(np.array(fit.theta) - truth).max() < 0.1
    shifted = fit_bradley_terry(a, b, outcome, n_items=4, anchor=3, penalty=0.0)
    plain = fit_bradley_terry(a, b, outcome, n_items=4, anchor=0, penalty=0.0)
    assert np.array(shifted.theta) == pytest.approx(np.array(plain.theta) - plain.theta[3], abs=1e-8)


def test_ties_count_as_half_a_win() -> None:
    only_ties = fit_bradley_terry([0, 1, 0], [1, 0, 1], [0.5, 0.5, 0.5], n_items=2, penalty=0.0)
    assert only_ties.theta == (0.0, 0.0)
    # Item 1 against the anchor: one win, one loss, two ties -> 1 + 2·½ = 2 wins in 4, θ_1 = 0.
    assert fit_bradley_terry([1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 0.5, 0.5], 2, penalty=0.0).theta[1] == pytest.approx(0)
    # One win and one tie of item 1: 1.5 wins in 2, so σ(θ_1) = 1.5 / 2 = 3/4 and θ_1 = log 3;
    # log-likelihood 1.5·log ¾ + 0.5·log ¼.
    fit = fit_bradley_terry([1, 0], [0, 1], [1.0, 0.5], n_items=2, penalty=0.0)
    assert fit.theta[1] == pytest.approx(math.log(3), abs=1e-10)
    assert fit.log_likelihood == pytest.approx(1.5 * math.log(0.75) + 0.5 * math.log(0.25), abs=1e-12)
    assert win_matrix([1, 0], [0, 1], [1.0, 0.5], 2).tolist() == [[0.0, 0.5], [1.5, 0.0]]


def test_weights_equal_repetition() -> None:
    a, b, outcome = BT_CASES["connected"]
    weighted = fit_bradley_terry(a, b, outcome, 3, weights=[2, 1, 0, 3, 1, 1])
    repeated = fit_bradley_terry([0, 0, 1, 2, 2, 2, 2, 0], [1, 1, 0, 0, 0, 0, 1, 2], [1, 1, 1, 1, 1, 1, 0, 1], 3)
    assert weighted.theta == pytest.approx(repeated.theta, abs=1e-9)


def test_bad_comparisons_are_rejected() -> None:
    with pytest.raises(ValueError, match="itself"):
        fit_bradley_terry([0], [0], [1.0], 2)
    with pytest.raises(ValueError, match="0..1"):
        fit_bradley_terry([0], [2], [1.0], 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_bradley_terry([0], [1], [2.0], 2)
    with pytest.raises(ValueError, match="anchor=5"):
        fit_bradley_terry([0], [1], [1.0], 2, anchor=5)


# --------------------------------------------------------------------------- comparisons from scores


def test_pairwise_from_scores_hand_matrix() -> None:
    scores = np.array(
        [
            [1.0, 2.0, 0.0],
            [1.0, np.nan, 0.0],  # ties checkpoint 0 on prompt 0; missing on prompt 1
            [0.5, 3.0, np.nan],
        ]
    )
    c = pairwise_from_scores(scores, prompt_ids=["x", "y", "z"])
    assert c.a.tolist() == [0, 0, 1, 0, 0]
    assert c.b.tolist() == [1, 2, 2, 2, 1]
    assert c.outcome.tolist() == [0.5, 1.0, 1.0, 0.0, 0.5]
    assert c.prompt.tolist() == [0, 0, 0, 1, 2]
    assert c.prompt_ids == ("x", "y", "z")
    assert c.a.dtype == np.int64 and c.outcome.dtype == np.float64
    assert len(pairwise_from_scores(np.full((3, 2), np.nan))) == 0


# --------------------------------------------------------------------------- bootstrap


def synthetic_scores(n_prompts: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prompt_effect = rng.normal(size=n_prompts)  # shared by every checkpoint: comparisons correlate
    quality = np.array([0.0, 0.3, -0.2, 0.6])
    return quality[:, None] + prompt_effect[None, :] + rng.normal(size=(4, n_prompts))


LABELS = ["ref", "ckpt-1", "ckpt-2", "ckpt-3"]


def test_bootstrap_intervals_contain_the_estimate_shrink_and_repeat() -> None:
    small = bradley_terry_ranking(synthetic_scores(40, 0), LABELS, anchor="ref", replicates=200, seed=3)
    large = bradley_terry_ranking(synthetic_scores(640, 0), LABELS, anchor="ref", replicates=200, seed=3)
    for ranking in (small, large):
        assert ranking.theta[0] == ranking.low[0] == ranking.high[0] == 0.0
        assert ranking.win_probability[0] == 0.5
        for theta, low, high in zip(ranking.theta, ranking.low, ranking.high, strict=True):
            assert low <= theta <= high
        assert ranking.win_probability == pytest.approx([1 / (1 + math.exp(-t)) for t in ranking.theta])
    small_widths = np.subtract(small.high, small.low)[1:]
    large_widths = np.subtract(large.high, large.low)[1:]
    assert np.all(large_widths < 0.5 * small_widths)  # 16 times the prompts: about a quarter the width
    assert large.order == ("ckpt-3", "ckpt-1", "ref", "ckpt-2")
    assert large.rank("ref") == 3
    assert large.n_prompts == 640 and large.n_comparisons == 6 * 640

    again = bradley_terry_ranking(synthetic_scores(40, 0), LABELS, anchor=0, replicates=200, seed=3)
    assert again == small
    other = bradley_terry_ranking(synthetic_scores(40, 0), LABELS, anchor=0, replicates=200, seed=4)
    assert other.theta == small.theta and other.low != small.low


def test_bootstrap_resamples_whole_prompts() -> None:
    """Each replicate is the fit on the literal concatenation of the drawn prompts' comparisons."""
    scores = synthetic_scores(12, 5)
    comparisons = pairwise_from_scores(scores)
    ranking = bootstrap_bradley_terry(comparisons, LABELS, anchor="ckpt-2", replicates=40, seed=9, level=0.8)
    replicate_thetas = []
    for draw in prompt_resamples(12, replicates=40, seed=9):
        rows = np.concatenate([np.flatnonzero(comparisons.prompt == p) for p in draw])
        fit = fit_bradley_terry(comparisons.a[rows], comparisons.b[rows], comparisons.outcome[rows], 4, anchor=2)
        replicate_thetas.append(fit.theta)
    expected = [percentile_interval(column, 0.8) for column in np.array(replicate_thetas).T]
    assert ranking.low == pytest.approx([low for low, _ in expected], abs=1e-9)
    assert ranking.high == pytest.approx([high for _, high in expected], abs=1e-9)
    assert ranking.anchor == "ckpt-2" and ranking.theta[2] == 0.0


# --------------------------------------------------------------------------- external labels


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_labels_round_trip(tmp_path: Path) -> None:
    labels = [
        PairwiseLabel("p1", "ckpt-1", "ref", "a"),
        PairwiseLabel("p2", "ref", "ckpt-2", "tie"),
        PairwiseLabel("p1", "ckpt-2", "ckpt-1", "b"),
    ]
    path = tmp_path / "labels.jsonl"
    write_pairwise_labels(path, labels)
    read = read_pairwise_labels(path)
    assert read == labels
    assert read[2].where == f"{path}:3"

    rows = [
        {"prompt_id": 7, "a": "ckpt-1", "b": "ref", "winner": "ref"},  # the winner's label; integer id
        {"prompt_id": "q", "a": "ckpt-1", "b": "ref", "winner": "ckpt-1", "judge": "gpt"},  # extra keys ignored
    ]
    path = write_lines(tmp_path / "judge.jsonl", [json.dumps(rows[0]), "", "   ", json.dumps(rows[1])])
    assert read_pairwise_labels(path) == [
        PairwiseLabel("7", "ckpt-1", "ref", "b"),
        PairwiseLabel("q", "ckpt-1", "ref", "a"),
    ]
    assert read_pairwise_labels(path)[1].where == f"{path}:4"


GOOD = '{"prompt_id": "p1", "a": "ckpt-1", "b": "ref", "winner": "a"}'
DROP = object()


def changed(**changes: object) -> str:
    """GOOD with some keys replaced (or dropped, with DROP)."""
    row = {**json.loads(GOOD), **changes}
    return json.dumps({key: value for key, value in row.items() if value is not DROP})


@pytest.mark.parametrize(
    ("bad", "parts"),
    [
        (changed(winner="x"), ["winner 'x' is not 'a', 'b' or 'tie'", "'ckpt-1' or 'ref'"]),
        (changed(winner=DROP), ["missing key 'winner'", "Give every line prompt_id, a, b and winner"]),
        (GOOD[:-1], ["not valid JSON", "one JSON object per line"]),
        ("[" * 100_000 + "]" * 100_000, ["nested too deeply to read", "one flat JSON object per line"]),
        ('["p1", "ckpt-1", "ref", "a"]', ["is not a JSON object"]),
        (changed(a="ref", winner="tie"), ["a and b are both 'ref'", "two different"]),
        (changed(a=3), ["a is 3 (int)", "label as a string"]),
        (changed(prompt_id=None), ["prompt_id is null", "string or integer"]),
        (changed(winner=None), ["winner null is not"]),
    ],
)
def test_label_errors_name_file_line_and_fix(tmp_path: Path, bad: str, parts: list[str]) -> None:
    path = write_lines(tmp_path / "labels.jsonl", [GOOD, "", bad])
    with pytest.raises(UserInputError) as caught:
        read_pairwise_labels(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_missing_and_empty_label_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"nope\.jsonl: does not exist\. Give a JSON Lines file"):
        read_pairwise_labels(tmp_path / "nope.jsonl")
    with pytest.raises(UserInputError, match="is a directory"):
        read_pairwise_labels(tmp_path)
    with pytest.raises(UserInputError, match=r"empty\.jsonl: the file has no labels"):
        read_pairwise_labels(write_lines(tmp_path / "empty.jsonl", ["", " "]))
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt_id": "p\xe9"}\n')
    with pytest.raises(UserInputError, match=r"latin\.jsonl:1: not UTF-8"):
        read_pairwise_labels(tmp_path / "latin.jsonl")


def test_labels_to_comparisons_and_unknown_checkpoints(tmp_path: Path) -> None:
    labels = [PairwiseLabel("p1", "ckpt-1", "ref", "a"), PairwiseLabel("p0", "ref", "ckpt-3", "tie")]
    c = labels_to_comparisons(labels, LABELS)
    assert (c.a.tolist(), c.b.tolist(), c.outcome.tolist()) == ([1, 0], [0, 3], [1.0, 0.5])
    assert c.prompt.tolist() == [0, 1] and c.prompt_ids == ("p1", "p0")

    path = write_lines(tmp_path / "labels.jsonl", [GOOD, GOOD.replace('"ckpt-1"', '"ckpt-4"')])
    with pytest.raises(UserInputError) as caught:
        labels_to_comparisons(read_pairwise_labels(path), LABELS)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: unknown checkpoint 'ckpt-4'")
    assert "'ref', 'ckpt-1', 'ckpt-2', 'ckpt-3'" in message
    assert "Did you mean" in message


def test_combined_fit_uses_both_sources() -> None:
    # Gold ties ref and ckpt-1 on every prompt; the judge says ckpt-1 wins on p0 and p2.
    scores = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    judged = [
        PairwiseLabel("p0", "ckpt-1", "ref", "a"),
        PairwiseLabel("p2", "ref", "ckpt-1", "b"),
        PairwiseLabel("extra", "ref", "ckpt-1", "tie"),
    ]
    gold_only = bradley_terry_ranking(scores, ["ref", "ckpt-1"], "ref", replicates=50, prompt_ids=["p0", "p1", "p2"])
    both = bradley_terry_ranking(
        scores, ["ref", "ckpt-1"], "ref", replicates=50, extra=judged, prompt_ids=["p0", "p1", "p2"]
    )
    assert gold_only.theta == (0.0, 0.0)
    # three gold ties, two judged wins, one judged tie: 2 + 4·½ = 4 wins of ckpt-1 in 6 -> θ ≈ log 2
    assert both.theta[1] == pytest.approx(math.log(2), abs=0.02)
    assert both.n_comparisons == 6 and both.n_prompts == 4  # p0, p1, p2 and "extra"

    gold = pairwise_from_scores(scores, ["p0", "p1", "p2"])
    combined = combine_comparisons(gold, labels_to_comparisons(judged, ["ref", "ckpt-1"]))
    assert combined.prompt_ids == ("p0", "p1", "p2", "extra")
    assert combined.prompt.tolist() == [0, 1, 2, 0, 2, 3]  # a judged prompt joins its gold cluster
    direct = fit_bradley_terry(combined.a, combined.b, combined.outcome, 2)
    assert both.theta == pytest.approx(direct.theta, abs=1e-12)
    assert both == bootstrap_bradley_terry(combined, ["ref", "ckpt-1"], "ref", replicates=50)


def test_combine_keeps_arrays_typed() -> None:
    empty = combine_comparisons()
    assert len(empty) == 0 and empty.a.dtype == np.int64 and empty.prompt_ids == ()
    part = Comparisons(np.array([1]), np.array([0]), np.array([1.0]), np.array([0]), ("p",))
    assert combine_comparisons(part, part).prompt.tolist() == [0, 0]


# --------------------------------------------------------------------------- Plackett–Luce


PL_RANKINGS = [[0, 1, 2], [1, 0, 2], [2, 1], [1, 2, 0], [0, 2], [1, 0]]


@pytest.mark.parametrize("penalty", [DEFAULT_PENALTY, 0.0, 1.0])
def test_plackett_luce_matches_grid_maximum(penalty: float) -> None:
    t1, t2 = grid()
    theta = [np.zeros_like(t1), t1, t2]
    objective = -0.5 * penalty * (t1**2 + t2**2)
    for ranking in PL_RANKINGS:
        for k in range(len(ranking) - 1):
            rest = np.stack([theta[i] for i in ranking[k:]])
            objective = objective + theta[ranking[k]] - np.logaddexp.reduce(rest, axis=0)
    best, best_t1, best_t2 = grid_argmax(objective, t1, t2)

    fit = fit_plackett_luce(PL_RANKINGS, n_items=3, penalty=penalty)
    assert fit.converged and fit.n_rankings == 6
    assert fit.objective >= best - 1e-12
    assert fit.objective - best < 1e-3
    assert fit.theta[1] == pytest.approx(best_t1, abs=GRID_STEP)
    assert fit.theta[2] == pytest.approx(best_t2, abs=GRID_STEP)


@pytest.mark.parametrize("penalty", [DEFAULT_PENALTY, 0.0, 2.0])
def test_plackett_luce_on_pairs_is_bradley_terry(penalty: float) -> None:
    rng = np.random.default_rng(7)
    truth = np.array([0.0, 1.0, -0.5, 0.4, 2.0])
    a = rng.integers(0, 5, size=300)
    b = (a + rng.integers(1, 5, size=a.size)) % 5
    a_wins = rng.random(a.size) < 1 / (1 + np.exp(-(truth[a] - truth[b])))
    rankings = [[int(i), int(j)] if won else [int(j), int(i)] for i, j, won in zip(a, b, a_wins, strict=True)]
    pl = fit_plackett_luce(rankings, n_items=5, anchor=1, penalty=penalty, tol=1e-12)
    bt = fit_bradley_terry(a, b, a_wins.astype(float), n_items=5, anchor=1, penalty=penalty)
    assert pl.converged and bt.converged
    assert pl.theta == pytest.approx(bt.theta, abs=1e-7)
    assert pl.log_likelihood == pytest.approx(bt.log_likelihood, abs=1e-9)


def test_plackett_luce_recovers_gumbel_max_worths() -> None:
    """Sorting θ + Gumbel noise gives a Plackett–Luce ranking (Yellott 1977); half of the rankings
    cover a random subset of three items, which by Luce's choice axiom is again Plackett–Luce."""
    rng = np.random.default_rng(11)
    truth = np.array([0.0, 0.5, -0.7, 1.2, 0.3])
    rankings = []
    for r in range(6000):
        items = np.arange(5) if r % 2 else rng.choice(5, size=3, replace=False)
        utility = truth[items] + rng.gumbel(size=items.size)
        rankings.append(items[np.argsort(-utility)].tolist())
    fit = fit_plackett_luce(rankings, n_items=5, anchor=0)
    assert fit.converged
    # about 3,000 full rankings and 3,000 triples: standard errors near 0.03
    assert np.abs(np.array(fit.theta) - truth).max() < 0.12


def test_plackett_luce_weights_single_items_and_errors() -> None:
    weighted = fit_plackett_luce([[0, 1, 2], [2, 0, 1], [1]], 3, weights=[2.0, 1.0, 5.0])
    repeated = fit_plackett_luce([[0, 1, 2], [0, 1, 2], [2, 0, 1], []], 3)
    assert weighted.theta == pytest.approx(repeated.theta, abs=1e-8)
    assert weighted.n_rankings == 2 and repeated.n_rankings == 3
    assert plackett_luce_log_likelihood([[2], []], [0.0, 1.0, 2.0]) == 0.0
    with pytest.raises(ValueError, match="MLE does not exist"):
        fit_plackett_luce([[0, 1, 2], [0, 2, 1]], 3, penalty=0.0)
    with pytest.raises(ValueError, match="twice"):
        fit_plackett_luce([[0, 1, 0]], 3)
    with pytest.raises(ValueError, match="0..2"):
        fit_plackett_luce([[0, 3]], 3)


def test_rankings_from_scores_tie_policies() -> None:
    scores = np.array(
        [
            [1.0, 2.0, 5.0],
            [3.0, 2.0, 5.0],
            [0.0, np.nan, 5.0],
            [3.0, 1.0, 5.0],
        ]
    )
    # prompt 0: 1 and 3 tie at the top and are left out; prompt 1: 0 and 1 tie, 2 missing; prompt 2: all tie
    assert rankings_from_scores(scores) == [(0, 2), (3,), ()]
    broken = rankings_from_scores(scores, ties="random", seed=0)
    assert sorted(broken[0][:2]) == [1, 3] and broken[0][2:] == (0, 2)
    assert sorted(broken[1][:2]) == [0, 1] and broken[1][2:] == (3,)
    assert sorted(broken[2]) == [0, 1, 2, 3]
    assert rankings_from_scores(scores, ties="random", seed=0) == broken

    # Random tie-breaking splits a tie evenly: two checkpoints that always tie come out level.
    always_tied = np.array([np.arange(400.0), np.arange(400.0)])
    fit = fit_plackett_luce(rankings_from_scores(always_tied, ties="random", seed=1), 2)
    assert abs(fit.theta[1]) < 0.25
    with pytest.raises(ValueError, match="ties="):
        rankings_from_scores(scores, ties="first")  # type: ignore[arg-type]
