"""The shared body of the ``evaluate`` measurement scripts in ``evaluate_modules/``.

``evaluate.load(<folder>)`` runs the script named after the folder, which must define a
subclass of ``evaluate.Measurement``. Each script only names its detector family, description
and citation; the class here does the work, with the harness's own ``run_detectors``, so the
values equal what the harness stores. Importing this module imports ``evaluate`` (seconds):
only the scripts do.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from rlhf_eval.detectors import FAMILIES, aggregate, run_detectors


def kwargs_description(family: str, example: str) -> str:
    """The ``inputs_description`` of a family's measurement, with a usage example."""
    features = ", ".join(FAMILIES[family])
    return f"""
Args:
    data (`list` of `str`): response texts, one per sample.
Returns:
    one entry per feature, {features}: the mean over the samples (float);
    and the same names + "_per_sample": the per-sample values (list of float).
Examples:
{example}"""


class DetectorMeasurement(evaluate.Measurement):
    """Means and per-sample values of one detector family; subclasses set the class fields."""

    FAMILY = ""
    DESCRIPTION = ""
    CITATION = ""
    INPUTS = ""

    def _info(self) -> evaluate.MeasurementInfo:
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=self.DESCRIPTION,
            citation=self.CITATION,
            inputs_description=self.INPUTS,
            features=datasets.Features({"data": datasets.Value("string")}),
        )

    def _compute(self, data: list[str]) -> dict[str, Any]:
        names = FAMILIES[self.FAMILY]
        values = run_detectors(list(data), names)
        out: dict[str, Any] = {}
        for name in names:
            out[name] = aggregate(name, values[name])
            out[name + "_per_sample"] = values[name]
        return out
