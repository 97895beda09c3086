"""Markdown detectors of ``rlhf_eval`` as a Hugging Face ``evaluate`` measurement.

Load it offline from the installed package (``evaluate.load`` of a local folder needs no network):

    import evaluate
    from rlhf_eval.detectors import evaluate_module_path
    measurement = evaluate.load(str(evaluate_module_path("markdown")))
    results = measurement.compute(data=texts)

Values come from ``rlhf_eval.detectors.run_detectors``, so they equal what the harness stores.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from rlhf_eval.detectors import FAMILIES, aggregate, run_detectors

FEATURES = FAMILIES["markdown"]

_DESCRIPTION = """\
Per-response markdown counts as in Chatbot Arena's style control: headers (``#`` to
``######`` then a space), list items (``-``, ``*``, ``+``, ``N.`` or ``N)`` then a space) and
bold spans (``**x**``, ``__x__``), counted outside fenced code blocks.
"""

_KWARGS_DESCRIPTION = f"""
Args:
    data (`list` of `str`): response texts, one per sample.
Returns:
    one entry per feature, {", ".join(FEATURES)}: the mean over the samples (float);
    and the same names + "_per_sample": the per-sample values (list of float).
Examples:
    >>> measurement = evaluate.load(str(evaluate_module_path("markdown")))
    >>> results = measurement.compute(data=["# Title\\n- a\\n- b **c**", "plain"])
    >>> results["md_list_items"], results["md_list_items_per_sample"]
    (1.0, [2.0, 0.0])
"""

_CITATION = """\
@misc{li2024stylecontrol,
  title={Does Style Matter? Disentangling Style and Substance in Chatbot Arena},
  author={Li, Tianle and Angelopoulos, Anastasios and Chiang, Wei-Lin},
  year={2024},
  howpublished={LMSYS blog, https://lmsys.org/blog/2024-08-28-style-control/}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RlhfEvalMarkdown(evaluate.Measurement):
    """Markdown features of response texts: the mean and the per-sample values of each."""

    def _info(self) -> evaluate.MeasurementInfo:
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"data": datasets.Value("string")}),
        )

    def _compute(self, data: list[str]) -> dict[str, Any]:
        values = run_detectors(list(data), FEATURES)
        out: dict[str, Any] = {}
        for name in FEATURES:
            out[name] = aggregate(name, values[name])
            out[name + "_per_sample"] = values[name]
        return out
