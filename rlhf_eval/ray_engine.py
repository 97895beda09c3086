"""``--engine ray``: the evaluation's stages as Ray Data ``map_batches`` stages over a cluster.

How work is split. This process (the driver) does what the local runner does around the model
work: discovery, fingerprints, the writer lock, reading what the database holds, checkpoint
rows and aggregates, ensembles. The model work is cut into *work shards*, one per part of a
model's plan that lacks a row (``pipeline.UNIT_PART`` samples: the local runner's parts), and
each work shard flows through five stages:

    generate  (actors, a policy each)            stages.generation_requests, sample_rows
    KL        (actors, a policy + the reference) stages.plan_kl, kl_rows, zero_kl_rows
    rewards   (actors, every scorer)             stages.score_rows
    detectors (tasks)                            stages.feature_rows
    encode    (tasks)                            store.shard_bytes: one Arrow IPC shard per table

Model stages are actor pools: one GPU per actor and up to as many actors as the cluster has
GPUs; on a cluster without GPUs, one actor per stage. An actor keeps the model of its last work
shard, so consecutive parts of one checkpoint load it once. The stages call the same functions
on the same batches as the local runner (``stages.py``), so both engines store the same rows.

Exactly once, resumable per shard. The encode stage returns a work shard's rows as Arrow IPC
bytes through Ray's object store (no shared file system is needed); the driver writes them into
the store's staging folder only when it receives them, and ``Store.flush`` ingests them in bulk
with the ledger's guarantees (``store.py``). A task Ray retries sends its output once; a run
killed at any point keeps every shard it had received (ingested on the next start), and the
next run computes only the parts still missing. Only rows absent when the driver read the
database (holding the writer lock) are computed, once each, so they are staged ``fresh``.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlhf_eval import faults, pipeline, stages
from rlhf_eval.errors import UserInputError
from rlhf_eval.models import LoadOptions, load_causal_lm, load_tokenizer
from rlhf_eval.pipeline import (
    IN_PART,
    Evaluation,
    PlannedSample,
    StoredPart,
    part_ids,
    progress,
)
from rlhf_eval.records import Prompt
from rlhf_eval.sampling import SamplingParams
from rlhf_eval.units import ModelUnit, tokenizer_dirs

#: The column that carries a work shard (JSON) between stages.
SHARD = "shard"
#: Environment the workers of an existing cluster need from the driver's.
FORWARDED_ENV = (
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_TOKEN", "PYTHONPATH",
    "TOKENIZERS_PARALLELISM",
)  # fmt: skip
NOT_INSTALLED = "--engine ray: Ray is not installed; pip install 'rlhf-eval[ray]', or use --engine local"

Shard = dict[str, Any]


@dataclass(frozen=True)
class StageContext:
    """What every stage actor needs from the driver (pickled once per actor)."""

    params: SamplingParams
    seed: int
    gen_key: str
    eval_id: str
    ref_fp: str
    ref_dir: str
    max_prompt_tokens: int
    token_budget: int
    options: LoadOptions
    backend: str
    #: (scorer id, the --proxy/--gold text that builds it)
    scorers: tuple[tuple[str, str], ...] = ()


def require_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UserInputError(NOT_INSTALLED) from None


# -- work shards as JSON --------------------------------------------------------------------------
def prompt_dict(prompt: Prompt) -> dict[str, Any]:
    return asdict(prompt)


def prompt_of(data: dict[str, Any]) -> Prompt:
    messages = data.get("messages")
    return Prompt(
        prompt_id=data["prompt_id"],
        index=data["index"],
        text=data.get("text"),
        messages=None if messages is None else tuple(tuple(tuple(pair) for pair in m) for m in messages),
        category=data.get("category"),
    )


def planned(shard: Shard) -> list[PlannedSample]:
    return [PlannedSample(p["sample_id"], prompt_of(p["prompt"]), p["sample_idx"]) for p in shard["plan"]]


def map_shards(batch: dict[str, Any], run: Callable[[Shard], Shard]) -> dict[str, list[str]]:
    """Apply ``run`` to each work shard of a Ray batch."""
    return {SHARD: [json.dumps(run(json.loads(text))) for text in batch[SHARD]]}


# -- the stages (run on the cluster) -------------------------------------------------------------
class Models:
    """An actor's models: the reference (loaded once), the policy of its last work shard, and
    tokenizers by directory."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.loaded: tuple[str, Any] | None = None
        self.ref: Any = None
        self.tokenizers: dict[tuple[str, ...], Any] = {}

    def tokenizer(self, shard: Shard) -> Any:
        dirs = tuple(shard["tokenizer_dirs"])
        if dirs not in self.tokenizers:
            owner = Path(shard["model_dir"])
            self.tokenizers[dirs] = load_tokenizer([Path(d) for d in dirs], self.ctx.options, owner=owner)
        return self.tokenizers[dirs]

    def reference(self) -> Any:
        if self.ref is None:
            self.ref = load_causal_lm(Path(self.ctx.ref_dir), self.ctx.options)
        return self.ref

    def policy(self, shard: Shard) -> Any:
        if shard["model_fp"] == self.ctx.ref_fp:
            return self.reference()
        if self.loaded is None or self.loaded[0] != shard["model_fp"]:
            self.loaded = None  # free the last one before loading the next
            base = shard["base"]
            model = load_causal_lm(
                Path(shard["model_dir"]), self.ctx.options, adapter_base=None if base is None else Path(base)
            )
            self.loaded = (shard["model_fp"], model)
        return self.loaded[1]


