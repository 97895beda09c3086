"""Content fingerprints: an adapter's config is read in canonical form, so the same adapter saved
twice (another directory, another ``PYTHONHASHSEED`` ordering PEFT's module sets) keeps its
fingerprint, while anything that changes what it computes changes it."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_eval.fingerprint import (
    FileStat,
    adapter_fingerprint,
    canonical_adapter_config,
    fingerprint_files,
    model_files,
    sha256_file,
)
from rlhf_eval.records import content_hash

WEIGHTS = b"adapter weights \x00\x01\x02"


def write_adapter(folder: Path, weights: bytes = WEIGHTS, **config: object) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(weights)
    settings = {
        "base_model_name_or_path": str(folder.parent / "base"),
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "target_modules": ["c_fc", "c_attn"],
    }
    settings.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(settings), encoding="utf-8")
    (folder / "README.md").write_text("a model card", encoding="utf-8")
    return folder


def test_the_same_adapter_saved_elsewhere_in_another_order_keeps_its_fingerprint(tmp_path: Path) -> None:
    first = write_adapter(tmp_path / "one" / "checkpoint-10")
    second = write_adapter(
        tmp_path / "two" / "checkpoint-10",
        target_modules=["c_attn", "c_fc"],
        base_model_name_or_path="/elsewhere/base",
        revision="main",
    )
    assert first.joinpath("adapter_config.json").read_bytes() != second.joinpath("adapter_config.json").read_bytes()
    assert adapter_fingerprint(first, "base-fp") == adapter_fingerprint(second, "base-fp")


def test_what_changes_the_computation_changes_the_fingerprint(tmp_path: Path) -> None:
    reference = adapter_fingerprint(write_adapter(tmp_path / "a"), "base-fp")
    assert adapter_fingerprint(write_adapter(tmp_path / "b", r=16), "base-fp") != reference
    assert adapter_fingerprint(write_adapter(tmp_path / "c", target_modules=["c_attn"]), "base-fp") != reference
    assert adapter_fingerprint(write_adapter(tmp_path / "d", weights=WEIGHTS + b"!"), "base-fp") != reference
    assert adapter_fingerprint(write_adapter(tmp_path / "e"), "another-base") != reference


def test_adapter_fingerprint_is_the_files_and_the_canonical_config(tmp_path: Path) -> None:
    folder = write_adapter(tmp_path / "a")
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    canonical = {k: v for k, v in config.items() if k != "base_model_name_or_path"}
    canonical["target_modules"] = ["c_attn", "c_fc"]
    weights = [("adapter_model.safetensors", sha256_file(folder / "adapter_model.safetensors"))]
    expected = content_hash(weights, ["base-fp", canonical], length=20)
    cache: dict[FileStat, str] = {}
    assert adapter_fingerprint(folder, "base-fp", cache) == expected
    assert len(cache) == 1  # the weights' digest, for the caller to persist; the config is never cached
    assert [f.name for f in model_files(folder)] == ["adapter_config.json", "adapter_model.safetensors"]
    assert fingerprint_files(model_files(folder)) != expected  # the raw bytes would name the path


def test_canonical_config_sorts_only_set_keys_of_strings() -> None:
    config = {
        "target_modules": ["q", "k"],
        "modules_to_save": ["lm_head", "embed"],
        "layers_to_transform": [3, 1],
        "target_modules_regex": "x",
        "exclude_modules": None,
    }
    canonical = canonical_adapter_config(config)
    assert canonical["target_modules"] == ["k", "q"] and canonical["modules_to_save"] == ["embed", "lm_head"]
    assert canonical["layers_to_transform"] == [3, 1] and canonical["exclude_modules"] is None
    assert config["target_modules"] == ["q", "k"]  # the input is left as it was
