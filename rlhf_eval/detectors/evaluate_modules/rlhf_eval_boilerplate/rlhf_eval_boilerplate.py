"""Boilerplate detectors of ``rlhf_eval`` as a Hugging Face ``evaluate`` measurement.

Load it offline from the installed package (``evaluate.load`` of a local folder needs no network):

    import evaluate
    from rlhf_eval.detectors import evaluate_module_path
    measurement = evaluate.load(str(evaluate_module_path("boilerplate")))
    results = measurement.compute(data=texts)

Values come from ``rlhf_eval.detectors.run_detectors``, so they equal what the harness stores.
"""

from __future__ import annotations

import evaluate

from rlhf_eval.detectors import hf_measurement

_DESCRIPTION = """\
Per-response flags (1.0 or 0.0) for boilerplate phrases: AI-identity hedges, apologies,
refusals and closers (lists in ``rlhf_eval.detectors.phrases``). Case-insensitive, any
whitespace between words, and both ' and ’ match an apostrophe.
"""

_KWARGS_DESCRIPTION = hf_measurement.kwargs_description(
    "boilerplate",
    """    >>> measurement = evaluate.load(str(evaluate_module_path("boilerplate")))
    >>> results = measurement.compute(data=["As an AI, I can't say.", "Paris."])
    >>> results["hedge"], results["hedge_per_sample"]
    (0.5, [1.0, 0.0])
""",
)

_CITATION = """\
@article{ouyang2022training,
  title={Training language models to follow instructions with human feedback},
  author={Ouyang, Long and Wu, Jeff and Jiang, Xu and others},
  journal={arXiv preprint arXiv:2203.02155},
  year={2022}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RlhfEvalBoilerplate(hf_measurement.DetectorMeasurement):
    """Boilerplate features of response texts: the mean and the per-sample values of each."""

    FAMILY = "boilerplate"
    DESCRIPTION = _DESCRIPTION
    CITATION = _CITATION
    INPUTS = _KWARGS_DESCRIPTION