class ModelStage(ABC):
    """A ``map_batches`` actor holding models: ``run`` adds its rows to each work shard."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.models = Models(ctx)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return map_shards(batch, self.run)

    @abstractmethod
    def run(self, shard: Shard) -> Shard:
        """The work shard with this stage's new rows added."""


class GenerateStage(ModelStage):
    """Samples a work shard lacks (``stages.sample_rows`` over ``backend.plan``'s batches)."""

    def run(self, shard: Shard) -> Shard:
        from rlhf_eval.generate import encode_prompts

        plan, samples = planned(shard), shard["samples"]
        if not stages.todo(plan, samples):
            return shard
        ctx = self.ctx
        tokenizer = self.models.tokenizer(shard)
        prompts = list({p.prompt.prompt_id: p.prompt for p in plan}.values())
        encoded = {e.prompt.prompt_id: e for e in encode_prompts(prompts, tokenizer, ctx.max_prompt_tokens)}
        base = None if shard["base"] is None else Path(shard["base"])
        backend = stages.make_backend(
            ctx.backend, lambda: self.models.policy(shard), tokenizer, ctx.params, ctx.options, ctx.token_budget,
            Path(shard["model_dir"]), base,
        )  # fmt: skip
        generated: list[dict[str, Any]] = []
        for batch in backend.plan(stages.generation_requests(plan, encoded, ctx.seed)):
            if stages.todo(batch, samples):
                new = stages.sample_rows(backend, batch, samples, shard["model_fp"], ctx.gen_key, ctx.eval_id)
                samples.update((row["sample_id"], row) for row in new)
                generated += new
        shard["new"]["samples"] = generated
        shard["meta"]["truncated"] = sorted(pid for pid, e in encoded.items() if e.truncated)
        shard["meta"]["sampled"] = sorted(encoded)
        return shard


class KLStage(ModelStage):
    """KL estimates a work shard lacks (``stages.kl_rows`` over ``stages.plan_kl``'s batches)."""

    def run(self, shard: Shard) -> Shard:
        ctx, samples, done = self.ctx, shard["samples"], set(shard["kl_done"])
        ids = [p["sample_id"] for p in shard["plan"]]
        if all(sample_id in done for sample_id in ids):
            return shard
        if shard["model_fp"] == ctx.ref_fp and ctx.params.is_raw:
            shard["new"]["kl"] = stages.zero_kl_rows(ids, samples, done, ctx.ref_fp)
            return shard
        policy, reference = self.models.policy(shard), self.models.reference()
        pad = int(self.models.tokenizer(shard).pad_token_id)
        estimates: list[dict[str, Any]] = []
        for batch in stages.plan_kl(stages.kl_items(ids, samples), ctx.token_budget, int(policy.config.vocab_size)):
            if stages.todo(batch, done):
                estimates += stages.kl_rows(
                    policy, reference, batch, ctx.params, pad, done, ctx.ref_fp, ctx.token_budget
                )
        shard["new"]["kl"] = estimates
        return shard


