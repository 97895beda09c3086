"""Reward sources: reward-model directories (or hub ids) and Python callables, plus ensembles.

A scorer spec on the command line is one of
- a reward-model directory or hub id (``AutoModelForSequenceClassification``): with one label
  the score is its logit; with several, name one: ``path@label=positive``;
- a Python callable, ``module:function`` or ``path/to/file.py:function``, taking
  ``(prompts: list[str], responses: list[str]) -> list[float]``; options after ``@`` are passed
  as keyword arguments (``file.py:fn@alpha=0.5``).

Every scorer has a fingerprint (the model's file hashes and label, or the callable's source and
arguments), so a cached score is reused only when the scorer is the same.

Ensembles (Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization"): members
are standardized on the reference policy's samples, then combined by the mean, the worst case
(min) or the uncertainty-weighted mean − λ·Var (population variance across members).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from rlhf_eval.attention import planless_attention
from rlhf_eval.errors import UserInputError
from rlhf_eval.fingerprint import FileStat, fingerprint_files, model_files
from rlhf_eval.models import (
    LoadOptions,
    context_length,
    load_sequence_classifier,
    load_tokenizer,
    read_json,
    resolve_model_dir,
)
from rlhf_eval.records import Prompt, content_hash

ENSEMBLE_MODES = ("mean", "min", "uwo")
DEFAULT_UWO_LAMBDA = 0.5


@dataclass(frozen=True)
class ScorerSpec:
    """A scorer as the user wrote it: the target and its ``@key=value`` options."""

    raw: str
    target: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def is_callable(self) -> bool:
        if Path(self.target).exists():
            return False
        left, sep, right = self.target.rpartition(":")
        return bool(sep) and right.isidentifier() and bool(left)


def parse_scorer_spec(text: str) -> ScorerSpec:
    """Split ``target@key=value,key=value``.

    >>> parse_scorer_spec("rm_dir@label=positive").options
    (('label', 'positive'),)
    >>> parse_scorer_spec("pkg.mod:score").is_callable
    True
    """
    text = text.strip()
    if not text:
        raise UserInputError("--proxy/--gold: empty scorer; pass a reward-model dir, a hub id or module:function")
    target, sep, tail = text.rpartition("@")
    if not sep or "=" not in tail:
        return ScorerSpec(text, text)
    options: list[tuple[str, Any]] = []
    for part in tail.split(","):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise UserInputError(f"{text}: scorer option '{part}' is not key=value; write e.g. {target}@label=positive")
        parsed = yaml.safe_load(value) if value.strip() else ""
        options.append((key.strip(), parsed if isinstance(parsed, int | float | bool) else value.strip()))
    return ScorerSpec(text, target, tuple(options))


@dataclass
class Scorer:
    """A loaded (or lazily loadable) reward source."""

    scorer_id: str
    name: str
    kind: str
    spec: dict[str, Any]
    score_fn: Callable[[Sequence[Prompt], Sequence[str]], list[float | None]] = field(repr=False)
    higher_is_better: bool = True

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float | None]:
        """Scores for (prompt, response) pairs; NaN and infinite values come back as None."""
        values = self.score_fn(prompts, responses)
        if len(values) != len(responses):
            raise UserInputError(
                f"{self.name}: scorer returned {len(values)} scores for {len(responses)} responses; "
                "it must return one float per response"
            )
        return [clean_score(v, self.name) for v in values]


def clean_score(value: Any, name: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserInputError(
            f"{name}: scorer returned {type(value).__name__} {value!r}; it must return floats"
        ) from None
    return number if math.isfinite(number) else None


def join_prompt_response(prompt: str, response: str) -> str:
    """Plain-text input of a reward model without a chat template: prompt then response, with a
    space between them unless one is already there (the layout of TRL's reward datasets).

    >>> join_prompt_response("Q?", "A.")
    'Q? A.'
    >>> join_prompt_response("Q?\\n", "A.")
    'Q?\\nA.'
    """
    if not prompt or not response or prompt[-1].isspace() or response[0].isspace():
        return prompt + response
    return prompt + " " + response


class RewardModelScorer:
    """Scores with a sequence classifier, formatting each pair with the RM's own tokenizer and
    chat template; batches sorted by length; counts inputs truncated to the RM's context."""

    def __init__(self, model_dir: Path, label: Any, options: LoadOptions, *, token_budget: int = 16384) -> None:
        self.model_dir = model_dir
        self.label = label
        self.load_options = options
        self.token_budget = token_budget
        self.model: Any = None
        self.tokenizer: Any = None
        self.label_index = 0
        self.truncated = 0
        self.shares_prefixes = False

    def load(self) -> None:
        if self.model is not None:
            return
        self.model = load_sequence_classifier(self.model_dir, self.load_options)
        self.tokenizer = load_tokenizer([self.model_dir], self.load_options, owner=self.model_dir)
        self.tokenizer.padding_side = "right"
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.label_index = resolve_label(self.model_dir, self.model.config, self.label)
        from rlhf_eval.reward_forward import shares_prefixes

        self.shares_prefixes = shares_prefixes(self.model, int(self.tokenizer.pad_token_id), self.label_index)

    def encode(self, prompt: Prompt, response: str) -> list[int]:
        template = getattr(self.tokenizer, "chat_template", None)
        if template:
            messages = prompt.messages_list or [{"role": "user", "content": prompt.display_text}]
            text = self.tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": response}], tokenize=False
            )
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(join_prompt_response(prompt.display_text, response))["input_ids"]
        limit = min(context_length(self.model), int(getattr(self.tokenizer, "model_max_length", 1 << 30)))
        if len(ids) > limit:
            self.truncated += 1
            ids = ids[-limit:]
        return list(ids)

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float | None]:
        """Scores in the order given. The samples of a prompt share one forward of their common
        prefix where the model allows it (``reward_forward``); the rest are whole forwards."""
        import torch

        from rlhf_eval.reward_forward import pooled_scores, prefix_groups, shared_prefix_scores

        self.load()
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        pad_id = int(self.tokenizer.pad_token_id)
        results: list[float | None] = [None] * len(encoded)
        with torch.inference_mode(), planless_attention(self.model.device):
            groups, whole = (
                prefix_groups(encoded, prompts, pad_id) if self.shares_prefixes else ([], list(range(len(encoded))))
            )
            for row, value in shared_prefix_scores(
                self.model, encoded, groups, pad_id, self.token_budget, self.label_index
            ).items():
                results[row] = value
            values = pooled_scores(self.model, [encoded[i] for i in whole], pad_id, self.token_budget, self.label_index)
            for row, value in zip(whole, values, strict=True):
                results[row] = value
        return results


