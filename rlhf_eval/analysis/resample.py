"""The bootstrap over prompts that every interval of the analysis shares.

Prompts are the unit of evidence (DESIGN.md, "Statistics"): a checkpoint's value on a prompt is
the mean over that prompt's samples, and uncertainty comes from which prompts were drawn. A
replicate resamples the P prompts with replacement; the *same* replicate indices are used for
every checkpoint, so comparisons between checkpoints are paired. Intervals are percentile
intervals (Efron & Tibshirani 1993, ch. 13). The replicates are seeded so a stored interval can
be recomputed exactly.

>>> prompt_resamples(3, replicates=2, seed=0).shape
(2, 3)
>>> percentile_interval([1.0, 2.0, 3.0, 4.0, 5.0], level=0.5)
(2.0, 4.0)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

#: Replicates per interval unless said otherwise (DESIGN.md asks for at least 1000).
DEFAULT_REPLICATES = 2000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95


def prompt_resamples(
    n_prompts: int, replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED
) -> NDArray[np.int64]:
    """A (replicates, n_prompts) array of prompt indices drawn with replacement, seeded."""
    if n_prompts < 1:
        raise ValueError("the bootstrap needs at least one prompt")
    if replicates < 1:
        raise ValueError(f"replicates={replicates}: use at least 1")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_prompts, size=(replicates, n_prompts))


#: Prompt indices a bootstrap draws and gathers at once (``resample_blocks``): 2 MB of indices.
#: Smaller blocks draw the same indices; at 2^18 the means of 2000 replicates of 5000 prompts took
#: +4 MB and the same time as at 2^21 (+32 MB), and 40 checkpoints' took less (docs/performance.md).
BLOCK_INDICES = 1 << 18


def resample_blocks(
    n_prompts: int, replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED, rows: int | None = None
) -> Iterator[NDArray[np.int64]]:
    """The rows of ``prompt_resamples(n_prompts, replicates, seed)`` in consecutive blocks of
    ``rows`` replicates (default: as many as make ``BLOCK_INDICES`` indices). The draws are the
    same, one generator consumed in order, but a bootstrap holds one block at a time: all of
    them at once are replicates × prompts indices, 80 MB for 2000 replicates of 5000 prompts.

    >>> whole = prompt_resamples(7, replicates=5, seed=3)
    >>> bool((np.vstack(list(resample_blocks(7, replicates=5, seed=3, rows=2))) == whole).all())
    True
    """
    if n_prompts < 1:
        raise ValueError("the bootstrap needs at least one prompt")
    if replicates < 1:
        raise ValueError(f"replicates={replicates}: use at least 1")
    step = rows if rows is not None else max(1, BLOCK_INDICES // n_prompts)
    rng = np.random.default_rng(seed)
    for start in range(0, replicates, step):
        yield rng.integers(0, n_prompts, size=(min(step, replicates - start), n_prompts))


def resampled_means(
    matrices: Sequence[NDArray[np.float64]], replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED
) -> list[NDArray[np.float64]]:
    """For each (K, P) matrix, the (B, K) means of every row over each replicate's prompts, with
    the same replicates for all (paired). Computed block by block (``resample_blocks``), each
    gathering at most ``BLOCK_INDICES`` values per matrix row: the memory does not grow with
    replicates × prompts. Each mean is the same as over the whole (K, B, P) gather."""
    n_prompts = matrices[0].shape[1]
    widest = max(m.shape[0] for m in matrices)
    rows = max(1, BLOCK_INDICES // (n_prompts * max(1, widest)))
    out = [np.empty((replicates, m.shape[0])) for m in matrices]
    start = 0
    for block in resample_blocks(n_prompts, replicates, seed, rows=rows):
        for matrix, means in zip(matrices, out, strict=True):
            means[start : start + len(block)] = matrix[:, block].mean(axis=2).T
        start += len(block)
    return out


def percentile_interval(
    values: Sequence[float] | NDArray[np.float64], level: float = DEFAULT_LEVEL
) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicate values (NaNs left out);
    (nan, nan) when no replicate is finite."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level}: use a probability in (0, 1)")
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(array, [tail, 100.0 - tail])
    return (float(low), float(high))


def complete_prompts(matrix: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Mask of the columns (prompts) of a (points, prompts) matrix that are finite at every point:
    paired statistics use only prompts that every compared point has.

    >>> complete_prompts(np.array([[1.0, np.nan, 2.0], [1.0, 1.0, 2.0]])).tolist()
    [True, False, True]
    """
    return np.asarray(np.isfinite(np.atleast_2d(matrix)).all(axis=0), dtype=np.bool_)
