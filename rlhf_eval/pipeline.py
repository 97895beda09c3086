"""The local runner: discover -> generate -> KL, rewards, detectors -> store.

Every stage is a batch function (``stages.py``: generation through a backend, KL, scores,
detector features); this module plans the work, skips what the database already holds, and
stages each finished batch (``store.py``). ``ray_engine.py`` runs the same functions on a Ray
cluster.

A model's work list is cut into fixed parts of ``UNIT_PART`` samples (its plan, in suite order),
and each part goes through every stage before the next starts: only one part's samples (token
ids, texts) are held in memory, so memory does not grow with the number of samples. Within a
part, batches are planned deterministically, and a batch is skipped only when all its rows
exist: a resumed run recomputes interrupted batches with exactly the same composition, so it
ends with exactly the rows of an uninterrupted run. Each row staged was missing when its part
was read from the database, and is staged once: staged ``fresh``, the flush inserts it without
reading the stored keys (``store.py`` gives the reasoning; keep it true when changing this file).
"""

from __future__ import annotations

import gc
import sys
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from rlhf_eval import faults, rows, stages
from rlhf_eval.discover import CheckpointSpec, RunSpec, discover, local_adapter_base
from rlhf_eval.errors import UserInputError
from rlhf_eval.fingerprint import FileStat
from rlhf_eval.models import (
    LoadOptions,
    check_same_tokenizer,
    load_causal_lm,
    load_tokenizer,
    resolve_model_dir,
)
from rlhf_eval.records import Prompt, Suite, content_hash
from rlhf_eval.rewards import (
    EnsembleMode,
    Scorer,
    aggregate,
    build_scorer,
    ensemble_id,
    member_stats,
    parse_ensemble,
    parse_scorer_spec,
)
from rlhf_eval.sampling import SamplingParams
from rlhf_eval.store import SCHEMA_VERSION, Store
from rlhf_eval.units import (
    ModelUnit,
    context_length_of,
    group_units,
    model_fingerprint,
    tokenizer_dirs,
    validate_checkpoint,
)

#: Samples of one model taken through all stages at a time (the most held in memory).
UNIT_PART = 4096


@dataclass(frozen=True)
class EvalConfig:
    """Everything one ``rlhf-eval eval`` needs; CLI flags map onto it one to one."""

    paths: tuple[str, ...]
    ref: str
    suite: str
    proxy: tuple[str, ...]
    gold: tuple[str, ...]
    db: str = "rlhf_eval.duckdb"
    samples: int | None = None
    limit: int | None = None
    method: str | None = None
    base: str | None = None
    run: str | None = None
    ensemble: str = "mean"
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    token_budget: int = 16384
    progress: bool = True
    #: Generation backend (``stages.BACKENDS``) and engine (``ENGINES``); ``ray_address``: the Ray
    #: cluster to join (``auto``: the one this machine belongs to; None: start a local one).
    backend: str = "transformers"
    engine: str = "local"
    ray_address: str | None = None
    #: Only these checkpoints of run dirs (``checkpoint-N`` names, ``final`` for the root model);
    #: None: all. ``rlhf-eval watch`` passes the complete ones, so half-written ones are never read.
    checkpoints: tuple[str, ...] | None = None


@dataclass
class WorkStats:
    """What a run actually computed (zeros on a fully cached rerun)."""

    models_loaded: int = 0
    samples_generated: int = 0
    kl_computed: int = 0
    scores_computed: int = 0
    features_computed: int = 0
    prompts_truncated: int = 0
    null_scores: int = 0
    rm_inputs_truncated: int = 0
    lock_wait_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def work_done(self) -> int:
        """Rows computed so far, of every kind."""
        return self.samples_generated + self.kl_computed + self.scores_computed + self.features_computed


@dataclass(frozen=True)
class EvalResult:
    eval_id: str
    runs: tuple[str, ...]
    summary: list[dict[str, Any]]
    stats: WorkStats
    #: True when the database already held every row this evaluation asks for: nothing was
    #: loaded, computed or written (``Evaluation.stored_result``).
    cached: bool = False


@dataclass(frozen=True)
class StoredPart:
    """What the database already holds of one part of a model's plan."""

    samples: dict[str, dict[str, Any]]  # sample_id -> prompt_token_ids, token_ids, response
    kl: set[str]  # sample ids with KL against this evaluation's reference
    scores: dict[str, dict[str, float | None]]  # scorer_id -> sample_id -> value
    features: dict[str, set[tuple[str, int]]]  # sample_id -> (feature, version)


