"""Is a checkpoint directory completely written? The checks ``rlhf-eval watch`` runs before it
loads anything a trainer may still be writing.

A trainer writes a checkpoint file by file, and nothing marks the end: ``save_pretrained``
writes the config, then the weights (a safetensors file grows from its header to its last
tensor), then tokenizer files; ``transformers.Trainer`` adds the optimizer, scheduler and RNG
state, and writes ``trainer_state.json`` last. So a directory is taken as ready only when

1. its name is ``checkpoint-N`` (staging names such as ``tmp-checkpoint-N`` are skipped: some
   Trainer versions write there and rename when done);
2. ``config.json`` (``adapter_config.json`` for a PEFT adapter) parses as JSON;
3. every ``*.safetensors`` file is whole: the 8-byte little-endian header length, a JSON header,
   and a file size of exactly 8 + header length + the largest ``data_offsets`` end;
4. a sharded model's ``*.safetensors.index.json`` parses and every shard it lists is present and
   whole, and shards named ``...-0000k-of-0000n`` are all there with their index;
5. in a Trainer run, ``trainer_state.json`` is present and parses (Trainer writes it last);
6. as a last guard, nothing in the directory changed within a settle period (see ``settle_reason``;
   the watcher also wants the same sizes and times at two polls in a row).

Every check returns the reason a directory is not ready, or ``''`` when it is. Nothing here
loads a model, so a half-written file is only ever measured, never parsed as weights.
"""

from __future__ import annotations

import json
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d+)-of-(?P<total>\d+)\.safetensors$")
TRAINER_STATE = "trainer_state.json"
#: Files ``transformers.Trainer`` writes into every checkpoint before ``trainer_state.json``.
TRAINER_FILES = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")
MAX_HEADER = 100_000_000  # bytes; safetensors refuses larger headers too
DEFAULT_SETTLE = 2.0  # seconds without any change before a complete-looking directory is trusted


@dataclass(frozen=True)
class FileEntry:
    """A file's (or directory's) identity for the settle check: name, size, modification time."""

    name: str
    size: int
    mtime_ns: int


def checkpoint_step(name: str) -> int | None:
    """N of a ``checkpoint-N`` directory name; None for anything else, staging names included.

    >>> checkpoint_step("checkpoint-40"), checkpoint_step("tmp-checkpoint-40"), checkpoint_step("checkpoint-40.tmp")
    (40, None, None)
    """
    match = CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else None


def json_reason(path: Path) -> str:
    """Why ``path`` is not a JSON object file yet ('' when it is)."""
    if not path.is_file():
        return f"{path.name} not written yet"
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        return f"{path.name} does not parse yet ({type(exc).__name__})"
    if not isinstance(data, dict):
        return f"{path.name} is not a JSON object"
    return ""


def safetensors_reason(path: Path) -> str:
    """Why a safetensors file is not whole ('' when it is): its size must be exactly 8 bytes of
    header length + the JSON header + the data buffer the header describes (the largest
    ``data_offsets`` end). A writer fills the file from the front, so a partial file is short."""
    try:
        size = path.stat().st_size
        if size < 8:
            return f"{path.name}: {size} bytes, the header is not written yet"
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
            if header_len > MAX_HEADER:
                return f"{path.name}: header length {header_len} is not plausible (corrupt or still being written)"
            if 8 + header_len > size:
                return f"{path.name}: {size} bytes, the header alone needs {8 + header_len}"
            raw = handle.read(header_len)
    except OSError as exc:
        return f"{path.name}: cannot be read yet ({exc.strerror or type(exc).__name__})"
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{path.name}: the header is not JSON yet"
    if not isinstance(header, dict):
        return f"{path.name}: the header is not a JSON object"
    ends = []
    for name, meta in header.items():
        if name == "__metadata__" or not isinstance(meta, dict):
            continue
        offsets = meta.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"{path.name}: tensor {name!r} has no valid data_offsets"
        ends.append(offsets[1])
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return f"{path.name}: {size} of {expected} bytes written"
    if size > expected:
        return f"{path.name}: {size} bytes, {size - expected} more than its header describes (being rewritten?)"
    return ""


