"""Safe loading: safetensors checks, pickle refusal, remote code, resolving paths."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rlhf_eval.errors import UserInputError
from rlhf_eval.models import LoadOptions, check_config, check_weights, resolve_model_dir, validate_safetensors


@pytest.fixture
def tensors(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(64), "b": torch.ones(8, 8)}, str(path))
    return path


def test_a_whole_file_passes(tensors: Path) -> None:
    validate_safetensors(tensors)


def test_truncated_data_is_named_with_sizes(tensors: Path) -> None:
    data = tensors.read_bytes()
    tensors.write_bytes(data[:-10])
    with pytest.raises(
        UserInputError,
        match=rf"model.safetensors: truncated safetensors file \({len(data) - 10} of {len(data)} bytes\)",
    ):
        validate_safetensors(tensors)


def test_truncated_header_and_garbage(tensors: Path) -> None:
    tensors.write_bytes(tensors.read_bytes()[:20])
    with pytest.raises(UserInputError, match="its header alone needs"):
        validate_safetensors(tensors)
    tensors.write_bytes((16).to_bytes(8, "little") + b"not json at all!" + b"\0" * 8)
    with pytest.raises(UserInputError, match="corrupted safetensors header"):
        validate_safetensors(tensors)
    tensors.write_bytes(b"abc")
    with pytest.raises(UserInputError, match=r"truncated safetensors file \(3 bytes\)"):
        validate_safetensors(tensors)


class Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_pickle_weights_are_refused_and_never_unpickled(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    marker = tmp_path / "pwned"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserInputError, match=r"weights only as pickle \(pytorch_model.bin\).*--allow-pickle"):
        check_weights(model, LoadOptions())
    assert check_weights(model, LoadOptions(allow_pickle=True)) == "pickle"
    assert not marker.exists()


def test_custom_code_needs_trust_remote_code(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.X"}}))
    with pytest.raises(UserInputError, match="needs custom code.*--trust-remote-code"):
        check_config(tmp_path, LoadOptions())
    assert check_config(tmp_path, LoadOptions(trust_remote_code=True))["model_type"] == "x"


def test_bad_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(UserInputError, match=r"config.json: invalid JSON at line 1 column 2"):
        check_config(tmp_path, LoadOptions())


def test_unknown_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserInputError, match="no-such-org/no-such-model: .*hub id could not be resolved"):
        resolve_model_dir("no-such-org/no-such-model")
    with pytest.raises(UserInputError, match="path does not exist"):
        resolve_model_dir("./not/here")
