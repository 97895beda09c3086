"""The detector registry: one entry per stored feature, with its direction, unit and aggregation.

A detector is a pure function from a batch of response texts to one float per text. The
``@detector`` decorator records it under the feature name that the store, the gate and the
dashboard read, so a stored value can always be traced back to (name, version) and recomputed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from rlhf_eval.errors import UserInputError, did_you_mean
from rlhf_eval.records import content_hash

DetectorFn = Callable[[list[str]], list[float]]
F = TypeVar("F", bound=DetectorFn)

UNITS = ("fraction", "ratio", "flag", "count", "characters", "words")
AGGREGATIONS = ("mean",)
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


@dataclass(frozen=True)
class Detector:
    """One registered detector: the function and how to read its values."""

    name: str
    fn: DetectorFn
    higher_is_better: bool | None
    unit: str
    aggregation: str
    version: int
    description: str

    def __call__(self, texts: list[str]) -> list[float]:
        return self.fn(texts)


REGISTRY: dict[str, Detector] = {}


def detector(
    name: str,
    *,
    higher_is_better: bool | None,
    unit: str,
    aggregation: str = "mean",
    version: int = 1,
) -> Callable[[F], F]:
    """Register ``fn(texts) -> list[float]`` as the detector of feature ``name``.

    The function is returned unchanged; its docstring's first line becomes the description.
    Bump ``version`` whenever the computation changes: it is stored with every value.

    >>> @detector("doc_example_ones", higher_is_better=None, unit="count")
    ... def doc_example_ones(texts: list[str]) -> list[float]:
    ...     '''One per text.'''
    ...     return [1.0 for _ in texts]
    >>> REGISTRY["doc_example_ones"].description
    'One per text.'
    >>> del REGISTRY["doc_example_ones"]
    """
    if not _SNAKE_CASE.match(name):
        raise ValueError(f"detector name {name!r} is not snake_case; use lowercase words joined by '_'")
    if unit not in UNITS:
        hint = did_you_mean(unit, UNITS)
        raise ValueError(f"detector {name!r}: unit {unit!r} is not one of {', '.join(UNITS)}.{hint}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"detector {name!r}: aggregation {aggregation!r} is not one of {AGGREGATIONS}")
    if version < 1:
        raise ValueError(f"detector {name!r}: version must be >= 1, got {version}")

    def register(fn: F) -> F:
        previous = REGISTRY.get(name)
        if previous is not None and _qualified(previous.fn) != _qualified(fn):
            raise ValueError(
                f"detector {name!r} is already registered by {_qualified(previous.fn)}; choose another name"
            )
        doc = (fn.__doc__ or "").strip()
        REGISTRY[name] = Detector(
            name=name,
            fn=fn,
            higher_is_better=higher_is_better,
            unit=unit,
            aggregation=aggregation,
            version=version,
            description=doc.splitlines()[0] if doc else "",
        )
        return fn

    return register


def _qualified(fn: Callable[..., object]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def get_detector(name: str) -> Detector:
    """The registered detector called ``name``; a ``UserInputError`` that suggests a name if none.

    >>> get_detector("seq_rep_4").unit
    'fraction'
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UserInputError(
            f"Unknown detector {name!r}.{did_you_mean(name, sorted(REGISTRY))} "
            f"Registered: {', '.join(sorted(REGISTRY))}"
        ) from None


def run_detectors(texts: list[str], names: Iterable[str] | None = None) -> dict[str, list[float]]:
    """Per-sample values of each named detector (all registered ones by default), in name order given.

    >>> run_detectors(["a b a b a b"], ["seq_rep_2", "length_words"])
    {'seq_rep_2': [0.6], 'length_words': [6.0]}
    """
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserInputError(
                f"run_detectors: text {i} is {type(text).__name__}, not str; pass responses as strings "
                "('' for an empty response)"
            )
    selected = [get_detector(n) for n in (REGISTRY if names is None else names)]
    out: dict[str, list[float]] = {}
    for det in selected:
        values = [float(v) for v in det.fn(texts)]
        if len(values) != len(texts):
            raise RuntimeError(f"detector {det.name!r} returned {len(values)} values for {len(texts)} texts")
        out[det.name] = values
    return out


def aggregate(name: str, values: Sequence[float]) -> float:
    """A checkpoint's value of feature ``name`` from per-sample values, by its registered aggregation.

    The mean uses ``math.fsum``; an empty list gives NaN.

    >>> aggregate("tail_loop", [1.0, 0.0, 0.0, 1.0])
    0.5
    """
    det = get_detector(name)
    if det.aggregation == "mean":
        return math.fsum(values) / len(values) if len(values) else math.nan
    raise ValueError(f"detector {name!r}: unsupported aggregation {det.aggregation!r}")


def detector_fingerprint() -> str:
    """Stable hash of the (name, version) pairs of all registered detectors.

    Stored with detector scores, so a cached value is reused only when no detector changed.

    >>> detector_fingerprint() == detector_fingerprint()
    True
    >>> len(detector_fingerprint())
    16
    """
    return content_hash("detectors", sorted((d.name, d.version) for d in REGISTRY.values()))
