"""From discovered checkpoints to the distinct sets of weights to sample ("model units").

Several checkpoints can hold the same weights (the reference is step 0 of every run; a
Trainer's final save repeats its last ``checkpoint-N``). Each distinct fingerprint is sampled
once and its rows serve every checkpoint that shares it. Everything here runs before any
weights are loaded, so bad input fails before any model work.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_eval.discover import CheckpointSpec, RunSpec
from rlhf_eval.errors import UserInputError
from rlhf_eval.fingerprint import FileStat, adapter_fingerprint, fingerprint_files, model_files
from rlhf_eval.models import LoadOptions, check_config, check_weights, has_tokenizer, read_json


@dataclass
class ModelUnit:
    """One distinct set of weights to sample, and the checkpoints that share it."""

    fingerprint: str
    spec: CheckpointSpec
    tokenizer_dirs: list[Path]
    checkpoints: list[CheckpointSpec] = field(default_factory=list)

    @property
    def label(self) -> str:
        first = self.checkpoints[0] if self.checkpoints else self.spec
        return f"{first.run}/{first.checkpoint}"


def tokenizer_dirs(spec: CheckpointSpec) -> list[Path]:
    """Where a checkpoint's tokenizer may be: its dir, its run's root, an adapter's base."""
    dirs = [spec.path]
    if spec.path.name.startswith("checkpoint-"):
        dirs.append(spec.path.parent)
    if spec.base is not None:
        dirs.append(spec.base)
    return dirs


def validate_checkpoint(spec: CheckpointSpec, options: LoadOptions) -> None:
    """Every check that needs no weights loaded: configs, weight files, a tokenizer."""
    if spec.kind == "adapter":
        assert spec.base is not None
        check_config(spec.base, options)
        check_weights(spec.base, options)
        check_weights(spec.path, options, adapter=True)
    else:
        check_config(spec.path, options)
        check_weights(spec.path, options)
    if not any(has_tokenizer(d) for d in tokenizer_dirs(spec)):
        raise UserInputError(
            f"{spec.path}: no tokenizer found; save it next to the weights "
            f"with tokenizer.save_pretrained('{spec.path}')"
        )


def model_fingerprint(spec: CheckpointSpec, cache: MutableMapping[FileStat, str]) -> str:
    """Hash of the files that define the weights; an adapter's includes its base's and reads its
    config in canonical form (``fingerprint.canonical_adapter_config``)."""
    if spec.kind == "adapter":
        assert spec.base is not None
        return "lora-" + adapter_fingerprint(spec.path, fingerprint_files(model_files(spec.base), cache), cache)
    return fingerprint_files(model_files(spec.path), cache)


def context_length_of(spec: CheckpointSpec) -> int:
    """Positions the model attends over, from its config (an adapter's base for adapters)."""
    config = read_json((spec.base if spec.kind == "adapter" and spec.base else spec.path) / "config.json")
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def group_units(
    runs: Sequence[RunSpec], reference: CheckpointSpec, ref_fp: str, cache: MutableMapping[FileStat, str]
) -> tuple[list[ModelUnit], list[RunSpec]]:
    """Model units (the reference first) and the runs without duplicate final saves.

    The reference becomes step 0 (``checkpoint = 'reference'``) of every run; a checkpoint with
    the reference's very weights (same fingerprint) is that row, not a second one.
    """
    units: dict[str, ModelUnit] = {ref_fp: ModelUnit(ref_fp, reference, tokenizer_dirs(reference), [])}
    kept_runs = []
    for run in runs:
        seen: set[tuple[str, int]] = set()
        checkpoints = []
        for checkpoint in run.checkpoints:
            fp = model_fingerprint(checkpoint, cache)
            if checkpoint.checkpoint == "final" and (fp, checkpoint.step) in seen:
                continue  # the final save repeats the last checkpoint-N
            if fp == ref_fp:
                continue  # the reference itself: already step 0 of the run
            seen.add((fp, checkpoint.step))
            checkpoints.append((checkpoint, fp))
        kept_runs.append(RunSpec(run.name, run.path, run.method, tuple(c for c, _ in checkpoints), run.training_logs))
        units[ref_fp].checkpoints.append(
            CheckpointSpec(run.name, "reference", 0, reference.path, "base", is_reference=True)
        )
        for checkpoint, fp in checkpoints:
            unit = units.setdefault(fp, ModelUnit(fp, checkpoint, tokenizer_dirs(checkpoint)))
            unit.checkpoints.append(checkpoint)
    return list(units.values()), kept_runs
