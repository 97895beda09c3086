"""The ``evaluate`` measurements load offline from the package and equal ``run_detectors``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rlhf_eval.detectors import FAMILIES, run_detectors
from rlhf_eval.detectors import evaluate_module_path as module_path

TEXTS = [
    "a b a b a b",
    "# Título\n- **sí**\n1. no\n```\n# code\n```",
    "As an AI, I’m sorry. I can't help with that. I hope this helps!",
]


@pytest.fixture(scope="module")
def evaluate_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``evaluate``, imported offline (it is slow to import, so once per module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_EVALUATE_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        import evaluate

        yield evaluate


@pytest.mark.parametrize("family", list(FAMILIES))
def test_module_loads_offline_and_matches_run_detectors(evaluate_module: Any, family: str, tmp_path: Path) -> None:
    measurement = evaluate_module.load(str(module_path(family)), keep_in_memory=True, cache_dir=str(tmp_path))
    assert measurement.name == f"rlhf_eval_{family}"
    results = measurement.compute(data=TEXTS)

    expected = run_detectors(TEXTS, FAMILIES[family])
    assert set(results) == {*expected, *(f"{name}_per_sample" for name in expected)}
    for name, values in expected.items():
        assert results[f"{name}_per_sample"] == values
        assert results[name] == math.fsum(values) / len(values)


def test_hand_checked_values_through_evaluate(evaluate_module: Any, tmp_path: Path) -> None:
    measurement = evaluate_module.load(str(module_path("repetition")), keep_in_memory=True, cache_dir=str(tmp_path))
    results = measurement.compute(data=["a b a b a b", "one two three"])
    # seq_rep_2: (1 - 2/5) for the first text, 0 unique repeats in the second: mean (0.6 + 0.0) / 2
    assert results["seq_rep_2_per_sample"] == [0.6, 0.0]
    assert results["seq_rep_2"] == 0.3
