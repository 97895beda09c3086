"""Sampling responses with vLLM: the optional fast backend (``pip install 'rlhf-eval[vllm]'``, CUDA only).

``VLLMBackend`` has the interface of ``generate.TransformersBackend`` (``plan`` then ``generate``,
samples returned in the order of the batch) and samples the same distribution; vLLM is imported
inside functions only, so importing this module never needs it. What differs, and why KL stays
right:

- **Draws.** vLLM draws with its own random generator, seeded per request with the sample's
  seed (``sampling.sample_seed``, as the transformers backend), not with our inverse-CDF draws
  from ``sampling.uniforms``. The two backends' samples therefore differ token for token, and
  ``SAMPLER_VERSION`` goes into the generation key so that the cache never mixes them. vLLM's
  kernels are not batch-invariant, so a rerun may not reproduce a sample bit for bit either.
- **Distribution.** Temperature, top-k and top-p are the only settings, every other vLLM knob is
  neutral (min-p 0, no penalties) and the checkpoint's ``generation_config.json`` is ignored
  (``generation_config="vllm"``): vLLM samples the distribution ``sampling.processed_logprobs``
  defines, computed by the engine in its dtype (bf16 by default).
- **Log-probs are never taken from vLLM.** The KL stage (``kl.py``) recomputes the log-probs of
  the stored token ids with a teacher-forced forward under ``processed_logprobs``. vLLM's
  log-probs are those of the raw model (before temperature, top-k and top-p by default) and in
  the engine's dtype, so using them would make KL wrong; ``check_no_engine_logprobs`` guards
  every ``SamplingParams`` built here.
- **Stopping.** A response ends at the first of ``generate.eos_token_ids`` (passed as the stop
  ids; the engine's own EOS notion is switched off with ``ignore_eos``) or after
  ``max_new_tokens``. Stored token ids run up to and including that EOS and the text is decoded
  by our tokenizer, exactly as ``TransformersBackend`` stores them.
- **LoRA adapters are served unmerged**: one engine for the base with ``enable_lora`` and a
  ``LoRARequest`` per adapter. Engines are cached per base (``EngineSpec``), so the many adapter
  checkpoints of a run share one engine; one engine is kept on the GPU at a time.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rlhf_eval.errors import UserInputError
from rlhf_eval.generate import GeneratedSample, GenerationRequest, eos_token_ids
from rlhf_eval.models import LoadOptions, check_config, check_weights, read_json
from rlhf_eval.sampling import SamplingParams

#: Goes into the generation key: samples drawn by vLLM's seeded sampler are never mixed with the
#: transformers backend's inverse-CDF samples ("inverse-cdf-v1") in the cache.
SAMPLER_VERSION = "vllm-seeded-v1"

#: LoRA ranks vLLM's kernels are built for (``max_lora_rank`` must be one of them).
LORA_RANKS = (8, 16, 32, 64, 128, 256)

NOT_INSTALLED = (
    "--backend vllm: vLLM is not installed; install the extra with pip install 'rlhf-eval[vllm]' "
    "(needs a CUDA GPU), or use --backend transformers"
)
NO_GPU = "--backend vllm needs a CUDA GPU and none is visible; use --backend transformers"


def require_vllm() -> None:
    """Raise a one-line ``UserInputError`` unless vLLM imports and a CUDA GPU is visible."""
    try:
        import vllm  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "vllm"):
            raise UserInputError(
                f"--backend vllm: vLLM is installed but a module it needs is missing ({exc.name}); "
                "reinstall it with pip install 'rlhf-eval[vllm]', or use --backend transformers"
            ) from None
        raise UserInputError(NOT_INSTALLED) from None
    except ImportError as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserInputError(
            f"--backend vllm: vLLM is installed but cannot be imported ({first}); "
            "check that it matches this torch and CUDA, or use --backend transformers"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise UserInputError(NO_GPU)


def check_no_engine_logprobs(sampling_params: Any) -> None:
    """Refuse a vLLM ``SamplingParams`` that asks the engine for log-probs: they are the raw
    model's (before temperature, top-k and top-p), and KL is recomputed under
    ``sampling.processed_logprobs`` instead (``kl.py``)."""
    for name in ("logprobs", "prompt_logprobs"):
        if getattr(sampling_params, name, None) is not None:
            raise ValueError(
                f"vLLM SamplingParams.{name}={getattr(sampling_params, name)!r}: the vLLM backend never asks "
                "the engine for log-probs; KL recomputes them under sampling.processed_logprobs"
            )


def vllm_lora_rank(r: int, *, adapter_dir: Path | None = None) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``r``.

    >>> vllm_lora_rank(4), vllm_lora_rank(8), vllm_lora_rank(20), vllm_lora_rank(256)
    (8, 8, 32, 256)
    """
    for size in LORA_RANKS:
        if r <= size:
            return size
    where = f"{adapter_dir}: " if adapter_dir is not None else ""
    raise UserInputError(
        f"{where}LoRA rank {r} is above the largest rank vLLM serves ({LORA_RANKS[-1]}); "
        "use --backend transformers, which merges the adapter"
    )


