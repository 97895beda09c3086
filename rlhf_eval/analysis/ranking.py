"""Rankings of checkpoints: Bradley–Terry from pairwise comparisons, Plackett–Luce from K-way rankings.

Bradley–Terry (Bradley & Terry 1952; Zermelo 1929) gives item i a strength θ_i with

    P(i beats j) = σ(θ_i − θ_j),    σ(x) = 1 / (1 + e^(−x)).

A tie counts as half a win for each side (as Chatbot Arena does, Chiang et al. 2024; no Davidson
tie parameter): a comparison of i and j with outcome y ∈ {1, ½, 0} for i adds
y·log σ(θ_i − θ_j) + (1 − y)·log σ(θ_j − θ_i) to the log-likelihood. Only differences are
identified, so the anchor (in our use the reference policy) is fixed at θ_anchor = 0 and σ(θ_i) is
item i's probability of beating the anchor.

Existence. The maximum-likelihood estimate is finite only when the directed graph "i won (or
tied) against j at least once" is strongly connected (Ford 1957; Hunter 2004, Assumption 1): an item
that wins every comparison has θ = +∞, and two groups never compared have no common scale. Bootstrap
replicates of sparse data hit this often, so every fit here maximizes a penalized likelihood,

    ℓ(θ) − (λ/2)·Σ_{i ≠ anchor} θ_i²,    λ = ``DEFAULT_PENALTY`` = 0.01,

a Gaussian prior θ_i ~ N(0, 10²) centred on the anchor. Its curvature is 1/25 of the information in
one even comparison (p(1 − p) = ¼), so it moves a well-estimated θ by O(λ / n_i) for n_i
comparisons of item i, yet keeps a separated item finite (an item winning all of its n comparisons
with the anchor solves n·σ(−θ) = λθ: θ ≈ 5.2 for n = 10, 7.2 for n = 100), leaves an item never
compared at θ = 0 ("no evidence of a difference") and centres a group cut off from the anchor on it.
With ``penalty=0`` the plain MLE is computed and a ValueError is raised when it does not exist.

Plackett–Luce (Plackett 1975; Luce 1959) extends the model to rankings: a ranking r_1 ≻ … ≻ r_m
has probability Π_{k<m} e^(θ_{r_k}) / Σ_{l≥k} e^(θ_{r_l}); with m = 2 it is Bradley–Terry. It is
fitted with the MM algorithm of Hunter (2004), the same penalty carried in the surrogate.

Uncertainty comes from a prompt-cluster bootstrap (Davison & Hinkley 1997, §3.8): every comparison
belongs to a prompt; a replicate draws prompts with replacement (``resample.prompt_resamples``), a
prompt drawn twice contributing all its comparisons twice, refits, and the intervals are percentile
intervals (``resample.percentile_interval``). Comparisons on one prompt are correlated (they share
the prompt's difficulty), which resampling single comparisons would ignore.

>>> scores = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, -1.0]])  # reference, policy; 4 prompts
>>> ranking = bradley_terry_ranking(scores, ["ref", "policy"], anchor="ref", replicates=200)
>>> ranking.order, round(ranking.win_probability[1], 2)  # beats the reference on 3 of 4 prompts
(('policy', 'ref'), 0.75)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from rlhf_eval.analysis.resample import DEFAULT_LEVEL, percentile_interval, prompt_resamples
from rlhf_eval.errors import UserInputError, did_you_mean

#: λ of the L2 penalty (λ/2)·Σ θ_i² on the non-anchor strengths: a N(0, 10²) prior (see the module docstring).
DEFAULT_PENALTY = 0.01
DEFAULT_RANKING_REPLICATES = 1000
WINNERS = ("a", "b", "tie")
_LABEL_EXAMPLE = '{"prompt_id": "p1", "a": "ckpt-100", "b": "ref", "winner": "a"}'


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True, eq=False)
class Comparisons:
    """Pairwise comparisons: item ``a[k]`` against item ``b[k]`` with ``outcome[k]`` for a (1 win,
    0.5 tie, 0 loss), observed on prompt ``prompt_ids[prompt[k]]``, the bootstrap's cluster."""

    a: NDArray[np.int64]
    b: NDArray[np.int64]
    outcome: NDArray[np.float64]
    prompt: NDArray[np.int64]
    prompt_ids: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.a.shape[0])


