"""Loading models safely: safetensors only, no remote code, clear errors for bad directories.

Every loader checks a directory before any weights are read, so a user pointing the harness
at the wrong folder gets one line naming the folder and the fix, not a traceback. Pickle
weights (``pytorch_model.bin``) can execute code when unpickled and are refused unless the
user passes ``--allow-pickle``; ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf_eval.activations import fuse_gelu_tanh
from rlhf_eval.errors import UserInputError

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "adapter_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json", "vocab.txt")
#: Tensors that value-head wrappers (older TRL PPO) save next to the policy's weights.
VALUE_HEAD_PREFIXES = ("v_head.",)


@dataclass(frozen=True)
class LoadOptions:
    """How far the user trusts the checkpoints: both flags default to the safe side."""

    allow_pickle: bool = False
    trust_remote_code: bool = False
    #: "auto": CUDA when available, else the CPU; resolved when a model loads (so a run that
    #: loads none never imports torch)
    device: str = "cpu"
    #: Run composite tanh-GELU modules as torch's fused kernel (``rlhf_eval.activations``): the same
    #: outputs up to float rounding. The sandbox's training turns it off, so that a build stays
    #: the function of its config that it was measured as.
    fused_activations: bool = True


def resolve_model_dir(spec: str, what: str = "model") -> Path:
    """A local directory for ``spec``: a path, or a hub id resolved through the local HF cache.

    With ``HF_HUB_OFFLINE=1`` only the cache is used; otherwise the snapshot is downloaded
    (weights as safetensors, configs and tokenizer files only).
    """
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserInputError(f"{spec}: {what} must be a directory (a save_pretrained folder), not a file")
        return path
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                spec,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"],
                local_files_only=os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"),
            )
            return Path(local)
        except Exception as exc:  # hub errors come in many types; all mean "not available"
            raise UserInputError(
                f"{spec}: {what} not found as a local directory, and the hub id could not be resolved "
                f"({type(exc).__name__}); check the path, or download it first with "
                f"`huggingface-cli download {spec}`"
            ) from None
    raise UserInputError(f"{spec}: {what} path does not exist; check the path")


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object file, turning every failure into a one-line UserInputError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: not UTF-8 text; re-save it as JSON") from None
    except json.JSONDecodeError as exc:
        raise UserInputError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); fix or re-save the file"
        ) from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a JSON object at the top level; re-save the file")
    return data


def validate_safetensors(path: Path) -> None:
    """Check a safetensors file's header and length without loading its tensors.

    Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data
    buffer; every tensor's ``data_offsets`` must lie inside the buffer, whose length is the
    largest end offset.
    """
    size = path.stat().st_size
    fix = "re-save it with save_pretrained or download it again"
    if size < 8:
        raise UserInputError(f"{path}: truncated safetensors file ({size} bytes); {fix}")
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > 100_000_000:
            raise UserInputError(f"{path}: corrupted safetensors header (length {header_len}); {fix}")
        if header_len > size - 8:
            raise UserInputError(
                f"{path}: truncated safetensors file ({size} bytes; its header alone needs {8 + header_len}); {fix}"
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserInputError(f"{path}: corrupted safetensors header (not JSON); {fix}") from None
    ends = [
        int(meta["data_offsets"][1])
        for name, meta in header.items()
        if name != "__metadata__" and isinstance(meta, dict) and "data_offsets" in meta
    ]
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        raise UserInputError(f"{path}: truncated safetensors file ({size} of {expected} bytes); {fix}")


def check_weights(model_dir: Path, options: LoadOptions, *, adapter: bool = False) -> str:
    """Validate a directory's weights before loading; returns "safetensors" or "pickle"."""
    tensors = sorted(model_dir.glob("*.safetensors"))
    if tensors:
        for file in tensors:
            validate_safetensors(file)
        return "safetensors"
    pickles = [p for p in model_dir.iterdir() if p.is_file() and p.name in PICKLE_WEIGHT_NAMES]
    pickles += [p for p in model_dir.glob("pytorch_model-*.bin")]
    if pickles:
        if not options.allow_pickle:
            raise UserInputError(
                f"{model_dir}: weights only as pickle ({pickles[0].name}), which can run code when loaded; "
                "convert them to safetensors (from_pretrained, then save_pretrained) "
                "or pass --allow-pickle if you trust this checkpoint"
            )
        return "pickle"
    kind = "adapter" if adapter else "model"
    raise UserInputError(
        f"{model_dir}: no {kind} weights found (*.safetensors); point at a directory written by save_pretrained"
    )