class ScoreStage:
    """Every scorer's values a work shard lacks (``stages.score_rows`` per ``SCORE_CHUNK``)."""

    def __init__(self, ctx: StageContext) -> None:
        from rlhf_eval.rewards import build_scorer

        self.scorers = {}
        for scorer_id, text in ctx.scorers:
            scorer = build_scorer(text, ctx.options)
            if scorer.scorer_id != scorer_id:
                raise UserInputError(f"{text}: the scorer changed while this evaluation ran; rerun the same command")
            self.scorers[scorer_id] = scorer

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return map_shards(batch, self.run)

    def run(self, shard: Shard) -> Shard:
        plan, samples = planned(shard), shard["samples"]
        scored: list[dict[str, Any]] = []
        cut: dict[str, int] = {}
        for scorer_id, scorer in self.scorers.items():
            known: dict[str, float | None] = dict.fromkeys(shard["scores_known"].get(scorer_id, []))
            for chunk in stages.plan_chunks(plan, stages.SCORE_CHUNK):
                if stages.todo(chunk, known):
                    prompts = [p.prompt for p in chunk]
                    rows = stages.score_rows(scorer, scorer_id, prompts, part_ids(chunk), samples, known)
                    known.update((row["sample_id"], row["value"]) for row in rows)
                    scored += rows
            truncated = getattr(scorer.score_fn, "truncated", 0)
            if truncated:
                cut[scorer.name] = truncated
                scorer.score_fn.truncated = 0  # type: ignore[attr-defined]
        shard["new"]["scores"] = scored
        shard["meta"]["rm_truncated"] = cut
        return shard


def feature_stage(batch: dict[str, Any]) -> dict[str, list[str]]:
    """Detector values a work shard lacks (``stages.feature_rows`` per ``FEATURE_CHUNK``)."""

    def run(shard: Shard) -> Shard:
        have = {sample_id: {tuple(key) for key in keys} for sample_id, keys in shard["features_have"].items()}
        todo = stages.features_todo([p["sample_id"] for p in shard["plan"]], have)
        chunks = stages.plan_chunks(todo, stages.FEATURE_CHUNK)
        computed = [row for chunk in chunks for row in stages.feature_rows(chunk, shard["samples"])]
        shard["new"]["features"] = [r for r in computed if r["sample_id"] not in have]
        shard["new"]["features_checked"] = [r for r in computed if r["sample_id"] in have]
        shard["meta"]["features"] = len(todo)
        return shard

    return map_shards(batch, run)


#: (table, staged fresh) of each kind of new rows a work shard carries.
OUTPUTS = {
    "samples": ("samples", True),
    "kl": ("kl", True),
    "scores": ("scores", True),
    "features": ("features", True),
    "features_checked": ("features", False),
}


def encode_stage(batch: dict[str, Any]) -> dict[str, list[Any]]:
    """A work shard's new rows as staged shards (Arrow IPC), one output row per shard (a single row with no
    table when it has none), each carrying the work shard's key, its shard count and its counts."""
    from rlhf_eval.store import shard_bytes

    out: dict[str, list[Any]] = {name: [] for name in ("key", "unit", "table", "fresh", "data", "n_shards", "meta")}
    for text in batch[SHARD]:
        shard = json.loads(text)
        new = shard["new"]
        meta = {**shard["meta"], **{f"n_{kind}": len(new.get(kind, [])) for kind in OUTPUTS}}
        meta["null_scores"] = sum(row["value"] is None for row in new.get("scores", []))
        encoded = [
            (table, fresh, shard_bytes(table, new[kind])) for kind, (table, fresh) in OUTPUTS.items() if new.get(kind)
        ]
        for table, fresh, data in encoded or [("", True, b"")]:
            out["key"].append(shard["key"])
            out["unit"].append(shard["unit"])
            out["table"].append(table)
            out["fresh"].append(fresh)
            out["data"].append(data)
            out["n_shards"].append(max(1, len(encoded)))
            out["meta"].append(json.dumps(meta))
    return out


# -- the driver ----------------------------------------------------------------------------------
def part_complete(part: Sequence[PlannedSample], stored: StoredPart) -> bool:
    """Whether the database holds every row of a part: samples, KL, each score, current features."""
    ids = part_ids(part)
    return (
        all(i in stored.samples for i in ids)
        and all(i in stored.kl for i in ids)
        and all(all(i in known for i in ids) for known in stored.scores.values())
        and not stages.features_todo(ids, stored.features)
    )


#: Model stages (generate, KL, rewards): on a cluster with fewer GPUs than this, they share each GPU.
MODEL_STAGES = 3


