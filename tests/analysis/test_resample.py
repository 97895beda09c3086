"""The bootstrap's replicates drawn block by block: the same draws and the same means as drawing
and gathering them all at once, whatever the block size."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_eval.analysis import resample
from rlhf_eval.analysis.resample import prompt_resamples, resample_blocks, resampled_means


@pytest.mark.parametrize(("prompts", "replicates", "rows"), [(1, 5, 2), (7, 13, 1), (50, 200, 64), (33, 10, 100)])
def test_blocks_are_the_rows_of_the_whole_draw(prompts: int, replicates: int, rows: int) -> None:
    blocks = list(resample_blocks(prompts, replicates, seed=4, rows=rows))
    assert [len(b) for b in blocks[:-1]] == [rows] * (len(blocks) - 1) and 0 < len(blocks[-1]) <= rows
    assert np.array_equal(np.vstack(blocks), prompt_resamples(prompts, replicates, seed=4))


def test_the_default_block_holds_at_most_block_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resample, "BLOCK_INDICES", 100)
    blocks = list(resample_blocks(30, 20, seed=1))
    assert [b.shape for b in blocks] == [(3, 30)] * 6 + [(2, 30)]
    assert np.array_equal(np.vstack(blocks), prompt_resamples(30, 20, seed=1))


@pytest.mark.parametrize("block_indices", [1, 150, resample.BLOCK_INDICES, 1 << 21])
def test_means_equal_the_whole_gather(block_indices: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit for bit: every mean is over the same prompts in the same order as the (K, B, P) gather."""
    monkeypatch.setattr(resample, "BLOCK_INDICES", block_indices)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 37)), rng.normal(size=(2, 37))
    got_a, got_b = resampled_means([a, b], replicates=90, seed=3)
    idx = prompt_resamples(37, 90, seed=3)
    assert got_a.shape == (90, 4) and got_b.shape == (90, 2)
    assert np.array_equal(got_a, a[:, idx].mean(axis=2).T)
    assert np.array_equal(got_b, b[:, idx].mean(axis=2).T)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        next(resample_blocks(0, 10))
    with pytest.raises(ValueError, match="replicates=0"):
        next(resample_blocks(5, 0))