def pairwise_from_scores(scores: ArrayLike, prompt_ids: Sequence[str] | None = None) -> Comparisons:
    """Every pair i < j of checkpoints on every prompt where both scores are finite: outcome 1 when
    score_i > score_j, 0.5 on an exact tie, 0 otherwise. ``scores`` is (K checkpoints, P prompts),
    e.g. per-prompt mean gold reward, NaN where missing. Ordered by prompt, then i, then j.
    Without ``prompt_ids`` the prompts are named by their column index ("0", "1", …).

    >>> c = pairwise_from_scores([[1.0, 2.0], [1.0, np.nan], [0.5, 3.0]])
    >>> c.a.tolist(), c.b.tolist(), c.outcome.tolist(), c.prompt.tolist()
    ([0, 0, 1, 0], [1, 2, 2, 2], [0.5, 1.0, 1.0, 0.0], [0, 0, 0, 1])
    """
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a (checkpoints, prompts) matrix, got shape {matrix.shape}")
    n_items, n_prompts = matrix.shape
    ids = _prompt_ids(n_prompts, prompt_ids)
    first, second = np.triu_indices(n_items, k=1)
    left, right = matrix[first].T, matrix[second].T  # (P, pairs): prompt-major order
    both = np.isfinite(left) & np.isfinite(right)
    outcome = np.where(left > right, 1.0, np.where(left == right, 0.5, 0.0))
    prompt = np.broadcast_to(np.arange(n_prompts)[:, None], both.shape)
    return Comparisons(
        a=np.broadcast_to(first, both.shape)[both].astype(np.int64),
        b=np.broadcast_to(second, both.shape)[both].astype(np.int64),
        outcome=outcome[both],
        prompt=prompt[both].astype(np.int64),
        prompt_ids=ids,
    )


def combine_comparisons(*parts: Comparisons) -> Comparisons:
    """One set of comparisons from several sources; prompts with the same id become one cluster,
    so the bootstrap resamples a prompt together with every source's comparisons on it.

    >>> gold = pairwise_from_scores([[1.0, 0.0], [0.0, 1.0]], prompt_ids=["p1", "p2"])
    >>> judged = Comparisons(np.array([0]), np.array([1]), np.array([0.5]), np.array([0]), ("p3",))
    >>> both = combine_comparisons(gold, judged)
    >>> both.prompt_ids, both.prompt.tolist()
    (('p1', 'p2', 'p3'), [0, 1, 2])
    """
    index: dict[str, int] = {}
    for part in parts:
        for prompt_id in part.prompt_ids:
            index.setdefault(prompt_id, len(index))
    remapped = [np.array([index[p] for p in part.prompt_ids], dtype=np.int64)[part.prompt] for part in parts]
    return Comparisons(
        a=np.concatenate([part.a for part in parts] or [np.zeros(0, dtype=np.int64)]),
        b=np.concatenate([part.b for part in parts] or [np.zeros(0, dtype=np.int64)]),
        outcome=np.concatenate([part.outcome for part in parts] or [np.zeros(0)]),
        prompt=np.concatenate(remapped or [np.zeros(0, dtype=np.int64)]),
        prompt_ids=tuple(index),
    )


def _prompt_ids(n_prompts: int, prompt_ids: Sequence[str] | None) -> tuple[str, ...]:
    if prompt_ids is None:
        return tuple(str(p) for p in range(n_prompts))
    ids = tuple(str(p) for p in prompt_ids)
    if len(ids) != n_prompts:
        raise ValueError(f"{len(ids)} prompt ids for {n_prompts} prompts")
    if len(set(ids)) != len(ids):
        raise ValueError("prompt ids must be distinct")
    return ids


# --------------------------------------------------------------------------- Bradley–Terry


@dataclass(frozen=True)
class BradleyTerryFit:
    """A penalized Bradley–Terry fit: θ per item (θ_anchor = 0), the unpenalized log-likelihood
    Σ_k w_k [y_k log σ(θ_a − θ_b) + (1 − y_k) log σ(θ_b − θ_a)] at θ, the penalty λ used, the total
    comparison weight, and whether Newton's method met its tolerance."""

    theta: tuple[float, ...]
    anchor: int
    log_likelihood: float
    penalty: float
    n_comparisons: float
    converged: bool
    iterations: int

    @property
    def objective(self) -> float:
        """The maximized penalized log-likelihood ℓ(θ) − (λ/2)·Σ θ_i²."""
        return self.log_likelihood - 0.5 * self.penalty * float(np.sum(np.square(self.theta)))