def resolve_label(model_dir: Path, config: Any, label: Any) -> int:
    """The output index to read: the only one, or the label the user named."""
    num_labels = int(getattr(config, "num_labels", 1))
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if num_labels == 1:
        return 0
    names = ", ".join(id2label.get(i, str(i)) for i in range(num_labels))
    if label is None:
        example = id2label.get(num_labels - 1, str(num_labels - 1))
        raise UserInputError(
            f"{model_dir}: reward model has {num_labels} labels ({names}) and none was chosen; "
            f"name one, e.g. {model_dir}@label={example}"
        )
    for index, name in id2label.items():
        if str(label) == name:
            return index
    if isinstance(label, int) and 0 <= label < num_labels:
        return label
    raise UserInputError(f"{model_dir}: no label '{label}' in this reward model; choose one of: {names}")


def load_callable(target: str) -> Callable[..., Any]:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    location, _, attr = target.rpartition(":")
    if location.endswith(".py"):
        path = Path(location).expanduser()
        if not path.is_file():
            raise UserInputError(f"{location}: scorer file not found; check the path in {target}")
        module_name = f"rlhf_eval_scorer_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise UserInputError(f"{location}: cannot import this file as Python; check {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise UserInputError(f"{location}: importing the scorer failed ({type(exc).__name__}: {exc})") from None
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as exc:
            raise UserInputError(
                f"{target}: cannot import module '{location}' ({exc}); check the name or use file.py:function"
            ) from None
    function = getattr(module, attr, None)
    if function is None or not callable(function):
        raise UserInputError(f"{target}: '{attr}' is not a callable in {location}; check the function name")
    return function


def callable_fingerprint(function: Callable[..., Any], kwargs: dict[str, Any]) -> str:
    """Hash of the callable's source, its module's source, and its arguments."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        source = repr(function)
    module_file = inspect.getsourcefile(function) if inspect.isfunction(function) else None
    module_source = Path(module_file).read_bytes() if module_file and Path(module_file).is_file() else b""
    return content_hash("callable", source, hashlib.sha256(module_source).hexdigest(), kwargs, length=20)


def build_scorer(text: str, options: LoadOptions, hash_cache: dict[FileStat, str] | None = None) -> Scorer:
    """A scorer from its command-line spec; reward models load lazily, on first use."""
    spec = parse_scorer_spec(text)
    kwargs = spec.options_dict
    if spec.is_callable:
        function = load_callable(spec.target)

        def run(prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float | None]:
            try:
                return list(function([p.display_text for p in prompts], list(responses), **kwargs))
            except UserInputError:
                raise
            except Exception as exc:
                reason = " ".join(str(exc).split())[:200]  # one line, whatever the exception says
                raise UserInputError(
                    f"{spec.target}: scorer raised {type(exc).__name__}: {reason}; fix the function (it gets "
                    "a list of prompts and a list of responses and returns one float per response)"
                ) from None

        fp = callable_fingerprint(function, kwargs)
        return Scorer(f"callable-{fp}", spec.raw, "callable", {"target": spec.target, "kwargs": kwargs}, run)
    model_dir = resolve_model_dir(spec.target, "reward model")
    unknown = set(kwargs) - {"label"}
    if unknown:
        raise UserInputError(
            f"{spec.raw}: unknown reward-model option(s) {sorted(unknown)}; the only one is label=NAME"
        )
    config = read_json(model_dir / "config.json") if (model_dir / "config.json").is_file() else {}
    if not config:
        raise UserInputError(f"{model_dir}: no config.json; a reward model is a save_pretrained sequence classifier")
    label = kwargs.get("label")
    id2label = config.get("id2label") or {}
    num_labels = len(id2label) if id2label else int(config.get("num_labels", 2))
    resolve_label(model_dir, SimpleNamespace(num_labels=num_labels, id2label=id2label), label)  # fail before work
    scorer = RewardModelScorer(model_dir, label, options)
    fp = fingerprint_files(model_files(model_dir), hash_cache, extra=("label", label))
    return Scorer(f"rm-{fp}", spec.raw, "reward_model", {"path": str(model_dir), "label": label}, scorer)


@dataclass(frozen=True)
class EnsembleMode:
    """How an ensemble combines its standardized members."""

    mode: str = "mean"
    lam: float = DEFAULT_UWO_LAMBDA


def parse_ensemble(text: str) -> EnsembleMode:
    """``mean``, ``min`` or ``uwo[:lambda]``.

    >>> parse_ensemble("uwo:0.25")
    EnsembleMode(mode='uwo', lam=0.25)
    """
    mode, _, value = text.partition(":")
    if mode not in ENSEMBLE_MODES:
        raise UserInputError(f"--ensemble {text}: unknown mode; use one of mean, min, uwo[:lambda]")
    if value and mode != "uwo":
        raise UserInputError(f"--ensemble {text}: only uwo takes a lambda (uwo:0.5)")
    try:
        lam = float(value) if value else DEFAULT_UWO_LAMBDA
    except ValueError:
        raise UserInputError(f"--ensemble {text}: lambda must be a number, e.g. uwo:0.5") from None
    if lam < 0 or not math.isfinite(lam):
        raise UserInputError(f"--ensemble {text}: lambda must be >= 0")
    return EnsembleMode(mode, lam)


def member_stats(reference_scores: Sequence[float | None]) -> tuple[float, float]:
    """Mean and population standard deviation of a member on the reference's samples; a
    constant member gets a scale of 1 (it then only shifts)."""
    values = [v for v in reference_scores if v is not None]
    if not values:
        return 0.0, 1.0
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / len(values)
    return mean, math.sqrt(var) if var > 0 else 1.0


def aggregate(
    members: Sequence[Sequence[float | None]], stats: Sequence[tuple[float, float]], mode: EnsembleMode
) -> list[float | None]:
    """Combine member scores per sample after z = (s − mean_ref) / std_ref.

    >>> aggregate([[1.0, 3.0], [3.0, 3.0]], [(0.0, 1.0), (0.0, 1.0)], EnsembleMode("uwo", 0.5))
    [1.5, 3.0]
    """
    out: list[float | None] = []
    for row in zip(*members, strict=True):
        if any(v is None for v in row):
            out.append(None)
            continue
        z = [(float(v) - m) / s for v, (m, s) in zip(row, stats, strict=True)]
        mean = sum(z) / len(z)
        if mode.mode == "mean":
            out.append(mean)
        elif mode.mode == "min":
            out.append(min(z))
        else:
            variance = sum((x - mean) ** 2 for x in z) / len(z)
            out.append(mean - mode.lam * variance)
    return out


def ensemble_id(member_ids: Sequence[str], mode: EnsembleMode, reference_fp: str) -> str:
    """Fingerprint of an ensemble: its members, its mode and the reference it is standardized on."""
    return "ens-" + content_hash("ensemble", list(member_ids), mode.mode, mode.lam, reference_fp, length=20)