@dataclass(frozen=True)
class PlannedSample:
    sample_id: str
    prompt: Prompt
    sample_idx: int


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def progress(items: Iterable[Any], total: int, desc: str, enabled: bool) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def sampling_params(config: EvalConfig, suite: Suite) -> tuple[SamplingParams, int, int]:
    """Suite defaults overridden by flags; returns (params, samples per prompt, seed)."""
    gen = suite.generation
    params = SamplingParams(
        temperature=gen.temperature if config.temperature is None else config.temperature,
        top_p=gen.top_p if config.top_p is None else config.top_p,
        top_k=gen.top_k if config.top_k is None else config.top_k,
        max_new_tokens=gen.max_new_tokens if config.max_new_tokens is None else config.max_new_tokens,
    )
    samples = gen.samples_per_prompt if config.samples is None else config.samples
    if samples < 1:
        raise UserInputError(f"--samples {samples}: must be at least 1 sample per prompt")
    if params.max_new_tokens < 1:
        raise UserInputError(f"--max-new-tokens {params.max_new_tokens}: must be at least 1")
    if params.temperature <= 0:
        raise UserInputError(f"--temperature {params.temperature}: must be > 0 (sampling; greedy has no KL meaning)")
    if not 0 < params.top_p <= 1:
        raise UserInputError(f"--top-p {params.top_p}: must be in (0, 1]")
    if params.top_k < 0:
        raise UserInputError(f"--top-k {params.top_k}: must be >= 0 (0 = off)")
    return params, samples, gen.seed if config.seed is None else config.seed


