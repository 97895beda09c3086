"""Content fingerprints of checkpoint directories.

A checkpoint's fingerprint is a hash of its weight, config and tokenizer files, so that the
same weights evaluated twice (or found under two paths) share their cached samples. Hashing a
multi-GB file takes seconds, so each file's digest is cached against its (size, mtime_ns):
an unchanged file is never read again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from rlhf_eval.records import content_hash

#: Files whose content defines a model: weights, configs, tokenizer, adapter.
FINGERPRINT_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".bin", ".jinja", ".tiktoken")
#: Files that never change what a model computes (training state, logs, cards).
IGNORED_NAMES = frozenset(
    {
        "trainer_state.json",
        "training_args.bin",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "README.md",
    }
)


#: A PEFT adapter's config; fingerprinted by its canonical content, not its bytes.
ADAPTER_CONFIG = "adapter_config.json"
#: Adapter-config keys that PEFT holds as sets and writes as lists in an arbitrary order.
ADAPTER_SET_KEYS = ("target_modules", "exclude_modules", "modules_to_save")
#: Adapter-config keys that name where the base lives, not what the adapter computes (the base's
#: own files are fingerprinted by content next to the adapter's).
ADAPTER_LOCATION_KEYS = ("base_model_name_or_path", "revision")


@dataclass(frozen=True)
class FileStat:
    """The cheap identity of a file: if size and mtime are unchanged, the digest is reused."""

    path: str
    size: int
    mtime_ns: int


def file_stat(path: Path) -> FileStat:
    st = path.stat()
    return FileStat(str(path.resolve()), st.st_size, st.st_mtime_ns)


def sha256_file(path: Path, chunk_size: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def model_files(model_dir: Path) -> list[Path]:
    """The files of a model directory that define what it computes, sorted by name."""
    files = []
    for entry in sorted(model_dir.iterdir()):
        if not entry.is_file() or entry.name in IGNORED_NAMES or entry.name.startswith("."):
            continue
        if entry.suffix in FINGERPRINT_SUFFIXES or entry.name.endswith(".safetensors.index.json"):
            files.append(entry)
    return files


def fingerprint_files(
    files: Iterable[Path],
    cache: MutableMapping[FileStat, str] | None = None,
    *,
    extra: object = None,
) -> str:
    """Hash of (name, sha256) of each file, plus ``extra`` (e.g. the base model's fingerprint).

    ``cache`` maps a file's (path, size, mtime_ns) to its digest; digests computed here are
    added to it so the caller can persist them.
    """
    parts: list[tuple[str, str]] = []
    for path in files:
        stat = file_stat(path)
        digest = cache.get(stat) if cache is not None else None
        if digest is None:
            digest = sha256_file(path)
            if cache is not None:
                cache[stat] = digest
        parts.append((path.name, digest))
    return content_hash(parts, extra, length=20)


def canonical_adapter_config(config: dict[str, object]) -> dict[str, object]:
    """An adapter config as what it computes: without the base's location, and with the keys PEFT
    keeps as sets sorted, so two saves of the same adapter (another directory, another
    ``PYTHONHASHSEED``) compare equal.

    >>> canonical_adapter_config({"base_model_name_or_path": "/a/base", "target_modules": ["c_fc", "c_attn"], "r": 8})
    {'target_modules': ['c_attn', 'c_fc'], 'r': 8}
    """
    canonical = {k: v for k, v in config.items() if k not in ADAPTER_LOCATION_KEYS}
    for key in ADAPTER_SET_KEYS:
        value = canonical.get(key)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            canonical[key] = sorted(value)
    return canonical


def adapter_fingerprint(
    adapter_dir: Path, base_fingerprint: str, cache: MutableMapping[FileStat, str] | None = None
) -> str:
    """Hash of an adapter's files (its config in canonical form, see ``canonical_adapter_config``)
    and its base's fingerprint."""
    files = [f for f in model_files(adapter_dir) if f.name != ADAPTER_CONFIG]
    config_path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else None
    canonical = canonical_adapter_config(config) if isinstance(config, dict) else config
    return fingerprint_files(files, cache, extra=[base_fingerprint, canonical])
