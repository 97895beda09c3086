"""The evaluation's stages as batch functions, shared by every engine.

Each function takes one batch (a planned generation batch, a KL batch, a scoring chunk, a
feature chunk) and returns the rows it computes; the plans (``plan_*``) cut a part of a model's
work list into those batches deterministically. The local runner (``pipeline.py``) stages the
rows of each batch as it comes; the Ray engine (``ray_engine.py``) runs the same functions in
``map_batches`` actors and writes a part's rows as staged shards. Because both engines cut a
part into the same batches and call the same functions, they compute the same rows (the
sampler draws per sample from its own seed, ``sampling.py``, and the batches have the same
composition, so even float rounding matches on the same hardware and thread count).

A row is skipped when ``have``/``done``/``known`` already holds its key: only what the
database lacks is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhf_eval import rows
from rlhf_eval.records import Prompt

SCORE_CHUNK = 1024  # samples per call of a scorer (sorted into batches by length inside)
FEATURE_CHUNK = 2048
#: Logits one KL batch may hold (rows x positions x vocabulary).
KL_LOGIT_BUDGET = 64 * 1024 * 1024

Row = dict[str, Any]
#: A sample as the later stages read it: prompt_token_ids, token_ids, response.
Samples = Mapping[str, Mapping[str, Any]]


def todo(batch: Sequence[Any], have: Container[str]) -> bool:
    """Whether a batch has a row to compute (its items carry ``sample_id``)."""
    return not all(item.sample_id in have for item in batch)


# -- generation --------------------------------------------------------------------------------
#: Generation backends (``--backend``): the default transformers sampler, or vLLM on a GPU.
BACKENDS = ("transformers", "vllm")
#: The transformers backend's sampler (inverse-CDF draws from each sample's seed, ``sampling.py``).
TRANSFORMERS_SAMPLER = "inverse-cdf-v1"


def sampler_version(backend: str) -> str:
    """What goes into the generation key for samples of ``backend``: the two backends draw with
    different random generators, so their samples are never mixed in the cache."""
    if backend == "vllm":
        from rlhf_eval.vllm_backend import SAMPLER_VERSION

        return SAMPLER_VERSION
    return TRANSFORMERS_SAMPLER


def make_backend(
    backend: str, policy: Callable[[], Any], tokenizer: Any, params: Any, options: Any, token_budget: int,
    model_dir: Path, adapter_base: Path | None,
) -> Any:  # fmt: skip
    """The generation backend for one model: ``policy()`` loads the transformers model (the KL
    stage needs it anyway); vLLM loads the weights itself (an adapter unmerged on its base)."""
    if backend == "vllm":
        from rlhf_eval.vllm_backend import VLLMBackend

        return VLLMBackend.load(model_dir, tokenizer, params, options, adapter_base=adapter_base)
    from rlhf_eval.generate import TransformersBackend

    return TransformersBackend(policy(), tokenizer, params, token_budget=token_budget)


def generation_requests(plan: Sequence[Any], encoded: Mapping[str, Any], seed: int) -> list[Any]:
    """One request per planned sample (``sample_id``, ``prompt``, ``sample_idx``), drawn with
    the sample's own seed."""
    from rlhf_eval.generate import GenerationRequest
    from rlhf_eval.sampling import sample_seed

    return [
        GenerationRequest(
            p.sample_id, encoded[p.prompt.prompt_id], p.sample_idx, sample_seed(seed, p.prompt.prompt_id, p.sample_idx)
        )
        for p in plan
    ]


def sample_rows(
    backend: Any, batch: Sequence[Any], have: Container[str], model_fp: str, gen_key: str, eval_id: str
) -> list[Row]:
    """Generate one planned batch (``backend.plan``) and return the rows of the samples not in
    ``have``; the whole batch is generated so that its composition, and its floats, match."""
    return [
        rows.sample_row(out, model_fp, gen_key, eval_id)
        for out in backend.generate(batch)
        if out.request.sample_id not in have
    ]


# -- KL ----------------------------------------------------------------------------------------
def kl_items(sample_ids: Sequence[str], samples: Samples) -> list[Any]:
    from rlhf_eval.kl import KLItem

    return [
        KLItem(sample_id, tuple(samples[sample_id]["prompt_token_ids"]), tuple(samples[sample_id]["token_ids"]))
        for sample_id in sample_ids
    ]


def plan_kl(items: Sequence[Any], token_budget: int, vocab_size: int) -> list[list[Any]]:
    from rlhf_eval.kl import plan_kl_batches

    return plan_kl_batches(items, token_budget, vocab_size, logit_budget=KL_LOGIT_BUDGET)


def kl_rows(
    policy: Any, reference: Any, batch: Sequence[Any], params: Any, pad_id: int, done: Container[str], ref_fp: str,
    token_budget: int,
) -> list[Row]:  # fmt: skip
    """KL estimates of one planned batch against the reference, for the samples not ``done``."""
    from rlhf_eval.kl import estimate_kl

    estimates = estimate_kl(policy, reference, batch, params, pad_id, token_budget=token_budget)
    return [rows.kl_row(e, ref_fp) for e in estimates if e.sample_id not in done]


def zero_kl_rows(sample_ids: Sequence[str], samples: Samples, done: Container[str], ref_fp: str) -> list[Row]:
    """The reference against itself under raw sampling: exactly 0 (no forward)."""
    return [
        rows.zero_kl_row(sample_id, ref_fp, len(samples[sample_id]["token_ids"]))
        for sample_id in sample_ids
        if sample_id not in done
    ]


# -- rewards -----------------------------------------------------------------------------------
def plan_chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def score_rows(
    scorer: Any, scorer_id: str, prompts: Sequence[Prompt], sample_ids: Sequence[str], samples: Samples,
    known: Mapping[str, float | None],
) -> list[Row]:  # fmt: skip
    """One scorer's values for a chunk, for the samples it has not scored (``known``)."""
    values = scorer.score(list(prompts), [samples[sample_id]["response"] for sample_id in sample_ids])
    return [
        {"sample_id": sample_id, "scorer_id": scorer_id, "value": value}
        for sample_id, value in zip(sample_ids, values, strict=True)
        if sample_id not in known
    ]


# -- detectors ---------------------------------------------------------------------------------
def features_todo(sample_ids: Sequence[str], have: Mapping[str, Container[tuple[str, int]]]) -> list[str]:
    """The samples missing a feature of a current detector (a new sample, or a detector added
    or changed since)."""
    from rlhf_eval.detectors import REGISTRY

    current = [(d.name, d.version) for d in REGISTRY.values()]
    return [s for s in sample_ids if not all(key in have.get(s, ()) for key in current)]


def feature_rows(sample_ids: Sequence[str], samples: Samples) -> list[Row]:
    """Every current detector's value for each sample of a chunk."""
    from rlhf_eval.detectors import REGISTRY, run_detectors

    values = run_detectors([samples[sample_id]["response"] for sample_id in sample_ids])
    return [
        {"sample_id": sample_id, "feature": name, "version": REGISTRY[name].version, "value": values[name][i]}
        for i, sample_id in enumerate(sample_ids)
        for name in values
    ]