def check_config(model_dir: Path, options: LoadOptions) -> dict[str, Any]:
    """Read config.json and refuse custom code unless ``--trust-remote-code``."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise UserInputError(f"{model_dir}: no config.json; point at a directory written by save_pretrained")
    config = read_json(config_path)
    if "auto_map" in config and not options.trust_remote_code:
        raise UserInputError(
            f"{config_path}: this model needs custom code from its directory (auto_map); "
            "pass --trust-remote-code if you trust it"
        )
    if "model_type" not in config and "architectures" not in config:
        raise UserInputError(f"{config_path}: no model_type; is this a transformers model config?")
    return config


def has_tokenizer(model_dir: Path) -> bool:
    return any((model_dir / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(candidates: list[Path], options: LoadOptions, *, owner: Path) -> Any:
    """The tokenizer of the first candidate directory that has one (left padding, a pad token)."""
    for directory in candidates:
        if has_tokenizer(directory):
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=options.trust_remote_code)
            except Exception as exc:
                raise UserInputError(
                    f"{directory}: tokenizer files could not be loaded ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:160]}); re-save the tokenizer with save_pretrained"
                ) from None
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            return tokenizer
    raise UserInputError(
        f"{owner}: no tokenizer found; save it next to the weights with tokenizer.save_pretrained('{owner}')"
    )


def _from_pretrained(cls: Any, model_dir: Path, options: LoadOptions, weights: str, **kwargs: Any) -> Any:
    import torch
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # value-head tensors are reported as unexpected keys: expected here
    try:
        model = cls.from_pretrained(
            str(model_dir),
            use_safetensors=weights == "safetensors",
            trust_remote_code=options.trust_remote_code,
            dtype=torch.float32,
            **kwargs,
        )
    except UserInputError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserInputError(
            f"{model_dir}: could not load the model ({type(exc).__name__}: {first}); "
            "check that the directory is a complete save_pretrained output"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if options.fused_activations:
        fuse_gelu_tanh(model)
    return model.to(inference_device() if options.device == "auto" else options.device).eval()


def load_causal_lm(model_dir: Path, options: LoadOptions, *, adapter_base: Path | None = None) -> Any:
    """A causal LM in eval mode, fp32. With ``adapter_base``, ``model_dir`` is a PEFT adapter
    applied to that base and merged in memory (nothing merged is written to disk)."""
    from transformers import AutoModelForCausalLM

    if adapter_base is None:
        check_config(model_dir, options)
        weights = check_weights(model_dir, options)
        return _from_pretrained(AutoModelForCausalLM, model_dir, options, weights)
    check_config(adapter_base, options)
    base = _from_pretrained(AutoModelForCausalLM, adapter_base, options, check_weights(adapter_base, options))
    weights = check_weights(model_dir, options, adapter=True)
    try:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecation notices of transformers' API
            peft_model = PeftModel.from_pretrained(base, str(model_dir), use_safetensors=weights == "safetensors")
    except Exception as exc:
        raise UserInputError(
            f"{model_dir}: could not apply the LoRA/PEFT adapter to {adapter_base} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
            "check that --base is the model the adapter was trained on"
        ) from None
    return peft_model.merge_and_unload().eval()


def load_sequence_classifier(model_dir: Path, options: LoadOptions) -> Any:
    """A reward model (``AutoModelForSequenceClassification``) in eval mode, fp32."""
    from transformers import AutoModelForSequenceClassification

    check_config(model_dir, options)
    weights = check_weights(model_dir, options)
    return _from_pretrained(AutoModelForSequenceClassification, model_dir, options, weights)


def tokenizer_identity(tokenizer: Any) -> tuple[Any, ...]:
    """What must agree for two models to score the same token ids: vocabulary and specials."""
    vocab = tokenizer.get_vocab()
    return (
        len(vocab),
        hash(tuple(sorted(vocab.items()))),
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
    )


def check_same_tokenizer(policy_tok: Any, ref_tok: Any, policy_dir: Path, ref_dir: Path) -> None:
    """KL is computed on the policy's token ids under the reference: both must share a vocabulary."""
    if tokenizer_identity(policy_tok) != tokenizer_identity(ref_tok):
        raise UserInputError(
            f"{policy_dir}: its tokenizer differs from the reference's ({ref_dir}): vocabulary sizes "
            f"{len(policy_tok.get_vocab())} vs {len(ref_tok.get_vocab())}; KL needs the same tokenizer, "
            "so pass the reference this checkpoint was trained from with --ref"
        )


def context_length(model: Any) -> int:
    """The model's maximum sequence length from its config (positions it can attend over)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def inference_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def as_tensor(values: list[list[int]], pad: int, *, left: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad integer rows into (ids, attention mask); left padding for decoder-only models."""
    import torch

    width = max((len(v) for v in values), default=0)
    ids = torch.full((len(values), width), pad, dtype=torch.long)
    mask = torch.zeros((len(values), width), dtype=torch.long)
    for row, value in enumerate(values):
        if not value:
            continue
        if left:
            ids[row, width - len(value) :] = torch.tensor(value, dtype=torch.long)
            mask[row, width - len(value) :] = 1
        else:
            ids[row, : len(value)] = torch.tensor(value, dtype=torch.long)
            mask[row, : len(value)] = 1
    return ids, mask
