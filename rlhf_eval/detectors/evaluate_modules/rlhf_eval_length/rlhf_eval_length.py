"""Length detectors of ``rlhf_eval`` as a Hugging Face ``evaluate`` measurement.

Load it offline from the installed package (``evaluate.load`` of a local folder needs no network):

    import evaluate
    from rlhf_eval.detectors import evaluate_module_path
    measurement = evaluate.load(str(evaluate_module_path("length")))
    results = measurement.compute(data=texts)

Values come from ``rlhf_eval.detectors.run_detectors``, so they equal what the harness stores.
"""

from __future__ import annotations

import evaluate

from rlhf_eval.detectors import hf_measurement

_DESCRIPTION = """\
Per-response length in Unicode code points (``len(text)``) and in whitespace-separated
words (``len(text.split())``).
"""

_KWARGS_DESCRIPTION = hf_measurement.kwargs_description(
    "length",
    """    >>> measurement = evaluate.load(str(evaluate_module_path("length")))
    >>> results = measurement.compute(data=["héllo wörld", ""])
    >>> results["length_words"], results["length_words_per_sample"]
    (1.0, [2.0, 0.0])
""",
)

_CITATION = """\
@article{singhal2023long,
  title={A Long Way to Go: Investigating Length Correlations in RLHF},
  author={Singhal, Prasann and Goyal, Tanya and Xu, Jiacheng and Durrett, Greg},
  journal={arXiv preprint arXiv:2310.03716},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RlhfEvalLength(hf_measurement.DetectorMeasurement):
    """Length features of response texts: the mean and the per-sample values of each."""

    FAMILY = "length"
    DESCRIPTION = _DESCRIPTION
    CITATION = _CITATION
    INPUTS = _KWARGS_DESCRIPTION