def sharded_reason(directory: Path) -> str:
    """Why a sharded model is not complete ('' when it is, or when it is not sharded)."""
    for index in sorted(directory.glob("*.safetensors.index.json")):
        reason = json_reason(index)
        if reason:
            return reason
        weight_map = json.loads(index.read_bytes()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            return f"{index.name}: no weight_map"
        for shard in sorted({str(name) for name in weight_map.values()}):
            if not (directory / shard).is_file():
                return f"{index.name} lists {shard}, not written yet"
    groups: dict[str, tuple[int, set[int]]] = {}
    for shard_file in directory.glob("*.safetensors"):
        match = SHARD_NAME.match(shard_file.name)
        if match:
            total, seen = groups.setdefault(match["prefix"], (int(match["total"]), set()))
            seen.add(int(match["index"]))
    for prefix, (total, seen) in sorted(groups.items()):
        missing = sorted(set(range(1, total + 1)) - seen)
        if missing:
            return f"{prefix}: shard {missing[0]} of {total} not written yet"
        if not (directory / f"{prefix}.safetensors.index.json").is_file():
            return f"{prefix}.safetensors.index.json not written yet ({total} shards)"
    return ""


def is_trainer_run(run_dir: Path) -> bool:
    """A ``transformers.Trainer`` run: its root or any checkpoint holds ``trainer_state.json``."""
    if (run_dir / TRAINER_STATE).is_file():
        return True
    return any((child / TRAINER_STATE).is_file() for child in run_dir.glob("checkpoint-*") if child.is_dir())


def weights_reason(directory: Path) -> str:
    """Why the config and weights of a model directory are not all written ('' when they are)."""
    adapter = (directory / "adapter_config.json").exists()
    reason = json_reason(directory / ("adapter_config.json" if adapter else "config.json"))
    if reason:
        return reason
    tensors = sorted(directory.glob("*.safetensors"))
    pickles = [p for p in directory.glob("*.bin") if p.name != "training_args.bin"]
    if not tensors and not pickles:
        return "no weights written yet"
    for tensor_file in tensors:
        reason = safetensors_reason(tensor_file)
        if reason:
            return reason
    return sharded_reason(directory)


def content_reason(directory: Path, *, trainer_run: bool) -> str:
    """Every check on what a checkpoint directory holds (not its name, not the settle period)."""
    reason = weights_reason(directory)
    if reason:
        return reason
    trainer_files = any((directory / name).exists() for name in TRAINER_FILES)
    if trainer_run or trainer_files:
        reason = json_reason(directory / TRAINER_STATE)
        if reason:
            return f"{reason} (Trainer writes it last)"
    return ""


def snapshot(directory: Path, *, recursive: bool = True) -> tuple[FileEntry, ...]:
    """Size and modification time of the directory, its files and (``recursive``) subdirectories.

    Directories are included because creating or renaming a file in one changes its time: a
    copy that preserves file times (``cp -a``, ``shutil.copytree``) still shows as recent.
    """
    entries = []
    paths = [directory, *(directory.rglob("*") if recursive else directory.iterdir())]
    for path in paths:
        try:
            stat = path.stat()
        except OSError:  # removed while we looked: the next poll sees the new state
            continue
        entries.append(FileEntry(path.relative_to(directory).as_posix(), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries, key=lambda e: e.name))


def settle_reason(entries: tuple[FileEntry, ...], settle: float, now: float | None = None) -> str:
    """Why the snapshot is too fresh ('' when nothing changed within ``settle`` seconds of ``now``).

    >>> settle_reason((FileEntry("a", 1, 10_000_000_000),), settle=2.0, now=11.0)
    'a changed 1.0 s ago (settle 2 s)'
    >>> settle_reason((FileEntry("a", 1, 10_000_000_000),), settle=2.0, now=12.5)
    ''
    """
    if settle <= 0 or not entries:
        return ""
    now = time.time() if now is None else now
    newest = max(entries, key=lambda e: e.mtime_ns)
    age = now - newest.mtime_ns / 1e9
    if age < settle:
        return f"{newest.name} changed {max(age, 0.0):.1f} s ago (settle {settle:g} s)"
    return ""


def why_not_ready(
    directory: Path, *, trainer_run: bool | None = None, settle: float = DEFAULT_SETTLE, now: float | None = None
) -> str:
    """Why the checkpoint directory is not completely written, or '' when it is.

    ``trainer_run`` (default: looked up from the parent, the run dir) requires ``trainer_state.json``;
    ``settle`` seconds must have passed since the last change (0 turns that guard off, e.g. in a
    Trainer callback that runs after the save returned).
    """
    if checkpoint_step(directory.name) is None:
        return f"{directory.name}: not a checkpoint-N directory name (a staging or other folder)"
    if not directory.is_dir():
        return f"{directory.name}: not a directory"
    if trainer_run is None:
        trainer_run = is_trainer_run(directory.parent)
    reason = content_reason(directory, trainer_run=trainer_run) or settle_reason(snapshot(directory), settle, now)
    return f"{directory.name}: {reason}" if reason else ""


def root_snapshot(run_dir: Path) -> tuple[FileEntry, ...]:
    """The run dir itself and the files at its root (the final save), not its checkpoint dirs."""
    entries = [e for e in snapshot(run_dir, recursive=False) if e.name == "." or (run_dir / e.name).is_file()]
    return tuple(entries)


def root_model_reason(run_dir: Path, *, settle: float = DEFAULT_SETTLE, now: float | None = None) -> str:
    """Why the model saved at the run's root (``trainer.save_model(output_dir)`` at the end) is not
    complete, or ''. Its ``trainer_state.json`` is optional (written by ``save_state`` only), but
    must parse when present."""
    reason = weights_reason(run_dir)
    if not reason and (run_dir / TRAINER_STATE).exists():
        reason = json_reason(run_dir / TRAINER_STATE)
    if not reason:
        reason = settle_reason(root_snapshot(run_dir), settle, now)
    return f"final model at the run root: {reason}" if reason else ""
