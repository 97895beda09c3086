"""Repetition detectors of ``rlhf_eval`` as a Hugging Face ``evaluate`` measurement.

Load it offline from the installed package (``evaluate.load`` of a local folder needs no network):

    import evaluate
    from rlhf_eval.detectors import evaluate_module_path
    measurement = evaluate.load(str(evaluate_module_path("repetition")))
    results = measurement.compute(data=texts)

Values come from ``rlhf_eval.detectors.run_detectors``, so they equal what the harness stores.
"""

from __future__ import annotations

import evaluate

from rlhf_eval.detectors import hf_measurement

_DESCRIPTION = """\
Per-response repetition of words (``text.split()``): seq-rep-n = 1 - unique / total n-grams
for n = 1..4 (Welleck et al. 2019), distinct-n = unique / total n-grams of the response for
n = 1, 2, the zlib compression ratio (UTF-8 bytes / compressed bytes) and a tail-loop flag
(the response ends in >= 3 copies of one span).
"""

_KWARGS_DESCRIPTION = hf_measurement.kwargs_description(
    "repetition",
    """    >>> measurement = evaluate.load(str(evaluate_module_path("repetition")))
    >>> results = measurement.compute(data=["a b a b a b", "one two three"])
    >>> results["seq_rep_2"], results["seq_rep_2_per_sample"]
    (0.3, [0.6, 0.0])
""",
)

_CITATION = """\
@inproceedings{welleck2020neural,
  title={Neural Text Generation with Unlikelihood Training},
  author={Welleck, Sean and Kulikov, Ilia and Roller, Stephen and Dinan, Emily and Cho, Kyunghyun
          and Weston, Jason},
  booktitle={International Conference on Learning Representations},
  year={2020}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RlhfEvalRepetition(hf_measurement.DetectorMeasurement):
    """Repetition features of response texts: the mean and the per-sample values of each."""

    FAMILY = "repetition"
    DESCRIPTION = _DESCRIPTION
    CITATION = _CITATION
    INPUTS = _KWARGS_DESCRIPTION