def adapter_rank(adapter_dir: Path) -> int:
    """The largest LoRA rank in ``adapter_config.json``: ``r`` and any per-module ``rank_pattern``."""
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise UserInputError(f"{adapter_dir}: no adapter_config.json; point at a PEFT adapter directory")
    config = read_json(path)
    ranks = [config.get("r"), *(config.get("rank_pattern") or {}).values()]
    ranks = [r for r in ranks if isinstance(r, int) and not isinstance(r, bool)]
    if not ranks or min(ranks) <= 0:
        raise UserInputError(f"{path}: no positive LoRA rank 'r'; is this a LoRA adapter saved by PEFT?")
    return max(ranks)


def generation_config_of(model_dir: Path) -> Any:
    """An object with ``generation_config.eos_token_id`` as transformers would load it for
    ``model_dir`` (``generation_config.json``, else ``config.json``), for ``eos_token_ids``."""
    for name in ("generation_config.json", "config.json"):
        path = model_dir / name
        if path.is_file():
            return SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=read_json(path).get("eos_token_id")))
    return SimpleNamespace(generation_config=None)


@dataclass(frozen=True)
class EngineSpec:
    """What a vLLM engine is built from: equal specs share one engine (the engine cache's key).

    ``model`` is the served model: the base model for LoRA adapters (``lora``), so every
    adapter of one base shares the engine. ``max_lora_rank`` is not part of the key: an engine
    built for a smaller rank is rebuilt when a larger adapter comes.
    """

    model: str
    lora: bool
    dtype: str = "bfloat16"
    tokenizer: str | None = None
    trust_remote_code: bool = False
    load_format: str = "safetensors"
    enforce_eager: bool = False
    gpu_memory_utilization: float = 0.5
    max_model_len: int | None = None

    def llm_kwargs(self, max_lora_rank: int | None = None) -> dict[str, Any]:
        """Arguments of ``vllm.LLM``."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "dtype": self.dtype,
            "seed": 0,
            "trust_remote_code": self.trust_remote_code,
            "load_format": self.load_format,
            # the checkpoint's generation_config.json can carry its own temperature or
            # repetition penalty: ignored, so that only our SamplingParams count
            "generation_config": "vllm",
            "enforce_eager": self.enforce_eager,
            "gpu_memory_utilization": self.gpu_memory_utilization,
        }
        if self.tokenizer is not None:
            kwargs["tokenizer"] = self.tokenizer
        if self.max_model_len is not None:
            kwargs["max_model_len"] = self.max_model_len
        if self.lora:
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank or LORA_RANKS[0], max_loras=1)
        return kwargs


@dataclass
class _Engine:
    llm: Any
    max_lora_rank: int | None


#: The engines built in this process. The GPU holds one at a time: asking for another spec
#: releases the others first (a new checkpoint of a full-model run is a new engine).
_ENGINES: dict[EngineSpec, _Engine] = {}
#: LoRA ids by adapter identity (path and weight files' mtime and size): vLLM caches adapters by
#: id, so a rewritten adapter directory must get a new one.
_LORA_IDS: dict[tuple[Any, ...], int] = {}


def release_engines() -> None:
    """Drop every cached engine and free its GPU memory (as far as vLLM lets go of it).

    vLLM (V1) runs the engine core in a child process, which is shut down here, so the memory
    comes back even while an old ``VLLMBackend`` still holds its ``LLM`` (it cannot be used after).
    """
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        core = getattr(getattr(engine.llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):  # best effort: an engine that already died is gone
                shutdown()
        del engine
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def get_engine(spec: EngineSpec, lora_rank: int | None = None) -> Any:
    """The cached ``vllm.LLM`` for ``spec``, built (after releasing any other) when missing or
    when a LoRA engine's ``max_lora_rank`` is below ``lora_rank``."""
    cached = _ENGINES.get(spec)
    if cached is not None and (lora_rank is None or (cached.max_lora_rank or 0) >= lora_rank):
        return cached.llm
    release_engines()
    import vllm

    max_rank = lora_rank if spec.lora else None
    try:
        llm = vllm.LLM(**spec.llm_kwargs(max_rank))
    except UserInputError:
        raise
    except Exception as exc:  # vLLM reports unsupported models and bad files in many types
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserInputError(
            f"{spec.model}: vLLM could not load this model ({type(exc).__name__}: {first}); "
            "check the checkpoint and the GPU's free memory, or use --backend transformers"
        ) from None
    _ENGINES[spec] = _Engine(llm, max_rank)
    return llm


