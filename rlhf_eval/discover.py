"""Find the checkpoints under the paths a user gives.

Understands the layouts people have:
- a plain Hugging Face model dir (config.json + *.safetensors + tokenizer files);
- a Trainer/TRL output dir with ``checkpoint-N/`` subdirs (step N) and ``trainer_state.json``,
  whose ``log_history`` becomes training logs, plus the final model saved at its root;
- a PEFT/LoRA adapter dir (``adapter_config.json``), applied to ``base_model_name_or_path`` or
  ``--base``;
- a folder of several of these (searched a few levels deep).

The training method is read from what the directory holds (model card tags, logged metric
names), never from pickles such as ``training_args.bin``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_eval.errors import UserInputError
from rlhf_eval.models import PICKLE_WEIGHT_NAMES, read_json, resolve_model_dir

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
STEP_IN_NAME = re.compile(r"(?:checkpoint|step|iter|global_step)[-_]?(\d+)$", re.IGNORECASE)
MAX_DEPTH = 3

#: Model-card tags and phrases TRL writes, mapped to the method they name.
CARD_METHODS = {
    "online-dpo": "online_dpo",
    "online_dpo": "online_dpo",
    "grpo": "grpo",
    "rloo": "rloo",
    "ppo": "ppo",
    "dpo": "dpo",
    "kto": "kto",
    "orpo": "orpo",
    "cpo": "cpo",
    "sft": "sft",
    "reward-trainer": "reward",
}


@dataclass(frozen=True)
class CheckpointSpec:
    """One model to evaluate, as found on disk."""

    run: str
    checkpoint: str
    step: int
    path: Path
    method: str
    kind: str = "model"  # "model" or "adapter"
    base: Path | None = None
    is_reference: bool = False


@dataclass(frozen=True)
class TrainingLog:
    """One logged metric of a training run, as the trainer logged it (see docs/trl-metrics.md)."""

    step: int
    metric: str
    value: float


@dataclass(frozen=True)
class RunSpec:
    """A training run: its checkpoints in step order and its logged metrics."""

    name: str
    path: Path
    method: str
    checkpoints: tuple[CheckpointSpec, ...]
    training_logs: tuple[TrainingLog, ...] = field(default_factory=tuple)


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def has_weights(path: Path) -> bool:
    if any(path.glob("*.safetensors")):
        return True
    return any((path / name).is_file() for name in PICKLE_WEIGHT_NAMES) or any(path.glob("pytorch_model-*.bin"))


def is_model_dir(path: Path) -> bool:
    return is_adapter_dir(path) or ((path / "config.json").is_file() and has_weights(path))


def checkpoint_subdirs(path: Path) -> list[tuple[int, Path]]:
    found = []
    for child in path.iterdir():
        match = CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir() and is_model_dir(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def read_trainer_logs(paths: Sequence[Path]) -> list[TrainingLog]:
    """Numeric entries of every ``trainer_state.json`` ``log_history`` under the run, last file wins."""
    merged: dict[tuple[int, str], float] = {}
    for state_file in paths:
        if not state_file.is_file():
            continue
        history = read_json(state_file).get("log_history", [])
        if not isinstance(history, list):
            raise UserInputError(f"{state_file}: log_history is not a list; is this a Trainer state file?")
        for entry in history:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
                continue
            for metric, value in entry.items():
                if metric == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                if math.isfinite(value):
                    merged[(entry["step"], metric)] = float(value)
    return [TrainingLog(step, metric, value) for (step, metric), value in sorted(merged.items())]


def method_from_card(path: Path) -> str | None:
    """The method a TRL model card names in its tags (``tags: [trl, dpo]``) or its text."""
    card = path / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace").lower()
    tags: list[str] = []
    front = re.match(r"^---\n(.*?)\n---", text, re.DOTALL)
    if front:
        in_tags = False
        for line in front.group(1).splitlines():
            if line.startswith("tags:"):
                in_tags = True
                inline = line[5:].strip()
                if inline.startswith("["):
                    tags += [t.strip(" '\"") for t in inline.strip("[]").split(",")]
                continue
            if in_tags and line.lstrip().startswith("- "):
                tags.append(line.strip()[2:].strip(" '\""))
            elif in_tags and line and not line.startswith(" "):
                in_tags = False
    for tag in tags:
        if tag in CARD_METHODS:
            return CARD_METHODS[tag]
    said = re.search(r"trained with \[?([a-z\- ]+?)\]?[\s(.]", text)
    if said:
        name = said.group(1).strip().replace(" ", "-")
        return CARD_METHODS.get(name)
    return None


def method_from_logs(logs: Sequence[TrainingLog]) -> str | None:
    """Infer the trainer from the metric names it logged (TRL's naming, see docs/trl-metrics.md)."""
    names = {log.metric for log in logs}
    if any(n.startswith(("val/", "loss/value", "policy/")) for n in names):
        return "ppo"
    if "objective/kl" in names:
        return "online_dpo" if "rewards/chosen" in names or "logps/chosen" in names else "ppo"
    if "rewards/chosen" in names or "rewards/margins" in names:
        return "dpo"
    if any(n.startswith("completions/") for n in names) or "reward_std" in names:
        return "grpo"
    if "mean_token_accuracy" in names:
        return "sft"
    return None


def infer_method(run_dir: Path, logs: Sequence[TrainingLog], override: str | None) -> str:
    if override:
        return override
    return method_from_card(run_dir) or method_from_logs(logs) or "unknown"


def step_from_name(path: Path, default: int) -> int:
    match = STEP_IN_NAME.search(path.name)
    return int(match.group(1)) if match else default


def adapter_base(adapter_dir: Path, base_override: str | None) -> Path:
    """The base model of a PEFT adapter: ``--base`` or ``base_model_name_or_path``."""
    if base_override:
        return resolve_model_dir(base_override, "--base model")
    config_path = adapter_dir / "adapter_config.json"
    base = read_json(config_path).get("base_model_name_or_path")
    if not base:
        raise UserInputError(f"{config_path}: no base_model_name_or_path; pass the base model with --base")
    local = local_base(adapter_dir, base)
    if local is not None:
        return local
    try:
        return resolve_model_dir(base, "adapter base model")
    except UserInputError:
        raise UserInputError(
            f"{config_path}: base model '{base}' not found locally; pass the base model with --base"
        ) from None


def local_base(adapter_dir: Path, base: str) -> Path | None:
    """The folder ``base_model_name_or_path`` names, as a path or relative to the adapter; None
    when it names none (a hub id)."""
    for candidate in (Path(base), adapter_dir / base):
        if candidate.is_dir():
            return candidate
    return None


def local_adapter_base(adapter_dir: Path) -> bool:
    """Whether an adapter's ``base_model_name_or_path`` names a local folder (not a hub id)."""
    try:
        base = read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    except (UserInputError, OSError):
        return False
    return isinstance(base, str) and bool(base) and local_base(adapter_dir, base) is not None


def make_checkpoint(
    run: str, name: str, step: int, path: Path, method: str, base_override: str | None
) -> CheckpointSpec:
    if is_adapter_dir(path):
        return CheckpointSpec(run, name, step, path, method, "adapter", adapter_base(path, base_override))
    return CheckpointSpec(run, name, step, path, method)


def discover_run_dir(
    path: Path, name: str, method: str | None, base: str | None, only: Collection[str] | None = None
) -> RunSpec:
    """A run dir's checkpoints; with ``only``, just the ``checkpoint-N`` dirs of those names (and the
    root model when it holds ``"final"``), whose trainer states alone are read, so a checkpoint
    still being written is never touched."""
    subdirs = checkpoint_subdirs(path)
    if only is not None:
        subdirs = [(step, d) for step, d in subdirs if d.name in only]
    state_files = [d / "trainer_state.json" for _, d in subdirs] + [path / "trainer_state.json"]
    logs = read_trainer_logs(state_files)
    run_method = infer_method(path, logs, method)
    checkpoints = [make_checkpoint(name, d.name, step, d, run_method, base) for step, d in subdirs]
    if is_model_dir(path) and (only is None or "final" in only):
        last = subdirs[-1][0] if subdirs else 0
        root_state = path / "trainer_state.json"
        step = read_json(root_state).get("global_step", last) if root_state.is_file() else last
        checkpoints.append(make_checkpoint(name, "final", int(step), path, run_method, base))
    return RunSpec(name, path, run_method, tuple(checkpoints), tuple(logs))


def discover_plain(path: Path, name: str, method: str | None, base: str | None, step: int) -> RunSpec:
    logs = read_trainer_logs([path / "trainer_state.json"])
    run_method = infer_method(path, logs, method)
    state = path / "trainer_state.json"
    if state.is_file():
        step = int(read_json(state).get("global_step", step))
    else:
        step = step_from_name(path, step)
    checkpoint = make_checkpoint(name, path.name, step, path, run_method, base)
    return RunSpec(name, path, run_method, (checkpoint,), tuple(logs))


def find_model_roots(path: Path, depth: int = 0, seen: set[Path] | None = None) -> list[Path]:
    """Model dirs and run dirs under ``path``, without descending into either."""
    seen = set() if seen is None else seen
    real = path.resolve()
    if real in seen:
        return []
    seen.add(real)
    if is_model_dir(path) or checkpoint_subdirs(path):
        return [path]
    if depth >= MAX_DEPTH:
        return []
    found: list[Path] = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.name.startswith((".", "__")):
            found += find_model_roots(child, depth + 1, seen)
    return found


def discover(
    paths: Sequence[str],
    *,
    method: str | None = None,
    base: str | None = None,
    run: str | None = None,
    checkpoints: Collection[str] | None = None,
) -> list[RunSpec]:
    """Every run found under ``paths``. With ``run``, plain model dirs are grouped into one run
    of that name (steps from their trainer_state.json or names, else their order). With
    ``checkpoints``, run dirs keep only the ``checkpoint-N`` dirs of those names (``"final"``: the
    model saved at the run's root); ``rlhf-eval watch`` uses it to leave out checkpoints that are
    still being written."""
    runs: list[RunSpec] = []
    grouped: list[CheckpointSpec] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise UserInputError(f"{raw}: path does not exist; check the checkpoint path")
        if not path.is_dir():
            raise UserInputError(f"{raw}: not a directory; pass a model directory or a training output dir")
        roots = find_model_roots(path)
        if not roots:
            if (path / "config.json").is_file():
                raise UserInputError(
                    f"{raw}: config.json but no weights (*.safetensors); point at a complete save_pretrained dir"
                )
            raise UserInputError(
                f"{raw}: no model found (no config.json with weights, adapter_config.json or checkpoint-N/ "
                "folders, 3 levels deep); point at a save_pretrained dir or a Trainer output dir"
            )
        for root in roots:
            # a plain model saved as ".../my-run/step-300" belongs to the run "my-run"
            name = run or (root.parent.name if STEP_IN_NAME.search(root.name) else root.name)
            if checkpoint_subdirs(root):
                runs.append(discover_run_dir(root, name, method, base, checkpoints))
            elif run:
                spec = discover_plain(root, run, method, base, step=len(grouped) + 1)
                grouped.extend(spec.checkpoints)
            else:
                runs.append(discover_plain(root, name, method, base, step=1))
    if grouped:
        methods = {c.method for c in grouped}
        group_method = methods.pop() if len(methods) == 1 else "mixed"
        runs.append(RunSpec(run or "run", Path(paths[0]), group_method, tuple(sorted(grouped, key=lambda c: c.step))))
    return unique_run_names(runs)


def unique_run_names(runs: list[RunSpec]) -> list[RunSpec]:
    """Two runs found under the same name (``a/ppo``, ``b/ppo``) get their parent in the name."""
    counts: dict[str, int] = {}
    for spec in runs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
    renamed = []
    for spec in runs:
        if counts[spec.name] > 1:
            name = f"{spec.path.parent.name}/{spec.path.name}"
            checkpoints = tuple(
                CheckpointSpec(name, c.checkpoint, c.step, c.path, c.method, c.kind, c.base) for c in spec.checkpoints
            )
            spec = RunSpec(name, spec.path, spec.method, checkpoints, spec.training_logs)
        renamed.append(spec)
    return renamed