class Evaluation:
    """One ``rlhf-eval eval`` invocation over a store."""

    def __init__(self, config: EvalConfig) -> None:
        from rlhf_eval.suites import load_suite

        self.config = config
        self.options = LoadOptions(config.allow_pickle, config.trust_remote_code, "auto")
        self.suite = load_suite(config.suite, limit=config.limit)
        self.params, self.samples_per_prompt, self.seed = sampling_params(config, self.suite)
        if not config.proxy:
            raise UserInputError("--proxy: at least one proxy reward model or callable is required")
        if not config.gold:
            raise UserInputError("--gold: at least one gold reward model or callable is required")
        self.ensemble_mode: EnsembleMode = parse_ensemble(config.ensemble)
        self.runs: list[RunSpec] = discover(
            config.paths, method=config.method, base=config.base, run=config.run, checkpoints=config.checkpoints
        )
        self.ref_dir = resolve_model_dir(config.ref, "--ref reference model")
        self.ref_spec = CheckpointSpec("", "reference", 0, self.ref_dir, "base", is_reference=True)
        validate_checkpoint(self.ref_spec, self.options)
        for run in self.runs:
            for checkpoint in run.checkpoints:
                validate_checkpoint(checkpoint, self.options)
        self.ref_tokenizer: Any = None
        self.tokenizers: dict[Path, Any] = {}
        self.store = Store(config.db)
        self.eval_id = content_hash("eval", time.time_ns(), uuid.uuid4().hex)
        self.sampler = stages.sampler_version(config.backend)
        self.gen_key = content_hash("gen", asdict(self.params), self.seed, self.sampler)
        self.stats = WorkStats()
        self.hash_cache: dict[FileStat, str] = {}
        self.scorers: dict[str, Scorer] = {}
        self.member_values: dict[str, dict[str, float | None]] = {}
        self.ref_model: Any = None
        self.max_prompt_tokens = 0
        self.current: set[tuple[str, str]] = set()  # checkpoints whose aggregates are current
        self.checkpoint_common: dict[str, Any] = {}
        self.proxy_ids: list[str] = []
        self.gold_ids: list[str] = []

    # -- setup -------------------------------------------------------------------------------
    def load_tokenizers(self) -> None:
        """Load every tokenizer and check each policy's against the reference's, before anything
        is written: a bad tokenizer is reported with the database unchanged."""
        self.ref_tokenizer = load_tokenizer(tokenizer_dirs(self.ref_spec), self.options, owner=self.ref_dir)
        for run in self.runs:
            for checkpoint in run.checkpoints:
                tokenizer = load_tokenizer(tokenizer_dirs(checkpoint), self.options, owner=checkpoint.path)
                check_same_tokenizer(tokenizer, self.ref_tokenizer, checkpoint.path, self.ref_dir)
                self.tokenizers[checkpoint.path] = tokenizer

    def build_scorers(self) -> None:
        for role, specs in (("proxy", self.config.proxy), ("gold", self.config.gold)):
            ids = []
            for text in specs:
                scorer = build_scorer(text, self.options, self.hash_cache)
                self.scorers.setdefault(scorer.scorer_id, scorer)
                ids.append(scorer.scorer_id)
            setattr(self, f"{role}_ids", ids)

    def role_scorer(self, member_ids: Sequence[str], ref_fp: str) -> str:
        if len(member_ids) == 1:
            return member_ids[0]
        return ensemble_id(
            member_ids,
            self.ensemble_mode,
            content_hash(ref_fp, self.suite.fingerprint, self.gen_key, self.samples_per_prompt),
        )

    def load_hash_cache(self) -> None:
        """Digests of files hashed before, read-only, so that unchanged weights (a policy's or a
        reward model's) are not read again; an unreadable database just means no cache."""
        from rlhf_eval.errors import StoreError
        from rlhf_eval.query import fetch_dicts

        if not self.store.path.is_file():
            return
        try:
            found = fetch_dicts(self.store.path, "SELECT path, size, mtime_ns, sha256 FROM file_hashes", timeout=5.0)
        except (StoreError, duckdb.Error):
            return  # a new or damaged database; opening it as the writer reports what is wrong
        for row in found:
            self.hash_cache[FileStat(row["path"], row["size"], row["mtime_ns"])] = row["sha256"]

    def save_hash_cache(self) -> None:
        self.store.stage(
            "file_hashes",
            [{"path": s.path, "size": s.size, "mtime_ns": s.mtime_ns, "sha256": h} for s, h in self.hash_cache.items()],
        )

    def model_units(self, ref_fp: str) -> list[ModelUnit]:
        units, self.runs = group_units(self.runs, self.ref_spec, ref_fp, self.hash_cache)
        return units

    def stage_metadata(self, units: Sequence[ModelUnit], ref_fp: str) -> None:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        self.started = now
        self.stage_evaluation("running", None)
        suites, prompts = rows.suite_rows(self.suite)
        self.store.stage("suites", suites)
        self.store.stage("prompts", prompts)
        generation = rows.generation_config_row(self.gen_key, self.params, self.seed, self.sampler, self.config.backend)
        self.store.stage("generation_configs", [generation])
        self.store.stage("scorers", [rows.scorer_row(s) for s in self.scorers.values()])
        for role, members in (("proxy", self.proxy_ids), ("gold", self.gold_ids)):
            if len(members) > 1:
                scorer_id = self.role_scorer(members, ref_fp)
                self.store.stage("scorers", [rows.ensemble_row(scorer_id, role, self.ensemble_mode, members)])
        # checkpoint rows are written as each model completes (``evaluate_unit``): a run that
        # fails half-way leaves the checkpoints it did not reach as they were stored
        self.checkpoint_common = {**self.checkpoint_fields(ref_fp), "eval_id": self.eval_id, "evaluated_at": now}
        self.store.stage("training_logs", rows.training_log_rows(self.runs))

    def checkpoint_fields(self, ref_fp: str) -> dict[str, Any]:
        """The checkpoint row's fields every checkpoint of this evaluation shares."""
        return {
            "ref_fp": ref_fp,
            "suite_fp": self.suite.fingerprint,
            "gen_key": self.gen_key,
            "samples_per_prompt": self.samples_per_prompt,
            "proxy_scorer": self.role_scorer(self.proxy_ids, ref_fp),
            "gold_scorer": self.role_scorer(self.gold_ids, ref_fp),
        }

    def stage_evaluation(self, status: str, finished: datetime | None) -> None:
        from rlhf_eval.provenance import provenance

        resolved = {
            "sampling": asdict(self.params),
            "seed": self.seed,
            "samples_per_prompt": self.samples_per_prompt,
            "suite": self.suite.name,
            "suite_version": self.suite.version,
            "suite_fp": self.suite.fingerprint,
            "gen_key": self.gen_key,
        }
        row = rows.evaluation_row(
            self.eval_id,
            started=self.started,
            finished=finished,
            status=status,
            command=" ".join(sys.argv),
            config={**asdict(self.config), "resolved": resolved},
            provenance=provenance(),
            seed=self.seed,
            schema_version=SCHEMA_VERSION,
        )
        self.store.stage("evaluations", [row])

    # -- per model ---------------------------------------------------------------------------
    def planned(self, model_fp: str) -> list[PlannedSample]:
        return [
            PlannedSample(content_hash("sample", model_fp, p.prompt_id, self.gen_key, i, length=24), p, i)
            for p in self.suite.prompts
            for i in range(self.samples_per_prompt)
        ]

    def stored_part(self, model_fp: str, ref_fp: str, part: Sequence[PlannedSample]) -> StoredPart:
        """What the database holds of one part of a model's plan, read on one connection."""
        ids = part_ids(part)
        samples, kl, scores, features = self.store.queries(
            [
                (
                    "SELECT sample_id, prompt_token_ids, token_ids, response FROM samples "
                    f"WHERE model_fp = ? AND gen_key = ? AND {IN_PART}",
                    [model_fp, self.gen_key, ids],
                ),
                (f"SELECT sample_id FROM kl WHERE ref_fp = ? AND {IN_PART}", [ref_fp, ids]),
                (
                    f"SELECT scorer_id, sample_id, value FROM scores WHERE list_contains(?, scorer_id) AND {IN_PART}",
                    [list(self.scorers), ids],
                ),
                (f"SELECT sample_id, feature, version FROM features WHERE {IN_PART}", [ids]),
            ]
        )
        stored = StoredPart(
            {r[0]: {"prompt_token_ids": r[1], "token_ids": r[2], "response": r[3]} for r in samples},
            {r[0] for r in kl},
            {scorer_id: {} for scorer_id in self.scorers},
            {},
        )
        for scorer_id, sample_id, value in scores:
            stored.scores[scorer_id][sample_id] = value
        for sample_id, feature, version in features:
            stored.features.setdefault(sample_id, set()).add((feature, version))
        return stored

    def existing_ids(self, sql: str, params: Sequence[Any]) -> set[str]:
        return {row[0] for row in self.store.query(sql, params)}

    def load_reference(self) -> None:
        if self.ref_model is None:
            self.ref_model = load_causal_lm(self.ref_dir, self.options)
            self.stats.models_loaded += 1

    def evaluate_units(self, units: Sequence[ModelUnit], ref_fp: str) -> None:
        """Compute and stage every missing row of every unit, one unit after the other (the Ray
        engine overrides this: ``ray_engine.py``)."""
        for unit in units:
            self.evaluate_unit(unit, ref_fp)

    def evaluate_unit(self, unit: ModelUnit, ref_fp: str) -> None:
        plan = self.planned(unit.fingerprint)
        policy: Any = None
        tokenizer = self.ref_tokenizer if unit.fingerprint == ref_fp else self.tokenizers[unit.spec.path]

        def get_policy() -> Any:
            nonlocal policy
            if policy is None:
                if unit.fingerprint == ref_fp:
                    self.load_reference()
                    policy = self.ref_model
                else:
                    policy = load_causal_lm(unit.spec.path, self.options, adapter_base=unit.spec.base)
                    self.stats.models_loaded += 1
            return policy

        work_before = self.stats.work_done
        parts = [plan[start : start + UNIT_PART] for start in range(0, len(plan), UNIT_PART)]
        truncated: set[str] = set()  # prompts cut to fit, among those sampled now
        sampled: set[str] = set()
        for number, part in enumerate(parts, 1):
            label = unit.label if len(parts) == 1 else f"{unit.label} part {number}/{len(parts)}"
            stored = self.stored_part(unit.fingerprint, ref_fp, part)
            samples = stored.samples
            if any(p.sample_id not in samples for p in part):
                sampled.update(p.prompt.prompt_id for p in part)
                is_ref = unit.fingerprint == ref_fp
                model_dir, base = (self.ref_dir, None) if is_ref else (unit.spec.path, unit.spec.base)
                truncated.update(self.generate(unit, model_dir, base, label, part, samples, get_policy, tokenizer))
            self.compute_kl(unit, label, part, samples, get_policy, tokenizer, ref_fp, stored.kl)
            self.compute_scores(label, part, samples, stored.scores)
            self.compute_features(part, samples, stored.features)
            del samples, stored
        if truncated:
            self.stats.prompts_truncated += len(truncated)
            self.warn(
                f"{unit.label}: {len(truncated)} of {len(sampled)} prompts exceed the context minus max_new_tokens "
                f"and were cut to their last {self.max_prompt_tokens} tokens (stored with prompt_truncated = true)"
            )
        self.finish_unit(unit, computed=self.stats.work_done != work_before)
        if policy is not None and policy is not self.ref_model:
            loaded = weakref.ref(policy)
            del policy
            if loaded() is not None:  # held by a reference cycle: free its weights before the next loads
                gc.collect()

    def finish_unit(self, unit: ModelUnit, *, computed: bool) -> None:
        """Every row of ``unit`` is staged or stored: stage its checkpoint rows, and refresh their
        aggregates when this run ``computed`` rows for it or they are stale."""
        keys = unit_checkpoints([unit])
        self.store.stage("checkpoints", rows.checkpoint_rows([unit], self.checkpoint_common))
        changed = computed or not set(keys) <= self.current
        if changed:
            self.store.stage_refresh(keys)  # its rows are complete: aggregate them
        faults.reach("unit.complete")
        if changed:
            self.store.flush(wait=False)  # the checkpoint shows up now, or with the next flush
        else:  # readers already see it as it is: its row rides with the next flush (a resume
            self.store.maybe_flush()  # over many finished checkpoints opens the file half as often)

    def generate(
        self,
        unit: ModelUnit,
        model_dir: Path,
        adapter_base: Path | None,
        label: str,
        plan: Sequence[PlannedSample],
        samples: dict[str, dict[str, Any]],
        get_policy: Any,
        tokenizer: Any,
    ) -> set[str]:
        """Sample what ``plan`` lacks; returns the ids of its prompts that were cut to fit."""
        from rlhf_eval.generate import encode_prompts

        prompts = list({p.prompt.prompt_id: p.prompt for p in plan}.values())
        encoded = {e.prompt.prompt_id: e for e in encode_prompts(prompts, tokenizer, self.max_prompt_tokens)}
        backend = stages.make_backend(
            self.config.backend, get_policy, tokenizer, self.params, self.options, self.config.token_budget,
            model_dir, adapter_base,
        )  # fmt: skip
        requests = stages.generation_requests(plan, encoded, self.seed)
        batches = backend.plan(requests)
        for batch in progress(batches, len(batches), f"{label} generate", self.config.progress):
            if not stages.todo(batch, samples):
                continue
            generated = stages.sample_rows(backend, batch, samples, unit.fingerprint, self.gen_key, self.eval_id)
            samples.update((row["sample_id"], row) for row in generated)
            self.store.stage("samples", generated, fresh=True)  # missing when looked up, staged once
            faults.reach("generate.batch")
            self.stats.samples_generated += len(generated)
            self.store.maybe_flush()
        return {prompt_id for prompt_id, e in encoded.items() if e.truncated}

    def compute_kl(
        self,
        unit: ModelUnit,
        label: str,
        plan: Sequence[PlannedSample],
        samples: dict[str, dict[str, Any]],
        get_policy: Any,
        tokenizer: Any,
        ref_fp: str,
        done: set[str],
    ) -> None:
        if all(p.sample_id in done for p in plan):
            return
        ids = part_ids(plan)
        if unit.fingerprint == ref_fp and self.params.is_raw:
            zero = stages.zero_kl_rows(ids, samples, done, ref_fp)
            self.store.stage("kl", zero, fresh=True)
            self.stats.kl_computed += len(zero)
            return
        policy = get_policy()
        self.load_reference()
        batches = stages.plan_kl(stages.kl_items(ids, samples), self.config.token_budget, int(policy.config.vocab_size))
        pad = int(tokenizer.pad_token_id)
        for batch in progress(batches, len(batches), f"{label} KL", self.config.progress):
            if not stages.todo(batch, done):
                continue
            estimates = stages.kl_rows(
                policy, self.ref_model, batch, self.params, pad, done, ref_fp, self.config.token_budget
            )
            self.store.stage("kl", estimates, fresh=True)
            faults.reach("kl.batch")
            self.stats.kl_computed += len(estimates)
            self.store.maybe_flush()

    def compute_scores(
        self,
        label: str,
        plan: Sequence[PlannedSample],
        samples: dict[str, dict[str, Any]],
        stored: dict[str, dict[str, float | None]],
    ) -> None:
        in_ensemble = {m for members in (self.proxy_ids, self.gold_ids) if len(members) > 1 for m in members}
        for scorer_id, scorer in self.scorers.items():
            known = stored[scorer_id]
            chunks = stages.plan_chunks(plan, stages.SCORE_CHUNK)
            for chunk in progress(chunks, len(chunks), f"{label} {scorer.kind} {scorer.name}", self.config.progress):
                if not stages.todo(chunk, known):
                    continue
                ids = part_ids(chunk)
                staged = stages.score_rows(scorer, scorer_id, [p.prompt for p in chunk], ids, samples, known)
                for row in staged:
                    known[row["sample_id"]] = row["value"]
                    self.stats.null_scores += row["value"] is None
                self.store.stage("scores", staged, fresh=True)
                faults.reach("scores.chunk")
                self.stats.scores_computed += len(staged)
                self.store.maybe_flush()
            if scorer_id in in_ensemble:  # kept for the ensemble's standardization and aggregate
                self.member_values.setdefault(scorer_id, {}).update(known)
            truncated = getattr(scorer.score_fn, "truncated", 0)
            if truncated:
                self.stats.rm_inputs_truncated += truncated
                self.warn(f"{scorer.name}: {truncated} inputs were longer than its context and kept their last tokens")
                scorer.score_fn.truncated = 0  # type: ignore[attr-defined]

    def compute_features(
        self,
        plan: Sequence[PlannedSample],
        samples: dict[str, dict[str, Any]],
        have: dict[str, set[tuple[str, int]]],
    ) -> None:
        todo = stages.features_todo(part_ids(plan), have)
        for chunk in stages.plan_chunks(todo, stages.FEATURE_CHUNK):
            feature_rows = stages.feature_rows(chunk, samples)
            # a sample with no stored features gets all of them fresh; one with some (a detector
            # added or its version changed) replaces them, checked against the stored keys
            for fresh in (True, False):
                self.store.stage(
                    "features", [r for r in feature_rows if (r["sample_id"] not in have) == fresh], fresh=fresh
                )
            faults.reach("features.chunk")
            self.stats.features_computed += len(chunk)

    def compute_ensembles(self, units: Sequence[ModelUnit], ref_fp: str) -> bool:
        """Stage the ensemble scores still missing; whether there were any."""
        staged = False
        handled: set[str] = set()
        for members in (self.proxy_ids, self.gold_ids):
            if len(members) < 2:
                continue
            scorer_id = self.role_scorer(members, ref_fp)
            if scorer_id in handled:
                continue  # the same ensemble as proxy and gold: its scores are staged once
            handled.add(scorer_id)
            ref_plan = self.planned(ref_fp)
            stats = [member_stats([self.member_values[m].get(p.sample_id) for p in ref_plan]) for m in members]
            for unit in units:
                plan = self.planned(unit.fingerprint)
                done = self.existing_ids(
                    f"SELECT sample_id FROM scores WHERE scorer_id = ? AND {IN_PART}", [scorer_id, part_ids(plan)]
                )
                todo = [p for p in plan if p.sample_id not in done]
                if not todo:
                    continue
                values = aggregate(
                    [[self.member_values[m].get(p.sample_id) for p in todo] for m in members], stats, self.ensemble_mode
                )
                self.store.stage(
                    "scores",
                    [
                        {"sample_id": p.sample_id, "scorer_id": scorer_id, "value": v}
                        for p, v in zip(todo, values, strict=True)
                    ],
                    fresh=True,
                )
                self.stats.scores_computed += len(todo)
                staged = True
        return staged

    def warn(self, message: str) -> None:
        self.stats.warnings.append(message)
        log(f"warning: {message}")

    # -- the run ------------------------------------------------------------------------------
    def plan(self) -> tuple[list[ModelUnit], str, list[str], bool]:
        """The model units, the reference's fingerprint and the run names; and whether every
        file was hashed before (only then can the database already hold every row)."""
        self.load_hash_cache()
        known_digests = len(self.hash_cache)
        self.build_scorers()
        ref_fp = model_fingerprint(self.ref_spec, self.hash_cache)
        units = self.model_units(ref_fp)
        self.max_prompt_tokens = self.prompt_budget(units)
        names = [run.name for run in self.runs]
        if not self.params.is_raw:
            self.warn(
                f"sampling with {asdict(self.params)}: KL is measured for this processed distribution, "
                "not the checkpoint's raw one"
            )
        return units, ref_fp, names, len(self.hash_cache) == known_digests

    def stored_answer(self) -> EvalResult | None:
        """The result when the database already holds every row of this evaluation; None when
        not. Reads only: nothing is loaded or written (``receipt.py`` checks answers with it)."""
        units, ref_fp, names, files_known = self.plan()
        return self.stored_result(units, ref_fp, names) if files_known else None

    def input_roots(self) -> list[str] | None:
        """Every local path this evaluation reads (run and checkpoint folders, adapter bases, the
        reference, the reward models, the suite and its prompt data), absolute; None when one
        input is not a local path: a hub id (its snapshot can move), a Python scorer (its imports
        can change) or a dataset on the hub."""
        config = self.config
        given: list[str] = [*config.paths, config.ref, config.suite, self.suite.source]
        if config.base:
            given.append(config.base)
        for text in (*config.proxy, *config.gold):
            spec = parse_scorer_spec(text)
            if spec.is_callable:
                return None
            given.append(spec.target)
        found: list[Path] = [self.ref_dir]
        for run in self.runs:
            found.append(run.path)
            for checkpoint in run.checkpoints:
                found.append(checkpoint.path)
                if checkpoint.base is not None:
                    found.append(checkpoint.base)
                    if not config.base and not local_adapter_base(checkpoint.path):
                        return None
        if not all(Path(text).expanduser().exists() for text in given):
            return None
        paths = [Path(text).expanduser() for text in given] + found
        return sorted({str(path.resolve()) for path in paths})

    def run(self) -> EvalResult:
        units, ref_fp, names, files_known = self.plan()
        if files_known:  # no file changed since it was last hashed
            cached = self.stored_result(units, ref_fp, names)
            if cached is not None:
                return cached
        self.load_tokenizers()
        with self.store.writer():
            self.save_hash_cache()
            self.stage_metadata(units, ref_fp)
            self.store.flush()
            self.current = self.current_aggregates(units, ref_fp, names)
            try:
                self.evaluate_units(units, ref_fp)
                if self.compute_ensembles(units, ref_fp):
                    self.store.stage_refresh(unit_checkpoints(units))  # ensemble scores complete them
            except UserInputError:
                # bad input found mid-run (a scorer that raises, say): the rows finished so far
                # are kept (content-addressed, reused by the next run), the attempt is recorded
                self.stage_evaluation("failed", datetime.now(timezone.utc).replace(tzinfo=None))
                self.store.flush()
                raise
            self.stage_evaluation("completed", datetime.now(timezone.utc).replace(tzinfo=None))
            self.store.flush()
            summary = self.summary(names)
        self.stats.lock_wait_seconds = self.store.lock_wait_seconds
        return EvalResult(self.eval_id, tuple(names), summary, self.stats)

    def current_aggregates(self, units: Sequence[ModelUnit], ref_fp: str, names: list[str]) -> set[tuple[str, str]]:
        """The checkpoints whose stored aggregates were computed for exactly the fields this
        evaluation writes (model, reference, generation, suite, samples, scorers): if no row of
        theirs changes, their aggregates need no refresh."""
        from rlhf_eval.stats import KEY_COLUMNS

        expected = {
            (r["run"], r["checkpoint"]): tuple(r[c] for c in KEY_COLUMNS)
            for r in rows.checkpoint_rows(units, self.checkpoint_fields(ref_fp))
        }
        stored, summarized = self.store.queries(
            [
                (
                    f"SELECT run, checkpoint, {', '.join(KEY_COLUMNS)} FROM checkpoints WHERE list_contains(?, run)",
                    [names],
                ),
                summary_keys(names),
            ]
        )
        same = {(r[0], r[1]) for r in stored if expected.get((r[0], r[1])) == tuple(r[2:])}
        return same & {(r[0], r[1]) for r in summarized}

    def stored_result(self, units: Sequence[ModelUnit], ref_fp: str, names: list[str]) -> EvalResult | None:
        """The result, read from the database, when it already holds every row this evaluation
        would write: the checkpoint rows as they would be written (but for the evaluation that
        wrote them), their current aggregates, every planned sample with its KL, each scorer's
        score and each detector's feature at its current version, the suite, the generation
        settings, the scorers and the training logs. Then nothing is loaded or written, and
        the database is opened read-only. None when anything is missing or different (the
        evaluation runs and computes only what is missing)."""
        from rlhf_eval.detectors import REGISTRY
        from rlhf_eval.errors import StoreError
        from rlhf_eval.store import connect

        if not self.store.path.is_file() or self.store.has_pending_shards():
            return None
        roles = (self.role_scorer(self.proxy_ids, ref_fp), self.role_scorer(self.gold_ids, ref_fp))
        scorer_ids = sorted({*self.scorers, *roles})
        features = sorted(f"{d.name}:{d.version}" for d in REGISTRY.values())
        ids = [p.sample_id for unit in units for p in self.planned(unit.fingerprint)]
        expected = {(r["run"], r["checkpoint"]): r for r in rows.checkpoint_rows(units, self.checkpoint_fields(ref_fp))}
        try:
            con = connect(self.store.path, read_only=True, timeout=5.0)
        except StoreError:
            return None
        try:
            if con.execute("SELECT max(version) FROM schema_migrations").fetchone() != (SCHEMA_VERSION,):
                return None
            columns = [c for c in next(iter(expected.values())) if c not in ("eval_id", "evaluated_at")]
            sql = f"SELECT {', '.join(columns)} FROM checkpoints WHERE list_contains(?, run)"
            stored = {(row["run"], row["checkpoint"]): row for row in dict_rows(con, sql, [names])}
            if any({c: want[c] for c in columns} != stored.get(key) for key, want in expected.items()):
                return None
            if not set(expected) <= set(con.execute(*summary_keys(names)).fetchall()):
                return None  # aggregates missing or computed for other keys
            counts = con.execute(
                f"""
                WITH part AS (SELECT unnest(?::VARCHAR[]) AS sample_id)
                SELECT (SELECT count(*) FROM samples WHERE {IN_ALL}),
                       (SELECT count(*) FROM kl WHERE ref_fp = ? AND {IN_ALL}),
                       (SELECT count(*) FROM scores WHERE list_contains(?, scorer_id) AND {IN_ALL}),
                       (SELECT count(*) FROM features WHERE list_contains(?, feature || ':' || version) AND {IN_ALL}),
                       (SELECT count(*) FROM suites WHERE suite_fp = ?),
                       (SELECT count(*) FROM generation_configs WHERE gen_key = ?),
                       (SELECT count(*) FROM scorers WHERE list_contains(?, scorer_id))
                """,
                [ids, ref_fp, scorer_ids, features, self.suite.fingerprint, self.gen_key, scorer_ids],
            ).fetchone()
            n = len(ids)
            if counts != (n, n, n * len(scorer_ids), n * len(features), 1, 1, len(scorer_ids)):
                return None
            logs = con.execute(
                "SELECT run, step, metric, value FROM training_logs WHERE list_contains(?, run)", [names]
            ).fetchall()
            if not same_logs(rows.training_log_rows(self.runs), logs):
                return None
            summary = dict_rows(con, SUMMARY_SQL, [names])
        except duckdb.Error:
            return None  # the writer reports what is wrong with the database
        finally:
            con.close()
        latest = max(summary, key=lambda row: (row.get("evaluated_at") is not None, row.get("evaluated_at") or 0))
        return EvalResult(str(latest["eval_id"]), tuple(names), summary, self.stats, cached=True)

    def prompt_budget(self, units: Sequence[ModelUnit]) -> int:
        context = min(context_length_of(u.spec) for u in units)
        budget = context - self.params.max_new_tokens
        if budget < 1:
            raise UserInputError(
                f"--max-new-tokens {self.params.max_new_tokens}: the models' context is {context} tokens; "
                f"use at most {context - 1} so prompts fit"
            )
        return budget

    def summary(self, runs: Sequence[str]) -> list[dict[str, Any]]:
        con_rows = self.store.query(SUMMARY_SQL, [list(runs)])
        names = [
            row[0] for row in self.store.query("SELECT column_name FROM (DESCRIBE SELECT * FROM checkpoint_summary)")
        ]
        return [dict(zip(names, row, strict=True)) for row in con_rows]


