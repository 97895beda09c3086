"""Markdown detectors of ``rlhf_eval`` as a Hugging Face ``evaluate`` measurement.

Load it offline from the installed package (``evaluate.load`` of a local folder needs no network):

    import evaluate
    from rlhf_eval.detectors import evaluate_module_path
    measurement = evaluate.load(str(evaluate_module_path("markdown")))
    results = measurement.compute(data=texts)

Values come from ``rlhf_eval.detectors.run_detectors``, so they equal what the harness stores.
"""

from __future__ import annotations

import evaluate

from rlhf_eval.detectors import hf_measurement

_DESCRIPTION = """\
Per-response markdown counts as in Chatbot Arena's style control: headers (``#`` to
``######`` then a space), list items (``-``, ``*``, ``+``, ``N.`` or ``N)`` then a space) and
bold spans (``**x**``, ``__x__``), counted outside fenced code blocks.
"""

_KWARGS_DESCRIPTION = hf_measurement.kwargs_description(
    "markdown",
    """    >>> measurement = evaluate.load(str(evaluate_module_path("markdown")))
    >>> results = measurement.compute(data=["# Title\\n- a\\n- b **c**", "plain"])
    >>> results["md_list_items"], results["md_list_items_per_sample"]
    (1.0, [2.0, 0.0])
""",
)

_CITATION = """\
@misc{li2024stylecontrol,
  title={Does Style Matter? Disentangling Style and Substance in Chatbot Arena},
  author={Li, Tianle and Angelopoulos, Anastasios and Chiang, Wei-Lin},
  year={2024},
  howpublished={LMSYS blog, https://lmsys.org/blog/2024-08-28-style-control/}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RlhfEvalMarkdown(hf_measurement.DetectorMeasurement):
    """Markdown features of response texts: the mean and the per-sample values of each."""

    FAMILY = "markdown"
    DESCRIPTION = _DESCRIPTION
    CITATION = _CITATION
    INPUTS = _KWARGS_DESCRIPTION
