"""Completeness checks of checkpoint dirs on files these tests write: truncated and padded
safetensors, missing shards, bad JSON, a missing trainer state, staging names, recent changes."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from rlhf_eval.checkpoint_ready import (
    FileEntry,
    checkpoint_step,
    content_reason,
    is_trainer_run,
    root_model_reason,
    safetensors_reason,
    settle_reason,
    sharded_reason,
    snapshot,
    why_not_ready,
)
from rlhf_eval.watch import FINAL, Scanner

LONG_AGO = 1_000_000_000.0  # seconds since the epoch (2001): older than any settle period


def write_weights(path: Path, n: int = 8) -> Path:
    save_file({"w": np.arange(n, dtype=np.float32), "b": np.zeros(2, dtype=np.float32)}, str(path))
    return path


def make_checkpoint(path: Path, *, state: bool = True, adapter: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if adapter:
        (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        write_weights(path / "adapter_model.safetensors")
    else:
        (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
        write_weights(path / "model.safetensors")
    if state:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": 1, "log_history": []}))
    return path


def age(path: Path, seconds: float = 3600.0) -> None:
    """Set every file's and dir's time ``seconds`` back, as a copy with preserved times would."""
    old = time.time() - seconds
    for entry in [*path.rglob("*"), path]:
        os.utime(entry, (old, old))


def test_checkpoint_names_and_staging_names() -> None:
    assert checkpoint_step("checkpoint-0") == 0 and checkpoint_step("checkpoint-1200") == 1200
    for name in ("tmp-checkpoint-5", "checkpoint-5.tmp", "checkpoint-", "checkpoint-x", "global_step5", "final"):
        assert checkpoint_step(name) is None


def test_a_complete_checkpoint_is_ready(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "run" / "checkpoint-2")
    assert why_not_ready(checkpoint, settle=2.0, now=time.time() + 10) == ""
    assert why_not_ready(checkpoint, settle=0) == ""


def test_staging_dirs_are_never_ready(tmp_path: Path) -> None:
    staging = make_checkpoint(tmp_path / "run" / "tmp-checkpoint-2")
    assert "not a checkpoint-N directory name" in why_not_ready(staging, settle=0)


def test_safetensors_cut_at_every_stage_is_not_ready(tmp_path: Path) -> None:
    whole = write_weights(tmp_path / "whole.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", whole[:8])
    assert safetensors_reason(tmp_path / "whole.safetensors") == ""
    cases = {
        4: "4 bytes, the header is not written yet",  # not even the length
        8 + header_len // 2: f"the header alone needs {8 + header_len}",  # half the JSON header
        len(whole) - 1: f"{len(whole) - 1} of {len(whole)} bytes written",  # one data byte short
    }
    for size, expected in cases.items():
        cut = tmp_path / f"cut-{size}.safetensors"
        cut.write_bytes(whole[:size])
        assert expected in safetensors_reason(cut), size
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(whole + b"\0\0\0")
    assert "3 more than its header describes" in safetensors_reason(padded)


def test_safetensors_with_a_bad_header_is_not_ready(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.safetensors"
    bad_json.write_bytes(struct.pack("<Q", 5) + b"{nope")
    assert "header is not JSON" in safetensors_reason(bad_json)
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    assert "not plausible" in safetensors_reason(huge)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}}).encode()
    no_offsets = tmp_path / "offsets.safetensors"
    no_offsets.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert "no valid data_offsets" in safetensors_reason(no_offsets)


def test_truncated_weights_in_a_checkpoint(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "run" / "checkpoint-4")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert why_not_ready(checkpoint, settle=0).startswith("checkpoint-4: model.safetensors: ")


def test_config_must_parse(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "run" / "checkpoint-1")
    (checkpoint / "config.json").write_text('{"model_type": "gp')
    assert "config.json does not parse yet" in why_not_ready(checkpoint, settle=0)
    (checkpoint / "config.json").write_text("[1, 2]")
    assert "config.json is not a JSON object" in why_not_ready(checkpoint, settle=0)
    (checkpoint / "config.json").unlink()
    assert "config.json not written yet" in why_not_ready(checkpoint, settle=0)


def test_config_but_no_weights_yet(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoint-1"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "no weights written yet" in why_not_ready(checkpoint, trainer_run=False, settle=0)


def test_peft_adapter_checkpoint(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "run" / "checkpoint-3", adapter=True)
    assert why_not_ready(checkpoint, settle=0) == ""
    (checkpoint / "adapter_config.json").write_text("{")
    assert "adapter_config.json does not parse yet" in why_not_ready(checkpoint, settle=0)


def sharded_model(path: Path, shards: int = 3) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    weight_map = {}
    for k in range(1, shards + 1):
        name = f"model-{k:05d}-of-{shards:05d}.safetensors"
        write_weights(path / name, n=4 + k)
        weight_map[f"layer{k}.w"] = name
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def test_sharded_checkpoint(tmp_path: Path) -> None:
    checkpoint = sharded_model(tmp_path / "run" / "checkpoint-7")
    assert sharded_reason(checkpoint) == "" and why_not_ready(checkpoint, trainer_run=False, settle=0) == ""
    second = checkpoint / "model-00002-of-00003.safetensors"
    data = second.read_bytes()
    second.write_bytes(data[:-1])  # a shard one byte short
    assert "model-00002-of-00003.safetensors" in why_not_ready(checkpoint, trainer_run=False, settle=0)
    second.unlink()  # the index names a shard that is not there
    assert "lists model-00002-of-00003.safetensors, not written yet" in sharded_reason(checkpoint)
    second.write_bytes(data)
    (checkpoint / "model.safetensors.index.json").write_text('{"weight_map": {')
    assert "model.safetensors.index.json does not parse yet" in sharded_reason(checkpoint)
    (checkpoint / "model.safetensors.index.json").unlink()  # shards written, index not yet
    assert "model.safetensors.index.json not written yet (3 shards)" in sharded_reason(checkpoint)
    (checkpoint / "model-00003-of-00003.safetensors").unlink()
    assert "shard 3 of 3 not written yet" in sharded_reason(checkpoint)


def test_trainer_state_is_required_in_trainer_runs(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint-2")  # with trainer_state.json: this is a Trainer run
    pending = make_checkpoint(run / "checkpoint-4", state=False)
    assert is_trainer_run(run)
    assert "trainer_state.json not written yet (Trainer writes it last)" in why_not_ready(pending, settle=0)
    (pending / "trainer_state.json").write_text('{"global_step": 4, "log_hi')
    assert "trainer_state.json does not parse yet" in why_not_ready(pending, settle=0)
    (pending / "trainer_state.json").write_text('{"global_step": 4}')
    assert why_not_ready(pending, settle=0) == ""


def test_trainer_files_mean_a_trainer_checkpoint_even_in_the_first_one(tmp_path: Path) -> None:
    first = make_checkpoint(tmp_path / "run" / "checkpoint-1", state=False)
    assert not is_trainer_run(tmp_path / "run")
    assert why_not_ready(first, settle=0) == ""  # a plain save_pretrained dir named checkpoint-1
    (first / "training_args.bin").write_bytes(b"args")  # Trainer writes it with the weights
    assert "trainer_state.json not written yet" in content_reason(first, trainer_run=False)


def test_recent_changes_are_waited_for(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "run" / "checkpoint-2")
    now = time.time()
    assert "changed" in why_not_ready(checkpoint, settle=5.0, now=now)
    assert why_not_ready(checkpoint, settle=5.0, now=now + 6.0) == ""
    entries = (FileEntry(".", 0, 0), FileEntry("model.safetensors", 10, int(99.5e9)))
    assert settle_reason(entries, settle=2.0, now=100.0) == "model.safetensors changed 0.5 s ago (settle 2 s)"
    assert settle_reason(entries, settle=0.0, now=100.0) == ""


def test_snapshot_sees_a_copy_that_keeps_old_file_times(tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "source" / "checkpoint-2")
    age(source)
    copy = tmp_path / "run" / "checkpoint-2"
    copy.mkdir(parents=True)
    shutil.copy2(source / "config.json", copy / "config.json")  # an old time on the file...
    assert (copy / "config.json").stat().st_mtime < time.time() - 3000
    assert "changed" in settle_reason(snapshot(copy), settle=2.0)  # ...but the directory just changed
    shutil.copytree(source, copy, dirs_exist_ok=True)
    age(copy)
    assert settle_reason(snapshot(copy), settle=2.0) == ""


def test_scanner_wants_two_identical_looks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint-2")
    make_checkpoint(run / "tmp-checkpoint-4")  # a staging dir: ignored, never listed
    age(run)
    scanner = Scanner(run, settle=2.0)
    first = scanner.scan()
    assert first.ready == {} and "first seen" in first.waiting["checkpoint-2"]
    second = scanner.scan()
    assert list(second.ready) == ["checkpoint-2"] and second.waiting == {}
    (run / "checkpoint-2" / "extra.txt").write_text("x")
    age(run)  # same old times, but a new file: changed since the last look
    assert "changed since the last poll" in scanner.scan().waiting["checkpoint-2"]
    assert list(scanner.scan().ready) == ["checkpoint-2"]


def test_root_model_is_ready_once_every_checkpoint_is(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_checkpoint(run / "checkpoint-2")
    make_checkpoint(run / "checkpoint-4", state=False)
    make_checkpoint(run, state=False)  # the final save at the root, no trainer_state.json
    (run / "training_args.bin").write_bytes(b"args")  # Trainer.save_model writes it at the root too
    age(run)
    assert root_model_reason(run, settle=2.0) == ""
    scanner = Scanner(run, settle=0)
    scan = scanner.scan()
    assert list(scan.ready) == ["checkpoint-2"] and FINAL not in scan.ready  # checkpoint-4 still pending
    make_checkpoint(run / "checkpoint-4")
    assert list(scanner.scan().ready) == ["checkpoint-2", "checkpoint-4", FINAL]
    (run / "trainer_state.json").write_text("{")
    assert "trainer_state.json does not parse yet" in root_model_reason(run, settle=0)
    assert "trainer_state.json does not parse yet" in scanner.scan().blocker


def test_a_run_dir_not_created_yet(tmp_path: Path) -> None:
    scan = Scanner(tmp_path / "run").scan()
    assert scan.ready == {} and "not created yet" in scan.blocker
