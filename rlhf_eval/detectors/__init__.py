"""Symptom detectors: pure functions from a batch of response texts to one float per text.

Importing this package registers every detector in ``REGISTRY`` under its stored feature name:

- repetition (``repetition.py``): ``seq_rep_1`` .. ``seq_rep_4``, ``distinct_1``, ``distinct_2``,
  ``compression_ratio``, ``tail_loop``;
- length (``length.py``): ``length_chars``, ``length_words``;
- markdown (``markdown.py``): ``md_headers``, ``md_list_items``, ``md_bold``;
- boilerplate (``phrases.py``): ``hedge``, ``apology``, ``refusal``, ``closer``.

Each family also ships as a Hugging Face ``evaluate`` measurement; ``evaluate_module_path``
gives its folder for ``evaluate.load``. ``evaluate`` itself is never imported here (it is slow).

>>> run_detectors(["a b a b a b"], ["seq_rep_2", "distinct_2"])
{'seq_rep_2': [0.6], 'distinct_2': [0.4]}
"""

from __future__ import annotations

from pathlib import Path

from rlhf_eval.detectors import length, markdown, phrases, repetition
from rlhf_eval.detectors.registry import (
    AGGREGATIONS,
    REGISTRY,
    UNITS,
    Detector,
    aggregate,
    detector,
    detector_fingerprint,
    get_detector,
    run_detectors,
)
from rlhf_eval.errors import UserInputError, did_you_mean

FAMILIES: dict[str, tuple[str, ...]] = {
    "repetition": (
        "seq_rep_1",
        "seq_rep_2",
        "seq_rep_3",
        "seq_rep_4",
        "distinct_1",
        "distinct_2",
        "compression_ratio",
        "tail_loop",
    ),
    "length": ("length_chars", "length_words"),
    "markdown": ("md_headers", "md_list_items", "md_bold"),
    "boilerplate": ("hedge", "apology", "refusal", "closer"),
}
"""Feature names of each family, in the order its ``evaluate`` module reports them."""

EVALUATE_MODULES_DIR = Path(__file__).parent / "evaluate_modules"


def evaluate_module_path(family: str) -> Path:
    """Folder of the ``evaluate`` measurement of ``family`` (``"repetition"`` or ``"rlhf_eval_repetition"``).

    Load it offline with ``evaluate.load(str(evaluate_module_path("repetition")))``.

    >>> evaluate_module_path("markdown").name
    'rlhf_eval_markdown'
    """
    key = family.removeprefix("rlhf_eval_")
    if key not in FAMILIES:
        raise UserInputError(
            f"Unknown detector family {family!r}.{did_you_mean(key, list(FAMILIES))} Families: {', '.join(FAMILIES)}"
        )
    return EVALUATE_MODULES_DIR / f"rlhf_eval_{key}"


__all__ = [
    "AGGREGATIONS",
    "EVALUATE_MODULES_DIR",
    "FAMILIES",
    "REGISTRY",
    "UNITS",
    "Detector",
    "aggregate",
    "detector",
    "detector_fingerprint",
    "evaluate_module_path",
    "get_detector",
    "length",
    "markdown",
    "phrases",
    "repetition",
    "run_detectors",
]