def stage_resources() -> dict[str, Any]:
    """``map_batches`` resources of a model stage. With at least one GPU per model stage, an
    actor takes a whole GPU and each pool scales up to one actor per GPU; with fewer GPUs (one
    or two on a workstation) each actor takes a third of one, so the three stages run side by
    side on it (their models then share its memory). Without GPUs, one actor per stage (a whole
    CPU where there are 4 or more, else half of one)."""
    import ray
    from ray.data import ActorPoolStrategy

    available = ray.cluster_resources()
    gpus = int(available.get("GPU", 0))
    if gpus >= MODEL_STAGES:
        return {"num_gpus": 1, "compute": ActorPoolStrategy(min_size=1, max_size=gpus)}
    if gpus:
        return {"num_gpus": 1 / MODEL_STAGES, "compute": ActorPoolStrategy(min_size=1, max_size=gpus)}
    return {"num_cpus": 1 if available.get("CPU", 1) >= 4 else 0.5, "compute": ActorPoolStrategy(size=1)}


def user_error_in(exc: BaseException) -> UserInputError | None:
    """The ``UserInputError`` a stage raised, from the exception Ray wraps it in."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UserInputError):
            return current
        stack += [current.__cause__, current.__context__, getattr(current, "cause", None)]
    return None


class RayEvaluation(Evaluation):
    """``rlhf-eval eval --engine ray``: ``Evaluation`` with its model work on a Ray cluster."""

    def evaluate_units(self, units: Sequence[ModelUnit], ref_fp: str) -> None:
        require_ray()
        shards: list[Shard] = []
        remaining: dict[int, int] = {}
        for index, unit in enumerate(units):
            plan = self.planned(unit.fingerprint)
            size = pipeline.UNIT_PART
            for number, start in enumerate(range(0, len(plan), size)):
                part = plan[start : start + size]
                stored = self.stored_part(unit.fingerprint, ref_fp, part)
                if not part_complete(part, stored):
                    shards.append(self.work_shard(unit, index, number, part, stored, ref_fp))
            remaining[index] = sum(shard["unit"] == index for shard in shards)
        for index, unit in enumerate(units):
            if not remaining[index]:
                self.finish_unit(unit, computed=False)
        if shards:
            self.run_cluster(units, shards, remaining, ref_fp)
        if any(len(members) > 1 for members in (self.proxy_ids, self.gold_ids)):
            self.load_member_values(units, ref_fp)

    def work_shard(
        self, unit: ModelUnit, index: int, number: int, part: Sequence[PlannedSample], stored: StoredPart, ref_fp: str
    ) -> Shard:
        is_ref = unit.fingerprint == ref_fp
        ids = set(part_ids(part))
        dirs = tokenizer_dirs(self.ref_spec if is_ref else unit.spec)
        return {
            "key": f"{unit.fingerprint}:{number}",
            "unit": index,
            "model_fp": unit.fingerprint,
            "model_dir": str(self.ref_dir if is_ref else unit.spec.path),
            "base": None if is_ref or unit.spec.base is None else str(unit.spec.base),
            "tokenizer_dirs": [str(d) for d in dirs],
            "plan": [
                {"sample_id": p.sample_id, "prompt": prompt_dict(p.prompt), "sample_idx": p.sample_idx} for p in part
            ],
            "samples": {
                sample_id: {k: list(v) if k != "response" else v for k, v in sample.items()}
                for sample_id, sample in stored.samples.items()
            },
            "kl_done": sorted(stored.kl & ids),
            "scores_known": {scorer_id: sorted(known) for scorer_id, known in stored.scores.items()},
            "features_have": {sample_id: sorted(keys) for sample_id, keys in stored.features.items()},
            "new": {},
            "meta": {},
        }

    def stage_context(self, ref_fp: str) -> StageContext:
        texts = [*self.config.proxy, *self.config.gold]
        ids = [*self.proxy_ids, *self.gold_ids]
        return StageContext(
            params=self.params,
            seed=self.seed,
            gen_key=self.gen_key,
            eval_id=self.eval_id,
            ref_fp=ref_fp,
            ref_dir=str(self.ref_dir),
            max_prompt_tokens=self.max_prompt_tokens,
            token_budget=self.config.token_budget,
            options=self.options,
            backend=self.config.backend,
            scorers=tuple(dict(zip(ids, texts, strict=True)).items()),
        )

    def run_cluster(
        self, units: Sequence[ModelUnit], shards: list[Shard], remaining: dict[int, int], ref_fp: str
    ) -> None:
        import ray
        import ray.data

        started = not ray.is_initialized()
        if started:
            self.connect(self.config.ray_address)
        try:
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            ctx = self.stage_context(ref_fp)
            model_stage = {"batch_size": 1, "fn_constructor_kwargs": {"ctx": ctx}, **stage_resources()}
            dataset = (
                ray.data.from_items([{SHARD: json.dumps(shard)} for shard in shards])
                .map_batches(GenerateStage, **model_stage)
                .map_batches(KLStage, **model_stage)
                .map_batches(ScoreStage, **model_stage)
                .map_batches(feature_stage, batch_size=1)
                .map_batches(encode_stage, batch_size=1)
            )
            self.receive(units, dataset, len(shards), remaining)
        except Exception as exc:
            error = user_error_in(exc)
            if error is not None and error is not exc:
                raise UserInputError(str(error)) from None
            raise
        finally:
            if started:
                ray.shutdown()

    def connect(self, address: str | None) -> None:
        import ray

        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env} if env else None,
            )
        except ConnectionError as exc:
            raise UserInputError(
                f"--ray-address {address}: no Ray cluster to join ({str(exc).splitlines()[0][:160]}); start one with "
                "`ray start --head`, or leave --ray-address out to start a local one"
            ) from None

    def receive(self, units: Sequence[ModelUnit], dataset: Any, total: int, remaining: dict[int, int]) -> None:
        """Land each work shard's staged shards as they arrive; a model whose parts are all in
        gets its checkpoint rows and aggregates (``finish_unit``)."""
        received: dict[str, int] = {}
        truncated: dict[int, set[str]] = {}
        sampled: dict[int, set[str]] = {}
        done = iter(progress(range(total), total, "work shards", self.config.progress))
        for row in dataset.iter_rows():
            if row["table"]:
                self.store.stage_bytes(row["table"], bytes(row["data"]), fresh=bool(row["fresh"]))
            received[row["key"]] = received.get(row["key"], 0) + 1
            if received[row["key"]] < row["n_shards"]:
                continue
            next(done, None)
            index, meta = int(row["unit"]), json.loads(row["meta"])
            self.count(meta)
            truncated.setdefault(index, set()).update(meta.get("truncated", []))
            sampled.setdefault(index, set()).update(meta.get("sampled", []))
            faults.reach("ray.shard")
            remaining[index] -= 1
            if remaining[index]:
                self.store.maybe_flush()
                continue
            unit = units[index]
            if truncated.get(index):
                self.stats.prompts_truncated += len(truncated[index])
                self.warn(
                    f"{unit.label}: {len(truncated[index])} of {len(sampled[index])} prompts exceed the context minus "
                    f"max_new_tokens and were cut to their last {self.max_prompt_tokens} tokens (stored with "
                    "prompt_truncated = true)"
                )
            self.finish_unit(unit, computed=True)

    def count(self, meta: dict[str, Any]) -> None:
        self.stats.samples_generated += meta["n_samples"]
        self.stats.kl_computed += meta["n_kl"]
        self.stats.scores_computed += meta["n_scores"]
        self.stats.features_computed += meta.get("features", 0)
        self.stats.null_scores += meta["null_scores"]
        for name, cut in meta.get("rm_truncated", {}).items():
            self.stats.rm_inputs_truncated += cut
            self.warn(f"{name}: {cut} inputs were longer than its context and kept their last tokens")

    def load_member_values(self, units: Sequence[ModelUnit], ref_fp: str) -> None:
        """The ensemble members' scores (``compute_ensembles`` reads them), from the database:
        on this engine they were computed on the cluster."""
        self.store.flush()
        ids = [p.sample_id for unit in units for p in self.planned(unit.fingerprint)]
        ids += part_ids(self.planned(ref_fp))  # the reference's, which standardize the members
        members = sorted({m for group in (self.proxy_ids, self.gold_ids) if len(group) > 1 for m in group})
        for member in members:
            found = self.store.query(
                f"SELECT sample_id, value FROM scores WHERE scorer_id = ? AND {IN_PART}",
                [member, sorted(set(ids))],
            )
            self.member_values[member] = dict(found)