def lora_request(adapter_dir: Path) -> Any:
    """A ``vllm.lora.request.LoRARequest`` for an adapter directory, with an id that is stable for
    the directory as long as its files are unchanged."""
    from vllm.lora.request import LoRARequest

    resolved = adapter_dir.resolve()
    files = sorted(p for p in resolved.iterdir() if p.is_file() and p.name.startswith("adapter_"))
    identity = (str(resolved), *((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files))
    lora_id = _LORA_IDS.setdefault(identity, len(_LORA_IDS) + 1)
    return LoRARequest(f"adapter-{lora_id}", lora_id, str(resolved))


class VLLMBackend:
    """Batched sampling with a vLLM engine; same interface as ``TransformersBackend``."""

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        params: SamplingParams,
        eos_ids: Sequence[int],
        *,
        lora: Any = None,
        max_batch: int = 2048,
    ) -> None:
        if not eos_ids:
            raise ValueError("the vLLM backend needs at least one EOS id to stop on")
        self.llm = llm
        self.tokenizer = tokenizer
        self.params = params
        self.eos_ids = sorted(int(i) for i in eos_ids)
        self.lora = lora
        self.max_batch = max_batch

    @classmethod
    def load(
        cls,
        model_dir: Path,
        tokenizer: Any,
        params: SamplingParams,
        options: LoadOptions,
        *,
        adapter_base: Path | None = None,
        dtype: str = "bfloat16",
        enforce_eager: bool = False,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        tokenizer_dir: Path | None = None,
        max_batch: int = 2048,
    ) -> VLLMBackend:
        """A backend for the model in ``model_dir``, or for the PEFT adapter in ``model_dir`` on
        ``adapter_base`` (served unmerged). The directories are checked as ``models.py`` checks
        them (safetensors unless ``allow_pickle``, no custom code unless ``trust_remote_code``)
        before vLLM reads anything. vLLM always runs on the CUDA GPU (``options.device`` is not
        used); ``gpu_memory_utilization`` is the share of the GPU it may take, leaving the rest
        to the reference and reward models of the other stages."""
        require_vllm()
        served = model_dir if adapter_base is None else adapter_base
        check_config(served, options)
        check_weights(served, options)
        rank = None
        if adapter_base is not None:
            check_weights(model_dir, options, adapter=True)
            rank = vllm_lora_rank(adapter_rank(model_dir), adapter_dir=model_dir)
        spec = EngineSpec(
            model=str(served.resolve()),
            lora=adapter_base is not None,
            dtype=dtype,
            tokenizer=str(tokenizer_dir.resolve()) if tokenizer_dir is not None else None,
            trust_remote_code=options.trust_remote_code,
            load_format="auto" if options.allow_pickle else "safetensors",
            enforce_eager=enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
        )
        llm = get_engine(spec, rank)
        eos = eos_token_ids(generation_config_of(served), tokenizer)
        lora = lora_request(model_dir) if adapter_base is not None else None
        return cls(llm, tokenizer, params, eos, lora=lora, max_batch=max_batch)

    def plan(self, requests: Sequence[GenerationRequest]) -> list[list[GenerationRequest]]:
        """Batches of up to ``max_batch`` requests in (prompt, sample) order: vLLM schedules
        within a batch itself. Deterministic: the same requests always give the same batches."""
        ordered = sorted(requests, key=lambda r: (r.encoded.prompt.index, r.sample_idx, r.sample_id))
        return [ordered[i : i + self.max_batch] for i in range(0, len(ordered), self.max_batch)]

    def sampling_params(self, request: GenerationRequest) -> Any:
        """vLLM's ``SamplingParams`` for one request: our settings, the request's own seed."""
        import vllm

        p = self.params
        sampling = vllm.SamplingParams(
            n=1,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else -1,
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=p.max_new_tokens,
            seed=request.seed,
            stop_token_ids=list(self.eos_ids),
            ignore_eos=True,  # stop on exactly our EOS ids (above), not on the engine's own notion
            skip_special_tokens=True,
            detokenize=False,  # the text is decoded by our tokenizer
            logprobs=None,
            prompt_logprobs=None,
        )
        check_no_engine_logprobs(sampling)
        return sampling

    def generate(self, batch: Sequence[GenerationRequest]) -> list[GeneratedSample]:
        if not batch:
            return []
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.encoded.token_ids)) for r in batch]
        sampling = [self.sampling_params(r) for r in batch]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora, use_tqdm=False)
        if len(outputs) != len(batch):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(batch)} requests")
        return [self._finish(request, output) for request, output in zip(batch, outputs, strict=True)]

    def _finish(self, request: GenerationRequest, output: Any) -> GeneratedSample:
        prompt_ids = getattr(output, "prompt_token_ids", None)
        if prompt_ids is not None and list(prompt_ids) != list(request.encoded.token_ids):
            raise RuntimeError(f"vLLM returned outputs out of order (at sample {request.sample_id})")
        completion = output.outputs[0]
        row = [int(t) for t in completion.token_ids]
        eos = set(self.eos_ids)
        end = next((i for i, token in enumerate(row) if token in eos), None)
        if end is None and completion.finish_reason == "stop":
            # vLLM keeps the stop token in token_ids today; a version that leaves it out still
            # names it in stop_reason, and it is stored like the transformers backend stores it
            stop = completion.stop_reason
            if not (isinstance(stop, int) and stop in eos):
                raise RuntimeError(
                    f"vLLM stopped sample {request.sample_id} without one of the EOS ids {self.eos_ids} "
                    f"(stop_reason {stop!r})"
                )
            row.append(stop)
            end = len(row) - 1
        elif end is None and completion.finish_reason != "length":
            raise RuntimeError(f"vLLM ended sample {request.sample_id} with finish_reason {completion.finish_reason!r}")
        token_ids = row if end is None else row[: end + 1]
        body = token_ids if end is None else token_ids[:-1]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        return GeneratedSample(request, tuple(token_ids), text, end is not None)