SUMMARY_SQL = "SELECT * FROM checkpoint_summary WHERE list_contains(?, run) ORDER BY run, step, checkpoint"
#: Rows whose sample is in the CTE ``part`` (``stored_result``).
IN_ALL = "sample_id IN (SELECT sample_id FROM part)"


def summary_keys(runs: list[str]) -> tuple[str, list[Any]]:
    """The query for the (run, checkpoint) pairs of ``runs`` with current aggregates."""
    return "SELECT run, checkpoint FROM checkpoint_summary WHERE list_contains(?, run)", [runs]


def dict_rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def same_logs(wanted: Iterable[dict[str, Any]], stored: Iterable[tuple[Any, ...]]) -> bool:
    """Whether every training-log row to write is stored with the same value (NaN equals NaN)."""
    have = {(run, step, metric): value for run, step, metric, value in stored}
    for row in wanted:
        value = have.get((row["run"], row["step"], row["metric"]), ())
        if value == () or not (value == row["value"] or (value != value and row["value"] != row["value"])):
            return False
    return True


#: Rows of one part of a model's plan: its sample ids arrive as one list parameter.
IN_PART = "sample_id IN (SELECT unnest(?::VARCHAR[]))"


def part_ids(part: Sequence[PlannedSample]) -> list[str]:
    return [p.sample_id for p in part]


def unit_checkpoints(units: Sequence[ModelUnit]) -> list[tuple[str, str]]:
    """The (run, checkpoint) keys of the checkpoints these model units are evaluated for."""
    return [(c.run, c.checkpoint) for unit in units for c in unit.checkpoints]


#: Where the stages run (``--engine``): this process, or a Ray cluster (``ray_engine.py``).
ENGINES = ("local", "ray")


def evaluate(config: EvalConfig) -> EvalResult:
    """Evaluate every checkpoint under ``config.paths``; see ``Evaluation`` (``--engine local``)
    and ``ray_engine.RayEvaluation`` (``--engine ray``)."""
    if config.backend not in stages.BACKENDS:
        raise UserInputError(f"--backend {config.backend}: use one of {', '.join(stages.BACKENDS)}")
    if config.engine not in ENGINES:
        raise UserInputError(f"--engine {config.engine}: use one of {', '.join(ENGINES)}")
    if config.backend == "vllm":
        from rlhf_eval.vllm_backend import require_vllm

        require_vllm()  # before anything is loaded or written
    if config.engine == "ray":
        from rlhf_eval.ray_engine import RayEvaluation, require_ray

        require_ray()
        return RayEvaluation(config).run()
    return Evaluation(config).run()