def win_matrix(
    a: ArrayLike, b: ArrayLike, outcome: ArrayLike, n_items: int, weights: ArrayLike | None = None
) -> NDArray[np.float64]:
    """W[i, j] = Σ weight·(share of a win for i) over comparisons of i and j: the sufficient
    statistic of Bradley–Terry. A tie adds ½ to W[i, j] and ½ to W[j, i].

    >>> win_matrix([0, 0, 1], [1, 1, 0], [1.0, 0.5, 1.0], 2).tolist()
    [[0.0, 1.5], [1.5, 0.0]]
    """
    first, second, result, weight = _check_comparisons(a, b, outcome, n_items, weights)
    wins = np.bincount(first * n_items + second, weights=weight * result, minlength=n_items * n_items)
    wins += np.bincount(second * n_items + first, weights=weight * (1.0 - result), minlength=n_items * n_items)
    return np.asarray(wins, dtype=np.float64).reshape(n_items, n_items)


def _check_comparisons(
    a: ArrayLike, b: ArrayLike, outcome: ArrayLike, n_items: int, weights: ArrayLike | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    first = np.asarray(a, dtype=np.int64).reshape(-1)
    second = np.asarray(b, dtype=np.int64).reshape(-1)
    result = np.asarray(outcome, dtype=np.float64).reshape(-1)
    weight = np.ones_like(result) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not first.shape == second.shape == result.shape == weight.shape:
        raise ValueError(
            f"a, b, outcome and weights differ in length: {first.size}, {second.size}, {result.size}, {weight.size}"
        )
    if first.size and (min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= n_items):
        raise ValueError(f"item indices must lie in 0..{n_items - 1}")
    if np.any(first == second):
        raise ValueError("an item cannot be compared with itself (a == b)")
    if not np.all((result >= 0.0) & (result <= 1.0)):
        raise ValueError("outcomes must lie in [0, 1]: 1 a wins, 0.5 tie, 0 b wins")
    if not np.all(np.isfinite(weight) & (weight >= 0.0)):
        raise ValueError("weights must be finite and non-negative")
    return first, second, result, weight


def fit_bradley_terry(
    a: ArrayLike,
    b: ArrayLike,
    outcome: ArrayLike,
    n_items: int,
    anchor: int = 0,
    weights: ArrayLike | None = None,
    penalty: float = DEFAULT_PENALTY,
) -> BradleyTerryFit:
    """Maximize Σ_k w_k [y_k log σ(θ_{a_k} − θ_{b_k}) + (1 − y_k) log σ(θ_{b_k} − θ_{a_k})] − (λ/2)·Σ θ_i²
    over θ with θ_anchor = 0, by Newton's method with backtracking (the objective is concave).
    ``penalty=0`` gives the plain MLE and raises ValueError when it does not exist (Ford 1957).

    One win and one tie of item 1 over the anchor: 1.5 wins in 2, σ(θ_1) = 3/4, θ_1 = log 3.

    >>> fit = fit_bradley_terry([1, 1], [0, 0], [1.0, 0.5], n_items=2, penalty=0.0)
    >>> round(fit.theta[1], 6) == round(math.log(3), 6)
    True
    """
    return fit_bradley_terry_wins(win_matrix(a, b, outcome, n_items, weights), anchor, penalty)


def fit_bradley_terry_wins(
    wins: ArrayLike, anchor: int = 0, penalty: float = DEFAULT_PENALTY, max_iter: int = 200, tol: float = 1e-10
) -> BradleyTerryFit:
    """``fit_bradley_terry`` from the win matrix W (``win_matrix``): the fit depends on the data only
    through W. Gradient g_i = Σ_j (W_ij − N_ij p_ij) − λθ_i and Hessian −Σ_j N_ij p_ij (1 − p_ij) − λ
    on the diagonal, N_ij p_ij (1 − p_ij) off it, with N = W + Wᵀ and p_ij = σ(θ_i − θ_j)."""
    matrix = np.asarray(wins, dtype=np.float64)
    n_items = matrix.shape[0]
    _check_fit_args(n_items, anchor, penalty)
    if matrix.shape != (n_items, n_items) or not np.all(np.isfinite(matrix) & (matrix >= 0.0)):
        raise ValueError("the win matrix must be square, finite and non-negative")
    if penalty == 0.0:
        _require_strongly_connected(matrix > 0.0, "Bradley–Terry")
    totals = matrix + matrix.T
    free = np.arange(n_items) != anchor
    theta = np.zeros(n_items)

    def objective(values: NDArray[np.float64]) -> float:
        return _bt_log_likelihood(matrix, values) - 0.5 * penalty * float(values @ values)

    current = objective(theta)
    converged = n_items == 1
    iterations = 0
    while not converged and iterations < max_iter:
        iterations += 1
        p = _sigmoid(theta[:, None] - theta[None, :])
        gradient = (matrix - totals * p).sum(axis=1) - penalty * theta
        curvature = totals * p * (1.0 - p)
        hessian = curvature - np.diag(curvature.sum(axis=1) + penalty)
        step = np.zeros(n_items)
        step[free] = np.linalg.solve(hessian[np.ix_(free, free)], -gradient[free])
        size = 1.0
        while True:
            candidate = theta + size * step
            value = objective(candidate)
            if value >= current + 1e-4 * size * float(gradient @ step) or size < 1e-12:
                break
            size /= 2.0
        theta, current = candidate, value
        converged = float(np.max(np.abs(size * step))) < tol
    return BradleyTerryFit(
        theta=tuple(float(t) for t in theta),
        anchor=anchor,
        log_likelihood=_bt_log_likelihood(matrix, theta),
        penalty=penalty,
        n_comparisons=float(matrix.sum()),
        converged=converged,
        iterations=iterations,
    )


def _bt_log_likelihood(wins: NDArray[np.float64], theta: NDArray[np.float64]) -> float:
    """Σ_ij W_ij log σ(θ_i − θ_j), with log σ(x) = −log(1 + e^(−x)) computed without overflow."""
    log_p = -np.logaddexp(0.0, -(theta[:, None] - theta[None, :]))
    return float(np.sum(wins * log_p))


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.exp(-np.logaddexp(0.0, -x))


def _logistic(x: float) -> float:
    return math.exp(-float(np.logaddexp(0.0, -x)))


def _check_fit_args(n_items: int, anchor: int, penalty: float) -> None:
    if n_items < 1:
        raise ValueError("a ranking needs at least one item")
    if not 0 <= anchor < n_items:
        raise ValueError(f"anchor={anchor}: use an item index in 0..{n_items - 1}")
    if not (math.isfinite(penalty) and penalty >= 0.0):
        raise ValueError(f"penalty={penalty}: use a finite λ >= 0")


def _require_strongly_connected(beats: NDArray[np.bool_], model: str) -> None:
    """The MLE exists iff every item reaches every other along "beat at least once" edges (Ford 1957)."""
    n_items = beats.shape[0]
    for graph in (beats, beats.T):
        reached = np.zeros(n_items, dtype=bool)
        reached[0] = True
        frontier = reached.copy()
        while frontier.any():
            frontier = graph[frontier].any(axis=0) & ~reached
            reached |= frontier
        if not reached.all():
            raise ValueError(
                f"the {model} MLE does not exist: some items win (or lose) every comparison with the rest, "
                "or are never compared with them; use penalty > 0"
            )


# --------------------------------------------------------------------------- bootstrap ranking


@dataclass(frozen=True)
class Ranking:
    """Bradley–Terry strengths with prompt-bootstrap percentile intervals. Per item (in ``labels``
    order): θ relative to the anchor, its interval, and σ(θ), the probability of beating the anchor
    on a prompt (the interval of σ(θ) is σ of θ's interval, σ being increasing). ``order`` lists
    the labels best first (by θ; equal θ keep the input order)."""

    labels: tuple[str, ...]
    anchor: str
    theta: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    win_probability: tuple[float, ...]
    order: tuple[str, ...]
    n_comparisons: int
    n_prompts: int
    replicates: int
    seed: int
    level: float
    penalty: float
    converged: bool

    def rank(self, label: str) -> int:
        """1-based position of ``label`` in ``order``."""
        return self.order.index(label) + 1


def bootstrap_bradley_terry(
    comparisons: Comparisons,
    labels: Sequence[str],
    anchor: int | str,
    replicates: int = DEFAULT_RANKING_REPLICATES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    penalty: float = DEFAULT_PENALTY,
) -> Ranking:
    """Fit Bradley–Terry on all comparisons, then on ``replicates`` prompt-cluster resamples (the
    comparisons of a prompt drawn c times enter with weight c), and report percentile intervals."""
    names = _check_labels(labels)
    anchor_index = _anchor_index(anchor, names)
    n_items = len(names)
    a, b, outcome = comparisons.a, comparisons.b, comparisons.outcome
    point = fit_bradley_terry(a, b, outcome, n_items, anchor_index, penalty=penalty)
    draws = prompt_resamples(len(comparisons.prompt_ids), replicates, seed)
    thetas = np.empty((replicates, n_items))
    for row, draw in enumerate(draws):
        counts = np.bincount(draw, minlength=len(comparisons.prompt_ids)).astype(np.float64)
        wins = win_matrix(a, b, outcome, n_items, counts[comparisons.prompt])
        thetas[row] = fit_bradley_terry_wins(wins, anchor_index, penalty).theta
    intervals = [percentile_interval(thetas[:, i], level) for i in range(n_items)]
    order = sorted(range(n_items), key=lambda i: (-point.theta[i], i))
    return Ranking(
        labels=names,
        anchor=names[anchor_index],
        theta=point.theta,
        low=tuple(low for low, _ in intervals),
        high=tuple(high for _, high in intervals),
        win_probability=tuple(_logistic(t) for t in point.theta),
        order=tuple(names[i] for i in order),
        n_comparisons=len(comparisons),
        n_prompts=len(comparisons.prompt_ids),
        replicates=replicates,
        seed=seed,
        level=level,
        penalty=penalty,
        converged=point.converged,
    )


def bradley_terry_ranking(
    scores: ArrayLike,
    labels: Sequence[str],
    anchor: int | str,
    replicates: int = DEFAULT_RANKING_REPLICATES,
    seed: int = 0,
    extra: Sequence[PairwiseLabel] = (),
    prompt_ids: Sequence[str] | None = None,
    level: float = DEFAULT_LEVEL,
    penalty: float = DEFAULT_PENALTY,
) -> Ranking:
    """Rank K checkpoints from a (K, P) matrix of per-prompt scores (``pairwise_from_scores``), plus
    external pairwise labels ``extra`` (human or judge, ``read_pairwise_labels``) in the same fit.
    Give ``prompt_ids`` (one per column) so that a label on a scored prompt joins that prompt's
    cluster; without them the columns are named "0", "1", …"""
    matrix = np.asarray(scores, dtype=np.float64)
    names = _check_labels(labels)
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(f"scores of shape {matrix.shape} for {len(names)} labels: want ({len(names)}, prompts)")
    comparisons = pairwise_from_scores(matrix, prompt_ids)
    if extra:
        comparisons = combine_comparisons(comparisons, labels_to_comparisons(extra, names))
    return bootstrap_bradley_terry(comparisons, names, anchor, replicates, seed, level, penalty)


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    names = tuple(labels)
    if len(set(names)) != len(names):
        raise ValueError(f"checkpoint labels must be distinct: {list(names)}")
    return names


def _anchor_index(anchor: int | str, names: tuple[str, ...]) -> int:
    if isinstance(anchor, str):
        if anchor not in names:
            raise ValueError(f"anchor {anchor!r} is not one of {list(names)}")
        return names.index(anchor)
    if not 0 <= anchor < len(names):
        raise ValueError(f"anchor={anchor}: use an index in 0..{len(names) - 1}")
    return anchor


# --------------------------------------------------------------------------- external labels


@dataclass(frozen=True)
class PairwiseLabel:
    """One external judgement (human or LLM judge) of checkpoint ``a`` against ``b`` on a prompt;
    ``winner`` is "a", "b" or "tie". ``where`` ("file:line") is for messages, not compared."""

    prompt_id: str
    a: str
    b: str
    winner: Literal["a", "b", "tie"]
    where: str = field(default="", compare=False, repr=False)


def read_pairwise_labels(path: str | Path) -> list[PairwiseLabel]:
    """Pairwise labels from JSON Lines, one object per line with keys prompt_id (string or integer),
    a and b (checkpoint labels) and winner ("a", "b", "tie", or the label of a or b). Blank lines
    are skipped; anything else that does not fit is a UserInputError naming the file and line.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "labels.jsonl").write_text('{"prompt_id": 7, "a": "ckpt", "b": "ref", "winner": "ref"}\\n')
    >>> read_pairwise_labels(folder / "labels.jsonl")
    [PairwiseLabel(prompt_id='7', a='ckpt', b='ref', winner='b')]
    """
    source = Path(path)
    if not source.is_file():
        what = "is a directory" if source.is_dir() else "does not exist"
        raise UserInputError(
            f"{path}: {what}. Give a JSON Lines file of pairwise labels, one object per line, e.g. {_LABEL_EXAMPLE}."
        )
    labels = []
    with source.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserInputError(f"{where}: not UTF-8 text. Save the file as UTF-8.") from exc
            if line.strip():
                labels.append(_parse_label(line, where))
    if not labels:
        raise UserInputError(f"{path}: the file has no labels. Write one JSON object per line, e.g. {_LABEL_EXAMPLE}.")
    return labels


def _parse_label(line: str, where: str) -> PairwiseLabel:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise UserInputError(
            f"{where}: not valid JSON ({_one_line(str(exc))}). Write one JSON object per line, e.g. {_LABEL_EXAMPLE}."
        ) from exc
    except RecursionError as exc:
        raise UserInputError(
            f"{where}: nested too deeply to read. Write one flat JSON object per line, e.g. {_LABEL_EXAMPLE}."
        ) from exc
    if not isinstance(row, dict):
        raise UserInputError(
            f"{where}: {_show(row)} is not a JSON object. Write one object per line, e.g. {_LABEL_EXAMPLE}."
        )
    for key in ("prompt_id", "a", "b", "winner"):
        if key not in row:
            raise UserInputError(
                f"{where}: missing key '{key}'. Give every line prompt_id, a, b and winner, e.g. {_LABEL_EXAMPLE}."
            )
    prompt_id = row["prompt_id"]
    if isinstance(prompt_id, bool) or not isinstance(prompt_id, (str, int)) or prompt_id == "":
        raise UserInputError(f"{where}: prompt_id is {_show(prompt_id)}. Write the prompt's id as a string or integer.")
    for key in ("a", "b"):
        if not isinstance(row[key], str) or not row[key]:
            raise UserInputError(f"{where}: {key} is {_show(row[key])}. Write the checkpoint's label as a string.")
    a, b, winner = row["a"], row["b"], row["winner"]
    if a == b:
        raise UserInputError(f"{where}: a and b are both {a!r}. Compare two different checkpoints.")
    if winner == a:
        winner = "a"
    elif winner == b:
        winner = "b"
    if winner not in WINNERS:
        raise UserInputError(
            f"{where}: winner {_show_plain(winner)} is not 'a', 'b' or 'tie'; "
            f'write "a", "b", "tie" or the label of a or b ({a!r} or {b!r}).'
        )
    return PairwiseLabel(prompt_id=str(prompt_id), a=a, b=b, winner=winner, where=where)


def write_pairwise_labels(path: str | Path, labels: Sequence[PairwiseLabel]) -> None:
    """Write labels as JSON Lines that ``read_pairwise_labels`` reads back unchanged."""
    rows = (json.dumps({"prompt_id": x.prompt_id, "a": x.a, "b": x.b, "winner": x.winner}) + "\n" for x in labels)
    Path(path).write_text("".join(rows), encoding="utf-8")


def labels_to_comparisons(labels: Sequence[PairwiseLabel], items: Sequence[str]) -> Comparisons:
    """Comparisons over ``items`` (checkpoint labels, in the order of the fit's θ) from external
    labels: outcome 1 when a won, 0.5 on a tie, 0 when b won; clusters are the labels' prompt ids
    in order of first appearance.

    >>> c = labels_to_comparisons([PairwiseLabel("p", "ref", "new", "b")], ["new", "ref"])
    >>> c.a.tolist(), c.b.tolist(), c.outcome.tolist(), c.prompt_ids
    ([1], [0], [0.0], ('p',))
    """
    index = {label: i for i, label in enumerate(items)}
    prompts: dict[str, int] = {}
    a, b, outcome, prompt = [], [], [], []
    for label in labels:
        for name in (label.a, label.b):
            if name not in index:
                where = label.where or f"prompt {label.prompt_id!r}"
                known = ", ".join(repr(k) for k in index)
                raise UserInputError(
                    f"{where}: unknown checkpoint {name!r}; the known checkpoints are {known}. "
                    f"Use one of them.{did_you_mean(name, list(index))}"
                )
        a.append(index[label.a])
        b.append(index[label.b])
        outcome.append({"a": 1.0, "b": 0.0, "tie": 0.5}[label.winner])
        prompt.append(prompts.setdefault(label.prompt_id, len(prompts)))
    return Comparisons(
        a=np.array(a, dtype=np.int64),
        b=np.array(b, dtype=np.int64),
        outcome=np.array(outcome, dtype=np.float64),
        prompt=np.array(prompt, dtype=np.int64),
        prompt_ids=tuple(prompts),
    )


def _one_line(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _show(value: object) -> str:
    return "null" if value is None else f"{_one_line(repr(value), 60)} ({type(value).__name__})"


def _show_plain(value: object) -> str:
    return "null" if value is None else _one_line(repr(value), 60)


# --------------------------------------------------------------------------- Plackett–Luce


@dataclass(frozen=True)
class PlackettLuceFit:
    """A penalized Plackett–Luce fit: log-worths θ (θ_anchor = 0), the unpenalized log-likelihood
    Σ_r w_r Σ_{k<m_r} [θ_{r_k} − log Σ_{l≥k} e^(θ_{r_l})] at θ, the penalty λ, the number of
    rankings with at least two items, and whether MM met its tolerance."""

    theta: tuple[float, ...]
    anchor: int
    log_likelihood: float
    penalty: float
    n_rankings: int
    converged: bool
    iterations: int

    @property
    def objective(self) -> float:
        """The maximized penalized log-likelihood ℓ(θ) − (λ/2)·Σ θ_i²."""
        return self.log_likelihood - 0.5 * self.penalty * float(np.sum(np.square(self.theta)))


def fit_plackett_luce(
    rankings: Sequence[Sequence[int]],
    n_items: int,
    anchor: int = 0,
    weights: ArrayLike | None = None,
    penalty: float = DEFAULT_PENALTY,
    max_iter: int = 10_000,
    tol: float = 1e-9,
) -> PlackettLuceFit:
    """Maximize the Plackett–Luce log-likelihood of ``rankings`` (item indices, best first; a ranking
    may cover any subset of the items) minus (λ/2)·Σ θ_i², with θ_anchor = 0, by MM (Hunter 2004).

    At the current θ⁰ each stage's −log Σ_{l≥k} e^(θ_l) is minorized by its tangent in the worths,
    1 − log S⁰ − S/S⁰; the surrogate separates into w_i θ_i − D_i e^(θ_i) − (λ/2)θ_i² per item, with
    w_i the weighted count of stages item i wins and D_i = Σ 1/S⁰ over the stages it takes part in.
    Each item's surrogate is maximized exactly (with λ = 0: θ_i = log(w_i / D_i), Hunter's update),
    so the penalized likelihood never decreases. ``penalty=0`` raises ValueError unless the graph
    "ranked above at least once" is strongly connected (Hunter 2004, Assumption 1).

    >>> fit = fit_plackett_luce([[1, 0], [1, 0], [1, 0], [0, 1]], n_items=2, penalty=0.0)  # 3 wins in 4
    >>> round(fit.theta[1], 6) == round(math.log(3), 6)
    True
    """
    _check_fit_args(n_items, anchor, penalty)
    table, lengths, weight = _ranking_table(rankings, n_items, weights)
    if penalty == 0.0:
        _require_strongly_connected(_ranked_above(table, lengths, n_items), "Plackett–Luce")
    positions = np.arange(table.shape[1])[None, :]
    present = positions < lengths[:, None]
    chooses = positions < lengths[:, None] - 1  # stage k exists while two or more items remain
    wins = np.bincount(
        table[chooses], weights=np.broadcast_to(weight[:, None], table.shape)[chooses], minlength=n_items
    )
    free = np.arange(n_items) != anchor
    theta = np.zeros(n_items)
    converged = False
    iterations = 0
    while not converged and iterations < max_iter:
        iterations += 1
        stage_sums = _stage_sums(table, present, theta)
        inverse = np.where(chooses, weight[:, None] / np.where(chooses, stage_sums, 1.0), 0.0)
        exposure = np.cumsum(inverse, axis=1)  # Σ_{k ≤ l} 1/S_k for the item at position l
        denominators = np.bincount(table[present], weights=exposure[present], minlength=n_items)
        updated = theta.copy()
        updated[free] = _surrogate_argmax(wins[free], denominators[free], penalty, theta[free])
        converged = float(np.max(np.abs(updated - theta))) < tol
        theta = updated
    return PlackettLuceFit(
        theta=tuple(float(t) for t in theta),
        anchor=anchor,
        log_likelihood=plackett_luce_log_likelihood(rankings, theta, weights),
        penalty=penalty,
        n_rankings=int(np.count_nonzero(lengths >= 2)),
        converged=converged,
        iterations=iterations,
    )


def plackett_luce_log_likelihood(
    rankings: Sequence[Sequence[int]], theta: ArrayLike, weights: ArrayLike | None = None
) -> float:
    """Σ_r w_r Σ_{k<m_r−1} [θ_{r_k} − log Σ_{l≥k} e^(θ_{r_l})].

    >>> round(plackett_luce_log_likelihood([[0, 1, 2]], [0.0, 0.0, 0.0]), 6) == round(-math.log(6), 6)
    True
    """
    values = np.asarray(theta, dtype=np.float64)
    table, lengths, weight = _ranking_table(rankings, values.shape[0], weights)
    positions = np.arange(table.shape[1])[None, :]
    present = positions < lengths[:, None]
    chooses = positions < lengths[:, None] - 1
    logits = np.where(present, values[table], -np.inf)
    tail_log_sums = np.logaddexp.accumulate(logits[:, ::-1], axis=1)[:, ::-1]
    terms = np.where(chooses, logits - np.where(chooses, tail_log_sums, 0.0), 0.0)
    return float(np.sum(weight * terms.sum(axis=1)))


def _ranking_table(
    rankings: Sequence[Sequence[int]], n_items: int, weights: ArrayLike | None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Rankings as a (R, longest) index table padded with 0, their lengths and their weights."""
    lengths = np.array([len(r) for r in rankings], dtype=np.int64)
    width = int(lengths.max()) if lengths.size else 0
    table = np.zeros((len(rankings), width), dtype=np.int64)
    for row, ranking in enumerate(rankings):
        items = [int(i) for i in ranking]
        if len(set(items)) != len(items):
            raise ValueError(f"ranking {row} lists an item twice: {items}")
        if items and not (min(items) >= 0 and max(items) < n_items):
            raise ValueError(f"ranking {row}: item indices must lie in 0..{n_items - 1}")
        table[row, : len(items)] = items
    weight = np.ones(len(rankings)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if weight.shape != (len(rankings),) or not np.all(np.isfinite(weight) & (weight >= 0.0)):
        raise ValueError(f"weights must be {len(rankings)} finite non-negative numbers, one per ranking")
    return table, lengths, weight


def _ranked_above(table: NDArray[np.int64], lengths: NDArray[np.int64], n_items: int) -> NDArray[np.bool_]:
    above = np.zeros((n_items, n_items), dtype=bool)
    for row, length in zip(table, lengths, strict=True):
        for k in range(int(length) - 1):
            above[row[k], row[k + 1 : length]] = True
    return above


def _stage_sums(
    table: NDArray[np.int64], present: NDArray[np.bool_], theta: NDArray[np.float64]
) -> NDArray[np.float64]:
    """S_k = Σ_{l≥k} e^(θ_{r_l}) per ranking and stage (padding contributes 0)."""
    worth = np.where(present, np.exp(theta[table]), 0.0)
    return np.cumsum(worth[:, ::-1], axis=1)[:, ::-1]


def _surrogate_argmax(
    wins: NDArray[np.float64], exposure: NDArray[np.float64], penalty: float, start: NDArray[np.float64]
) -> NDArray[np.float64]:
    """argmax_θ w θ − D e^θ − (λ/2)θ² per item: the root of g(θ) = w − D e^θ − λθ, decreasing in θ.
    With λ = 0 it is log(w / D). Otherwise the root lies between 0 and log(w / D) (w > 0), or in
    [−D/λ, 0] (w = 0); safeguarded Newton steps inside that bracket."""
    if penalty == 0.0:
        with np.errstate(divide="ignore"):
            return np.log(wins / exposure)
    exposure = np.maximum(exposure, 1e-300)
    guess = np.where(wins > 0, np.log(np.maximum(wins, 1e-300) / exposure), -exposure / penalty)
    low, high = np.minimum(0.0, guess), np.maximum(0.0, guess)
    theta = np.clip(start, low, high)
    for _ in range(100):
        g = wins - exposure * np.exp(theta) - penalty * theta
        low = np.where(g > 0, theta, low)
        high = np.where(g <= 0, theta, high)
        newton = theta + g / (exposure * np.exp(theta) + penalty)
        inside = (newton > low) & (newton < high)
        nxt = np.where(inside, newton, 0.5 * (low + high))
        if float(np.max(np.abs(nxt - theta))) < 1e-14:
            return nxt
        theta = nxt
    return theta


def rankings_from_scores(
    scores: ArrayLike, ties: Literal["drop", "random"] = "drop", seed: int = 0
) -> list[tuple[int, ...]]:
    """One ranking per prompt (column of a (K, P) score matrix), best first, of the checkpoints with
    a finite score. Ties have no Plackett–Luce probability, so:

    - ``"drop"`` (default) leaves out every checkpoint that shares its score with another on that
      prompt. By Luce's choice axiom the order of the remaining checkpoints is itself a Plackett–Luce
      ranking of that subset, so nothing is invented; a prompt where everything ties gives ().
    - ``"random"`` breaks ties in a seeded random order: in expectation a tied pair then counts half
      a win each way, the Bradley–Terry treatment above, at the price of added noise.

    >>> scores = [[1.0, 2.0], [3.0, 2.0], [0.0, np.nan], [3.0, 1.0]]  # 4 checkpoints, 2 prompts
    >>> rankings_from_scores(scores)  # prompt 0: 1 and 3 tie at 3.0; prompt 1: 0 and 1 tie, 2 missing
    [(0, 2), (3,)]
    """
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores must be a (checkpoints, prompts) matrix, got shape {matrix.shape}")
    if ties not in ("drop", "random"):
        raise ValueError(f"ties={ties!r}: use 'drop' or 'random'")
    rng = np.random.default_rng(seed)
    rankings = []
    for column in matrix.T:
        finite = np.flatnonzero(np.isfinite(column))
        values = column[finite]
        if ties == "drop":
            unique, counts = np.unique(values, return_counts=True)
            keep = np.isin(values, unique[counts == 1])
            finite, values = finite[keep], values[keep]
            order = np.argsort(-values, kind="stable")
        else:
            order = np.lexsort((rng.random(values.size), -values))
        rankings.append(tuple(int(i) for i in finite[order]))
    return rankings
