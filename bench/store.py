"""How fast does the store take rows in, and how fast does ``checkpoint_summary`` read them out?
Side by side in one run, on databases built in a temporary folder with the real schema (the
project's migrations, applied by ``Store.writer()`` as every evaluation does):

    .venv/bin/python bench/store.py                 # ingest paths, then the views at 1M sample rows
    .venv/bin/python bench/store.py --large         # then 10M sample rows (27 GB of disk, hours)
    .venv/bin/python bench/store.py --db big.duckdb  # the views of a database built earlier
    .venv/bin/python bench/store.py --quick         # small sizes, a smoke run
    .venv/bin/python bench/store.py --json          # the figures as JSON on stdout

**Ingest.** One batch of synthetic evaluated samples (``--ingest-samples``), each shaped like
the evaluator's rows: a ``samples`` row (24-hex id, prompt and response token ids, text), a
``kl`` row, two ``scores`` rows (proxy, gold) and one ``features`` row per registered detector.
The same rows go into a fresh database each of these ways:

1. evaluator: Python row dicts through ``Store.stage(..., fresh=True)`` (dedupe,
   ``pa.Table.from_pylist``, one Arrow IPC shard per chunk, fsync, rename) in the evaluator's
   chunk sizes, then ``Store.flush`` (one ``INSERT`` per table of its shards concatenated): the
   write path ``pipeline.py`` uses; its two halves are also shown alone (``stage``, ``flush``);
2. the same rows staged without ``fresh``: the flush keeps one row per key across the shards
   and checks them against the stored keys (an anti-join; into this empty database it measures
   the within-flush work; what the check costs against a grown table is timed with the views);
3. store, Arrow shards: the same tables as Arrow, one fresh shard per table, then
   ``Store.flush``; ``staged shard only`` is its first half (what ingest would cost if readers
   read shards);
4. raw ``INSERT OR IGNORE`` of the Arrow tables into copies that hold the primary keys the
   per-sample tables had before migration 0004 (what ``flush`` ran before it, without staging);
5. raw plain ``INSERT`` into those keyed copies (no conflict clause);
6. raw ``INSERT`` into the tables as they are (no key index to maintain).

Rates are given per table and for a *complete sample* (all of its rows, 4 + one per detector).
The target (the performance issue) is at least 1M sample rows per second; both readings are
shown, and the verdict is on the ``samples`` table through the evaluator's path.

**DuckDB's own ceiling.** What the database engine itself takes of this row, whatever a store
does around it: ``samples`` rows (``--ceiling-rows``, fresh ids, the ingest batch's shape) in one
plain ``INSERT`` from Arrow into a table without keys of a database file, in one transaction,
nothing staged: on every thread DuckDB uses and on one (the ceiling follows the cores), into an
in-memory database (the engine without compressing and writing its file), and without the
row's response text and token-id lists. Printed as rows/s, MB/s of Arrow data and bytes per row,
beside what 1M rows/s of this row would need in MB/s.

**Views.** A database (``--rows`` sample rows: runs x checkpoints x 1000 prompts x 8 samples,
every run's reference checkpoint sharing one model) is built through the store: ``Store.writer()``
(migrations), Arrow shards staged as ``Store.stage`` writes them and one ``Store.flush`` per
``--batch`` checkpoints, which ingests the rows and refreshes those checkpoints' aggregates
(requested with ``Store.stage_refresh`` as the evaluator does once a checkpoint's rows are
complete; ``checkpoint_stats``, ``rlhf_eval/stats.py``); DuckDB runs under ``--memory-limit`` (the
store's connections share a capped instance, see ``capped``). ``--large`` then grows the same
database to 10M sample rows (about 27 GB of disk; hours here: the build's rate falls as the
tables grow). ``--db PATH`` times a database built earlier instead, upgrading it first if its
schema is older (timed: an upgrade to ``checkpoint_stats`` aggregates every stored checkpoint);
it writes one more checkpoint into that database. At each size, on a read-only connection
under the same cap: ``SELECT * FROM checkpoint_summary`` cold (the first query after opening)
and warm (median of ``--repeats``), one run filtered as ``query.checkpoint_summary(db, [run])``
does (``list_contains``) and as ``run = ?``, the library call itself (up to 2M rows: it opens
with DuckDB's default memory limit) and DuckDB's JSON profile of the view (the slowest operators
with what they group or join on, time by operator kind, scans per table). Then what the writer
pays at that size: refreshing one checkpoint's aggregates and every checkpoint's (each rolled
back), and one more checkpoint of 8,000 samples through ``stage`` and ``flush``: the flush of
its rows (what every flush in the middle of an evaluation costs) and the flush of its refresh
request (paid once, when the checkpoint is complete); then another checkpoint's rows staged
without ``fresh``, whose flush checks them against the stored keys (what a write of rows not
known to be new costs at that size). Target: the whole view over 10M sample rows in under
200 ms.

Measures only: the schema, the store and the views are as shipped. The machine is shared:
absolute times drift; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rlhf_eval.detectors import REGISTRY
from rlhf_eval.store import KEYS, SCHEMA_VERSION, Store, ipc_bytes
from rlhf_eval.table_schemas import TABLES

TARGET_ROWS_PER_SECOND = 1_000_000
TARGET_VIEW_SECONDS = 0.2
TARGET_VIEW_ROWS = 10_000_000
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
FEATURES = [(d.name, d.version) for d in REGISTRY.values()]
SAMPLE_TABLES = ("samples", "kl", "scores", "features")
#: rows per staged shard in the evaluator (pipeline.py): a generation or KL batch, SCORE_CHUNK
#: samples per scorer, FEATURE_CHUNK samples x every detector.
EVALUATOR_CHUNK = {"samples": 256, "kl": 256, "scores": 256, "features": 2048 * len(FEATURES)}
WORDS = (
    "the a cat dog sky sun moon tree bird water light house road rain snow wind good great answer idea "
    "first second because so then also very big small red green blue warm cold explain list think help"
).split()
NOW = datetime(2026, 1, 1, 12, 0, 0)


# -- synthetic rows shaped like the evaluator's ------------------------------------------------


def hex_ids(rng: np.random.Generator, count: int, length: int) -> pa.Array:
    """``count`` random lowercase hex strings of ``length`` characters (content-hash shaped)."""
    digits = HEX[rng.integers(0, 16, size=(count, length), dtype=np.uint8)]
    offsets = np.arange(0, count * length + 1, length, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(digits.tobytes())])


def token_lists(rng: np.random.Generator, lengths: np.ndarray) -> pa.Array:
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(3, 50_000, int(offsets[-1]), np.int32)))


@dataclass(frozen=True)
class Suite:
    prompt_ids: pa.Array
    prompt_tokens: pa.Array  # list<int32> per prompt
    samples: int  # per prompt
    responses: pa.Array  # a pool of response texts
    response_tokens: np.ndarray  # their lengths in tokens

    @property
    def per_model(self) -> int:
        return len(self.prompt_ids) * self.samples


IDS = {"ref": "ref0ref0ref0ref0", "suite": "5u17e5u17e5u17e0", "gen": "9e0k9e0k9e0k9e0k", "eval": "e0a1e0a1e0a1e0a1"}
SCORERS = {"proxy": "b0b0b0b0b0b0b0b0", "gold": "901d901d901d901d"}


def make_suite(rng: np.random.Generator, prompts: int, samples: int) -> Suite:
    responses, lengths = [], []
    for i in range(2048):
        words = rng.choice(WORDS, size=int(rng.integers(8, 120))).tolist()
        responses.append(("I'm sorry, but " if i % 11 == 0 else "") + " ".join(words))
        lengths.append(len(words) + 1)  # one token per word and the EOS
    prompt_tokens = token_lists(rng, rng.integers(12, 60, prompts))
    return Suite(hex_ids(rng, prompts, 16), prompt_tokens, samples, pa.array(responses), np.array(lengths, np.int32))


def model_tables(rng: np.random.Generator, suite: Suite, model_fp: str, pressure: float) -> dict[str, pa.Table]:
    """One checkpoint's evaluated samples: its ``samples``, ``kl``, ``scores`` and ``features`` rows."""
    count = suite.per_model
    prompt_of = pa.array(np.repeat(np.arange(len(suite.prompt_ids)), suite.samples))
    ids = hex_ids(rng, count, 24)
    picks = rng.integers(0, len(suite.responses), count)
    n_tokens = suite.response_tokens[picks]
    samples = pa.table(
        {
            "sample_id": ids,
            "model_fp": pa.array([model_fp] * count),
            "prompt_id": pc.take(suite.prompt_ids, prompt_of),
            "gen_key": pa.array([IDS["gen"]] * count),
            "sample_idx": pa.array(np.tile(np.arange(suite.samples, dtype=np.int32), len(suite.prompt_ids))),
            "prompt_token_ids": pc.take(suite.prompt_tokens, prompt_of),
            "token_ids": token_lists(rng, n_tokens),
            "response": pc.take(suite.responses, pa.array(picks)),
            "n_tokens": pa.array(n_tokens),
            "ended_eos": pa.array(picks % 7 != 0),
            "prompt_truncated": pa.array(np.zeros(count, bool)),
            "eval_id": pa.array([IDS["eval"]] * count),
        }
    )
    kl = pressure * (1 + 0.3 * rng.random(count))
    kl_table = pa.table(
        {
            "sample_id": ids,
            "ref_fp": pa.array([IDS["ref"]] * count),
            "logp_policy": -20.0 - rng.random(count),
            "logp_ref": -20.0 - kl,
            "k1": kl * 1.1,
            "k2": kl * 0.9,
            "k3": kl * 1.05,
            "kl_full": kl,
            "n_tokens": pa.array(n_tokens),
        }
    )
    proxy = pressure + rng.normal(0, 1, count)
    gold = pressure - 0.35 * pressure**2 + rng.normal(0, 1, count)
    scores = pa.table(
        {
            "sample_id": pa.concat_arrays([ids, ids]),
            "scorer_id": pa.array([SCORERS["proxy"]] * count + [SCORERS["gold"]] * count),
            "value": np.concatenate([proxy, gold]),
        }
    )
    k = len(FEATURES)
    features = pa.table(
        {
            "sample_id": pc.take(ids, pa.array(np.repeat(np.arange(count), k))),
            "feature": pa.array([name for name, _ in FEATURES] * count),
            "version": pa.array([version for _, version in FEATURES] * count, pa.int32()),
            "value": rng.random(count * k),
        }
    )
    tables = {"samples": samples, "kl": kl_table, "scores": scores, "features": features}
    return {name: table.cast(TABLES[name][1]) for name, table in tables.items()}


def metadata_tables(suite: Suite, checkpoints: list[tuple[str, str, int, str, str]]) -> dict[str, pa.Table]:
    """Suites, prompts, scorers, generation config, evaluation and checkpoint rows for a build."""
    prompts = len(suite.prompt_ids)
    checkpoint_rows = [
        {
            "run": run,
            "checkpoint": name,
            "step": step,
            "method": method,
            "is_reference": step == 0,
            "path": f"/models/{model}",
            "kind": "model",
            "base_model": None,
            "model_fp": model,
            "ref_fp": IDS["ref"],
            "suite_fp": IDS["suite"],
            "gen_key": IDS["gen"],
            "samples_per_prompt": suite.samples,
            "proxy_scorer": SCORERS["proxy"],
            "gold_scorer": SCORERS["gold"],
            "eval_id": IDS["eval"],
            "evaluated_at": NOW,
        }
        for run, name, step, method, model in checkpoints
    ]
    rows: dict[str, list[dict[str, Any]]] = {
        "suites": [
            {"suite_fp": IDS["suite"], "name": "bench", "version": "1", "source": "synthetic", "n_prompts": prompts}
        ],
        "prompts": [
            {
                "suite_fp": IDS["suite"],
                "idx": i,
                "prompt_id": pid,
                "text": f"question {i}",
                "messages": None,
                "category": None,
            }
            for i, pid in enumerate(suite.prompt_ids.to_pylist())
        ],
        "scorers": [
            {"scorer_id": sid, "name": role, "kind": "callable", "spec": "{}", "higher_is_better": True}
            for role, sid in SCORERS.items()
        ],
        "generation_configs": [{"gen_key": IDS["gen"], "config": "{}"}],
        "evaluations": [
            {
                "eval_id": IDS["eval"],
                "started_at": NOW,
                "finished_at": NOW,
                "status": "completed",
                "command": "bench/store.py",
                "config": "{}",
                "provenance": "{}",
                "seed": 0,
                "schema_version": SCHEMA_VERSION,
            }
        ],
        "checkpoints": checkpoint_rows,
    }
    return {name: pa.Table.from_pylist(table_rows, schema=TABLES[name][1]) for name, table_rows in rows.items()}


def stage_arrow(store: Store, table: str, data: pa.Table, fresh: bool = True) -> None:
    """One shard as ``Store.stage`` writes it (temporary name, fsync, rename), from Arrow columns;
    fresh (new keys, as the evaluator stages its rows) unless said."""
    store.stage_bytes(table, ipc_bytes(data), fresh=fresh)


# -- ingest --------------------------------------------------------------------------------------


def fresh_store(root: Path, name: str) -> Store:
    """A new database with the schema applied the way every evaluation applies it."""
    store = Store(root / f"{name}.duckdb")
    with store.writer():
        pass
    return store


def chunks(table: pa.Table | list[dict[str, Any]], size: int) -> Iterator[Any]:
    for start in range(0, len(table), size):
        yield table[start : start + size]


def ingest_paths(root: Path, tables: dict[str, pa.Table]) -> dict[str, dict[str, float]]:
    """Seconds per table for each of the five paths, each into its own fresh database."""
    out: dict[str, dict[str, float]] = {}

    for label, fresh in (("evaluator", True), ("evaluator, checked", False)):
        store = fresh_store(root, label.replace(" ", "_").replace(",", ""))
        out[label], out[f"{label}: stage"], out[f"{label}: flush"] = {}, {}, {}
        with store.writer():
            for name, data in tables.items():
                rows = data.to_pylist()  # the evaluator's row dicts (rows.py); building them is not timed
                started = time.perf_counter()
                for chunk in chunks(rows, EVALUATOR_CHUNK[name]):
                    store.stage(name, chunk, fresh=fresh)
                staged = time.perf_counter()
                store.flush()
                done = time.perf_counter()
                out[f"{label}: stage"][name], out[f"{label}: flush"][name] = staged - started, done - staged
                out[label][name] = done - started
                del rows
        if not fresh:  # its stage half is the evaluator's
            del out[f"{label}: stage"]

    store = fresh_store(root, "arrow_store")
    out["store, Arrow shards"], out["staged shard only"] = {}, {}
    with store.writer():
        for name, data in tables.items():
            started = time.perf_counter()
            stage_arrow(store, name, data)
            staged = time.perf_counter()
            store.flush()
            out["store, Arrow shards"][name] = time.perf_counter() - started
            out["staged shard only"][name] = staged - started

    for label, statement, keyed in (
        ("raw INSERT OR IGNORE, keyed", "INSERT OR IGNORE INTO {table}_keyed BY NAME SELECT * FROM staged", True),
        ("raw INSERT, keyed", "INSERT INTO {table}_keyed BY NAME SELECT * FROM staged", True),
        ("raw INSERT, no keys", "INSERT INTO {table} BY NAME SELECT * FROM staged", False),
    ):
        store = fresh_store(root, label.replace(" ", "_").replace(",", ""))
        con = duckdb.connect(str(store.path))
        out[label] = {}
        try:
            for name, data in tables.items():
                if keyed:  # the table as migrations 0001-0003 made it
                    con.execute(f"CREATE TABLE {name}_keyed AS SELECT * FROM {name} LIMIT 0")
                    con.execute(f"ALTER TABLE {name}_keyed ADD PRIMARY KEY ({', '.join(KEYS[name])})")
                con.register("staged", data)
                started = time.perf_counter()
                con.execute("BEGIN TRANSACTION")
                con.execute(statement.format(table=name))
                con.execute("COMMIT")
                out[label][name] = time.perf_counter() - started
                con.unregister("staged")
        finally:
            con.close()
    return out


def engine_ceiling(root: Path, rng: np.random.Generator, suite: Suite, rows: int) -> dict[str, Any]:
    """DuckDB's plain ``INSERT`` of ``rows`` fresh ``samples`` rows from Arrow (no keys, no
    staging, one transaction) into a database file: the whole row on every thread DuckDB uses
    and on one (how the ceiling scales with cores), the whole row into an in-memory database
    (the engine without its storage: compression and writing the file), then without the row's
    text and token-id lists."""
    parts, made = [], 0
    while made < rows:
        part = model_tables(rng, suite, "ce1l1n9ce1l1n90", 1.0)["samples"]
        parts.append(part.slice(0, rows - made))
        made += parts[-1].num_rows
    data = pa.concat_tables(parts).combine_chunks()
    narrow = data.drop_columns(["prompt_token_ids", "token_ids", "response"])
    out: dict[str, Any] = {"rows": data.num_rows}
    cases: list[tuple[str, pa.Table, str, int | None]] = [
        ("whole row", data, str(root / "ceiling.duckdb"), None),
        ("whole row, 1 thread", data, str(root / "ceiling-1.duckdb"), 1),
        ("whole row, in memory", data, ":memory:", None),
        ("without text and token lists", narrow, str(root / "ceiling-narrow.duckdb"), None),
    ]
    for label, table, target, threads in cases:
        con = duckdb.connect(target)
        try:
            if threads is not None:
                con.execute(f"SET threads = {threads}")
            out.setdefault("threads", con.execute("SELECT current_setting('threads')").fetchall()[0][0])
            con.register("arrow_rows", table)
            con.execute("CREATE TABLE ceiling AS SELECT * FROM arrow_rows LIMIT 0")
            started = time.perf_counter()
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO ceiling SELECT * FROM arrow_rows")
            con.execute("COMMIT")
            seconds = time.perf_counter() - started
            con.unregister("arrow_rows")
        finally:
            con.close()
        out[label] = {
            "seconds": seconds,
            "rows_per_s": table.num_rows / seconds,
            "bytes_per_row": table.nbytes / table.num_rows,
            "mb_per_s": table.nbytes / seconds / 1e6,
        }
    return out


# -- a database grown to each size --------------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    """The database after growing to one size, and what the growing cost."""

    sample_rows: int
    view_rows: int  # checkpoint_samples rows: each run's reference checkpoint shares one model's samples
    checkpoints: int
    seconds_insert: float
    first_batch_samples_per_s: float
    last_batch_samples_per_s: float
    file_gb: float


@contextmanager
def capped(path: Path, memory_limit: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """Hold a read-write connection with DuckDB's memory limit set: the store's own connections
    to ``path`` in this process (``Store.writer``, ``flush``) open the same database instance,
    so they run under the limit without any change to the store."""
    holder = duckdb.connect(str(path))
    try:
        holder.execute(f"SET memory_limit = '{memory_limit}'")
        holder.execute(f"SET max_temp_directory_size = '{SPILL_LIMIT}'")
        yield holder
    finally:
        holder.close()


class ViewDatabase:
    """RUNS runs sharing one reference model, each with checkpoints evaluated on one suite,
    grown in steps (the checkpoints interleaved over runs, so every size has every run), all
    through the store: ``Store.writer()``, Arrow shards staged as ``Store.stage`` writes them,
    and one ``Store.flush`` per batch of checkpoints, which ingests the rows and refreshes their
    checkpoints' aggregates (requested as complete). DuckDB runs under ``memory_limit`` (``capped``)."""

    def __init__(
        self, path: Path, runs: int, prompts: int, samples: int, max_rows: int, seed: int, memory_limit: str
    ) -> None:
        self.path, self.memory_limit = path, memory_limit
        self.rng = np.random.default_rng(seed)
        self.suite = make_suite(self.rng, prompts, samples)
        self.runs = [f"run{r}" for r in range(runs)]
        per_run = max(1, math.ceil((max_rows / self.suite.per_model - 1) / runs))
        self.plan = [
            (run, f"checkpoint-{c * 100}", c * 100, ("ppo", "grpo", "dpo", "rloo")[r % 4], f"{r:04d}{c:08d}cafe",
             (r + 1) * c / per_run)
            for c in range(1, per_run + 1)
            for r, run in enumerate(self.runs)
        ]  # fmt: skip
        self.done = 0
        references = [(run, "reference", 0, "base", IDS["ref"], 0.0) for run in self.runs]
        with capped(path, memory_limit):
            store = Store(path)
            with store.writer():
                for name, table in metadata_tables(self.suite, []).items():
                    if table.num_rows:
                        store.stage(name, table.to_pylist())
                store.flush()
                self.insert(store, references, [(IDS["ref"], 0.0)])

    def insert(
        self, store: Store, checkpoints: list[tuple[str, str, int, str, str, float]], models: list[tuple[str, float]]
    ) -> float:
        """Stage the checkpoint rows and the models' sample tables, flush; returns the seconds."""
        parts = [model_tables(self.rng, self.suite, model, pressure) for model, pressure in models]
        tables = {name: pa.concat_tables([part[name] for part in parts]) for name in SAMPLE_TABLES}
        del parts
        rows = metadata_tables(self.suite, [c[:5] for c in checkpoints])["checkpoints"]
        started = time.perf_counter()
        for name, data in {**tables, "checkpoints": rows}.items():
            stage_arrow(store, name, data)
        store.stage_refresh([(c[0], c[1]) for c in checkpoints])
        store.flush()
        return time.perf_counter() - started

    def grow_to(self, rows: int, batch: int, log: Callable[[str], None]) -> Growth:
        target = min(len(self.plan), max(0, round(rows / self.suite.per_model) - 1))
        seconds, rates = 0.0, []
        with capped(self.path, self.memory_limit):
            store = Store(self.path)
            with store.writer():
                for start in range(self.done, target, batch):
                    step = self.plan[start : min(start + batch, target)]
                    took = self.insert(store, step, [(c[4], c[5]) for c in step])
                    seconds += took
                    rates.append(len(step) * self.suite.per_model / took)
                    if (start - self.done) // batch % 20 == 0:
                        log(f"  {start + len(step)}/{target} checkpoints, {rates[-1]:,.0f} samples/s")
        self.done = max(self.done, target)
        return Growth(
            sample_rows=(1 + self.done) * self.suite.per_model,
            view_rows=(len(self.runs) + self.done) * self.suite.per_model,
            checkpoints=len(self.runs) + self.done,
            seconds_insert=seconds,
            first_batch_samples_per_s=rates[0] if rates else float("nan"),
            last_batch_samples_per_s=rates[-1] if rates else float("nan"),
            file_gb=self.path.stat().st_size / 2**30,
        )


# -- the views -------------------------------------------------------------------------------

LIBRARY_CALL_MAX_ROWS = 2_000_000  # query.checkpoint_summary opens with DuckDB's default memory limit
SPILL_LIMIT = "20GB"  # DuckDB may spill to disk above its memory limit, up to this much


def timed(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> float:
    started = time.perf_counter()
    con.execute(sql, params or []).fetchall()
    return time.perf_counter() - started


def time_views(db: Path, run: str, repeats: int, memory_limit: str, sample_rows: int) -> dict[str, Any]:
    """Seconds of the view queries on a read-only connection (cold: the first query after opening).
    A query that runs out of memory under ``memory_limit`` ends the timings of this size and is
    reported as ``error``."""
    from rlhf_eval import query

    out: dict[str, Any] = {}
    config: dict[str, Any] = {"memory_limit": memory_limit, "max_temp_directory_size": SPILL_LIMIT}
    con = duckdb.connect(str(db), read_only=True, config=config)
    one_run = "SELECT * FROM checkpoint_summary WHERE list_contains(?, run)"
    try:
        out["summary_cold_s"] = timed(con, "SELECT * FROM checkpoint_summary")
        out["summary_warm_s"] = statistics.median(
            timed(con, "SELECT * FROM checkpoint_summary") for _ in range(repeats)
        )
        out["one_run_list_contains_s"] = statistics.median(timed(con, one_run, [[run]]) for _ in range(repeats))
        out["one_run_equals_s"] = statistics.median(
            timed(con, "SELECT * FROM checkpoint_summary WHERE run = ?", [run]) for _ in range(repeats)
        )
        out["summary_rows"] = con.execute("SELECT count(*) FROM checkpoint_summary").fetchall()[0][0]
        out["profile"] = profile(con, "SELECT * FROM checkpoint_summary")
    except duckdb.OutOfMemoryException as exc:
        out["error"] = f"out of memory at memory_limit {memory_limit}: {str(exc).splitlines()[0][:120]}"
    finally:
        con.close()
    if sample_rows <= LIBRARY_CALL_MAX_ROWS and "error" not in out:
        started = time.perf_counter()
        query.checkpoint_summary(db)
        out["library_call_s"] = time.perf_counter() - started
    return out


def time_writes(db: Path, run: str, memory_limit: str, refresh_all: bool, seed: int) -> dict[str, Any]:
    """What the writer pays at this size: the aggregates' refresh (``stats.refresh_checkpoints``
    for one checkpoint, and ``stats.refresh_all`` when asked, each in a transaction rolled back),
    then one more checkpoint (8,000 samples) through ``Store.stage`` shards and ``Store.flush``."""
    from rlhf_eval import stats

    out: dict[str, Any] = {}
    with capped(db, memory_limit) as con:
        checkpoint = con.execute("SELECT max(checkpoint) FROM checkpoints WHERE run = ?", [run]).fetchall()[0][0]
        jobs = [("refresh_one_checkpoint_s", lambda: stats.refresh_checkpoints(con, [(run, checkpoint)]))]
        if refresh_all:
            jobs.append(("refresh_all_s", lambda: stats.refresh_all(con)))
        for key, job in jobs:
            con.execute("BEGIN TRANSACTION")
            started = time.perf_counter()
            try:
                job()
                out[key] = time.perf_counter() - started
            except duckdb.OutOfMemoryException as exc:
                out[key + "_error"] = str(exc).splitlines()[0][:120]
            finally:
                con.execute("ROLLBACK")
        rng = np.random.default_rng(seed + 7)
        suite_ids = con.execute("SELECT prompt_id FROM prompts ORDER BY idx").fetchall()
        samples = con.execute("SELECT max(samples_per_prompt) FROM checkpoints").fetchall()[0][0]
        suite = make_suite(rng, len(suite_ids), int(samples))
        suite = Suite(pa.array([r[0] for r in suite_ids]), suite.prompt_tokens, suite.samples,
                      suite.responses, suite.response_tokens)  # fmt: skip
        tables = model_tables(rng, suite, f"{uuid.uuid4().hex[:12]}feed", 1.0)
        tables["checkpoints"] = metadata_tables(suite, [(run, "checkpoint-extra", 10**9, "ppo", tables["samples"]
                                                         ["model_fp"][0].as_py())])["checkpoints"]  # fmt: skip
        checked = model_tables(rng, suite, f"{uuid.uuid4().hex[:12]}c4ec", 1.0)
        store = Store(db)
        with store.writer():
            started = time.perf_counter()
            for name, data in tables.items():
                stage_arrow(store, name, data)
            staged = time.perf_counter()
            store.flush()
            flushed = time.perf_counter()
            store.stage_refresh([(run, "checkpoint-extra")])
            store.flush()
            done = time.perf_counter()
            for name, data in checked.items():
                stage_arrow(store, name, data, fresh=False)
            store.flush()
            out["checked_checkpoint_flush_s"] = time.perf_counter() - done
        out["one_checkpoint_samples"] = suite.per_model
        out["one_checkpoint_stage_s"] = staged - started
        out["one_checkpoint_flush_s"] = flushed - staged
        out["one_checkpoint_refresh_s"] = done - flushed
    return out


def existing_database(
    path: Path, memory_limit: str, log: Callable[[str], None]
) -> tuple[Growth, str, float | str | None]:
    """The shape of a database built earlier (``--db``) and its first run; a database at an older
    schema version is upgraded first by ``Store.writer()`` (timed: the seconds are returned, or
    why it failed)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        version = con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0]
    finally:
        con.close()
    upgrade_s: float | str | None = None
    if version < SCHEMA_VERSION:
        log(f"  upgrading {path} from schema version {version} to {SCHEMA_VERSION} (Store.writer) ...")
        with capped(path, memory_limit):
            started = time.perf_counter()
            try:
                with Store(path).writer():
                    upgrade_s = time.perf_counter() - started
            except duckdb.OutOfMemoryException as exc:
                upgrade_s = f"failed after {time.perf_counter() - started:.0f} s: {str(exc).splitlines()[0][:100]}"
    con = duckdb.connect(str(path), read_only=True)
    try:
        sample_rows = con.execute("SELECT count(*) FROM samples").fetchall()[0][0]
        view_rows, checkpoints, run = con.execute(
            "SELECT sum(m.n), count(*), min(c.run) FROM checkpoints c "
            "JOIN (SELECT model_fp, count(*) AS n FROM samples GROUP BY model_fp) m USING (model_fp)"
        ).fetchall()[0]
    finally:
        con.close()
    nan = float("nan")
    grown = Growth(int(sample_rows), int(view_rows), int(checkpoints), nan, nan, nan, path.stat().st_size / 2**30)
    return grown, str(run), upgrade_s


def profile(con: duckdb.DuckDBPyConnection, sql: str, top: int = 8) -> dict[str, Any]:
    """DuckDB's JSON profile of ``sql``: the operators that took longest (seconds summed over
    threads) with their output rows and what they join or group on, time by operator kind, and
    how many times each table is scanned."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "profile.json"
        con.execute("PRAGMA enable_profiling = 'json'")
        con.execute(f"PRAGMA profiling_output = '{output}'")
        con.execute(sql).fetchall()
        con.execute("PRAGMA disable_profiling")
        tree = json.loads(output.read_text())
    operators: list[dict[str, Any]] = []
    scans: dict[str, int] = {}

    def walk(node: dict[str, Any]) -> None:
        # DuckDB >= 1.2 writes name/timing/intermediate_rows; older releases operator_*.
        name = node.get("name") or node.get("operator_name") or node.get("operator_type")
        if name:
            extra = node.get("extra_info") or {}
            keep = ("Join Type", "Conditions", "Groups", "Table")
            operators.append(
                {
                    "operator": name,
                    "seconds": float(node.get("timing", node.get("operator_timing", 0.0))),
                    "rows": int(node.get("intermediate_rows", node.get("operator_cardinality", 0))),
                    "detail": json.dumps({k: v for k, v in extra.items() if k in keep})[:150],
                }
            )
            if "Table" in extra:
                scans[extra["Table"]] = scans.get(extra["Table"], 0) + 1
        for child in node.get("children", []):
            walk(child)

    for root in tree.get("operator", [tree]):
        walk(root)
    kinds: dict[str, float] = {}
    for op in operators:
        kinds[op["operator"]] = kinds.get(op["operator"], 0.0) + op["seconds"]
    return {
        "seconds": float(tree.get("query", {}).get("total_time", tree.get("latency", 0.0))),
        "operator_seconds": sum(op["seconds"] for op in operators),
        "peak_buffer_gb": tree.get("system", {}).get("peak_buffer_memory", 0) / 2**30,
        "by_kind": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "table_scans": scans,
        "top": sorted(operators, key=lambda op: -op["seconds"])[:top],
    }


# -- report --------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def ingest_report(seconds: dict[str, dict[str, float]], counts: dict[str, int], samples: int) -> dict[str, Any]:
    report = {}
    for label, per_table in seconds.items():
        total = sum(per_table.values())
        report[label] = {
            "seconds": per_table,
            "rows_per_s": {name: counts[name] / s for name, s in per_table.items()},
            "complete_samples_per_s": samples / total,
            "all_rows_per_s": sum(counts.values()) / total,
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest-samples", type=int, default=64_000, help="evaluated samples in the ingest batch")
    parser.add_argument(
        "--ceiling-rows", type=int, default=640_000, help="samples rows of DuckDB's own INSERT (0: not measured)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="sample rows of the view database")
    parser.add_argument("--large", action="store_true", help=f"then grow it to {TARGET_VIEW_ROWS:,} sample rows")
    parser.add_argument("--quick", action="store_true", help="8,000 samples ingested, views at 100,000 rows")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--batch", type=int, default=16, help="checkpoints per insert while building")
    parser.add_argument("--repeats", type=int, default=3, help="timings per view query (the median is shown)")
    parser.add_argument("--memory-limit", default="6GB", help="DuckDB memory limit of the build and query connections")
    parser.add_argument(
        "--no-writes", dest="writes", action="store_false", help="skip the refresh and one-checkpoint flush timings"
    )
    parser.add_argument(
        "--no-refresh-all", dest="refresh_all", action="store_false", help="skip timing stats.refresh_all"
    )
    parser.add_argument("--no-ingest", dest="ingest", action="store_false", help="skip the ingest comparison")
    parser.add_argument("--dir", type=Path, help="folder for the databases (default: a temporary one)")
    parser.add_argument(
        "--db", type=Path, help="time the views of this database instead (upgraded if older; one checkpoint is added)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.ingest_samples, args.rows, args.large, args.ceiling_rows = 8_000, 100_000, False, 64_000

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sizes = sorted({args.rows, TARGET_VIEW_ROWS} if args.large else {args.rows})
    result: dict[str, Any] = {"memory_limit": args.memory_limit}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        if args.ingest:
            rng = np.random.default_rng(args.seed)
            suite = make_suite(rng, max(1, args.ingest_samples // args.samples), args.samples)
            tables = model_tables(rng, suite, "1n9e57a1n9e57a10", 1.0)
            counts = {name: t.num_rows for name, t in tables.items()}
            log(f"ingest: {suite.per_model:,} samples = {sum(counts.values()):,} rows ...")
            paths = ingest_report(ingest_paths(root, tables), counts, suite.per_model)
            result["ingest"] = {"samples": suite.per_model, "rows": counts, "paths": paths}
            del tables
            if args.ceiling_rows:
                log(f"DuckDB's own INSERT of {args.ceiling_rows:,} samples rows ...")
                result["ingest"]["ceiling"] = engine_ceiling(root, rng, suite, args.ceiling_rows)
        result["views"] = []
        if args.db:
            grown, run, upgrade_s = existing_database(args.db, args.memory_limit, log)
            log(f"timing the views on {args.db}: {grown.sample_rows:,} sample rows, {grown.file_gb:.2f} GB")
            timings: dict[str, Any] = {"error": f"upgrade {upgrade_s}"} if isinstance(upgrade_s, str) else {}
            if not timings:
                timings = time_views(args.db, run, args.repeats, args.memory_limit, grown.sample_rows)
            if args.writes and "error" not in timings:
                timings["writes"] = time_writes(args.db, run, args.memory_limit, args.refresh_all, args.seed)
            result["views"].append({"database": {**vars(grown), "upgrade_s": upgrade_s}, **timings})
        else:
            db = ViewDatabase(
                root / "views.duckdb", args.runs, args.prompts, args.samples, max(sizes), args.seed, args.memory_limit
            )
            for size in sizes:
                log(f"growing the view database to about {size:,} sample rows ...")
                grown = db.grow_to(size, args.batch, log)
                log(f"  {grown.sample_rows:,} sample rows, {grown.file_gb:.2f} GB; timing the views")
                timings = time_views(db.path, db.runs[0], args.repeats, args.memory_limit, grown.sample_rows)
                if args.writes:  # last: it adds a checkpoint
                    timings["writes"] = time_writes(db.path, db.runs[0], args.memory_limit, args.refresh_all, args.seed)
                result["views"].append({"database": vars(grown), **timings})
    result["targets"] = targets(result)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_report(result)


def targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "ingest" in result:
        evaluator = result["ingest"]["paths"]["evaluator"]
        out["ingest_sample_rows_per_s"] = {
            "target": TARGET_ROWS_PER_SECOND,
            "evaluator_samples_table": evaluator["rows_per_s"]["samples"],
            "evaluator_complete_samples": evaluator["complete_samples_per_s"],
            "met": evaluator["rows_per_s"]["samples"] >= TARGET_ROWS_PER_SECOND,
        }
        ceiling = result["ingest"].get("ceiling")
        if ceiling:
            whole = ceiling["whole row"]
            out["ingest_sample_rows_per_s"]["duckdb_insert_ceiling"] = whole["rows_per_s"]
            for label, key in (("whole row, 1 thread", "one_thread"), ("whole row, in memory", "in_memory")):
                if label in ceiling:
                    out["ingest_sample_rows_per_s"][f"duckdb_insert_ceiling_{key}"] = ceiling[label]["rows_per_s"]
            out["ingest_sample_rows_per_s"]["mb_per_s_needed"] = TARGET_ROWS_PER_SECOND * whole["bytes_per_row"] / 1e6
    largest = result["views"][-1]
    rows = largest["database"]["sample_rows"]
    seconds = largest.get("summary_warm_s")
    out["checkpoint_summary_10M_s"] = {
        "target": TARGET_VIEW_SECONDS,
        "value": seconds,
        "error": largest.get("error"),
        "sample_rows": rows,
        "applies": rows >= 0.95 * TARGET_VIEW_ROWS,
        "met": seconds is not None and seconds < TARGET_VIEW_SECONDS,
    }
    return out


def print_report(result: dict[str, Any]) -> None:
    if "ingest" in result:
        ingest = result["ingest"]
        paths = ingest["paths"]
        base = paths["evaluator"]["complete_samples_per_s"]
        print(
            f"ingest: {ingest['samples']:,} evaluated samples = "
            + ", ".join(f"{n:,} {t}" for t, n in ingest["rows"].items())
            + " rows; rows/s per table"
        )
        print(f"{'path':<28}" + "".join(f"{t:>11}" for t in SAMPLE_TABLES) + f"{'complete samples/s':>20}{'ratio':>7}")
        for label, row in paths.items():
            print(
                f"{label:<28}"
                + "".join(f"{row['rows_per_s'][t]:>11,.0f}" for t in SAMPLE_TABLES)
                + f"{row['complete_samples_per_s']:>20,.0f}{row['complete_samples_per_s'] / base:>7.1f}"
            )
        print(
            "(ratio: complete samples/s over the evaluator's; stage and flush are the evaluator's two halves; "
            "keyed: copies with the primary keys of the schema before migration 0004)"
        )
        ceiling = ingest.get("ceiling")
        if ceiling:
            print(f"DuckDB's own INSERT of {ceiling['rows']:,} samples rows from Arrow (no keys, no staging):")
            print(f"  (a database file unless said; DuckDB's threads: {ceiling.get('threads', '?')})")
            for label in ("whole row", "whole row, 1 thread", "whole row, in memory", "without text and token lists"):
                if label not in ceiling:
                    continue
                c = ceiling[label]
                print(
                    f"  {label:<30} {c['rows_per_s']:>11,.0f} rows/s  {c['mb_per_s']:>6,.0f} MB/s  "
                    f"{c['bytes_per_row']:>5,.0f} bytes/row"
                )
    for view in result["views"]:
        db = view["database"]
        inserts = (
            f"; inserts {db['first_batch_samples_per_s']:,.0f} -> {db['last_batch_samples_per_s']:,.0f} complete "
            "samples/s from the first to the last batch"
            if math.isfinite(db["first_batch_samples_per_s"])
            else ""
        )
        print(
            f"\ncheckpoint_summary over {db['sample_rows']:,} sample rows ({db['view_rows']:,} checkpoint_samples "
            f"rows, {db['checkpoints']} checkpoints, {db['file_gb']:.2f} GB){inserts}"
        )
        whole = view.get("summary_warm_s")
        lines = [
            ("SELECT * (cold, first query)", "summary_cold_s", ""),
            ("SELECT * (warm, median)", "summary_warm_s", f"   {view.get('summary_rows', 0)} rows"),
            ("one run, list_contains (as query.py)", "one_run_list_contains_s", "ratio"),
            ("one run, run = ?", "one_run_equals_s", "ratio"),
            ("query.checkpoint_summary(db)", "library_call_s", "   (open, query, dicts)"),
        ]
        for label, key, note in lines:
            if key in view:
                ratio = f"   {view[key] / whole:5.2f}x the whole view" if note == "ratio" and whole else note
                print(f"  {label:<38} {view[key]:8.3f} s{ratio}")
        writes = view.get("writes", {})
        for label, key in (
            ("refresh one checkpoint (rolled back)", "refresh_one_checkpoint_s"),
            ("refresh every checkpoint (rolled back)", "refresh_all_s"),
        ):
            if key in writes:
                print(f"  {label:<38} {writes[key]:8.3f} s")
            if key + "_error" in writes:
                print(f"  {label:<38} failed: {writes[key + '_error']}")
        if "one_checkpoint_flush_s" in writes:
            count, stage, flush, refresh = (
                writes["one_checkpoint_samples"],
                writes["one_checkpoint_stage_s"],
                writes["one_checkpoint_flush_s"],
                writes.get("one_checkpoint_refresh_s", 0.0),
            )
            print(
                f"  one more checkpoint ({count:,} samples)   stage {stage:.3f} s + flush of its rows {flush:.3f} s = "
                f"{count / (stage + flush):,.0f} complete samples/s at this size; then its aggregates "
                f"(refresh request flushed) {refresh:.3f} s"
            )
        if "checked_checkpoint_flush_s" in writes:
            checked = writes["checked_checkpoint_flush_s"]
            print(f"  another checkpoint's rows, not fresh: flush {checked:.3f} s (checked against the stored keys)")
        if isinstance(db.get("upgrade_s"), float):
            print(f"  upgrade to schema {SCHEMA_VERSION} (Store.writer)   {db['upgrade_s']:8.3f} s")
        if "error" in view:
            print(f"  stopped: {view['error']}")
        if "profile" in view:
            prof = view["profile"]
            print(
                f"  profile: {prof['seconds']:.3f} s, operators {prof['operator_seconds']:.2f} s summed over threads, "
                f"peak buffer {prof['peak_buffer_gb']:.2f} GB; scans per table "
                + ", ".join(f"{t.rsplit('.', 1)[-1]} {n}" for t, n in prof["table_scans"].items())
            )
            print("  by operator: " + ", ".join(f"{k} {v:.2f} s" for k, v in list(prof["by_kind"].items())[:6]))
            for op in prof["top"]:
                print(f"    {op['seconds']:7.3f} s {op['operator']:<15}{op['rows']:>12,} rows  {op['detail']}")
    found = result["targets"]
    if "ingest_sample_rows_per_s" in found:
        ingest_target = found["ingest_sample_rows_per_s"]
        print(
            f"\ntarget: ingest >= {TARGET_ROWS_PER_SECOND:,} sample rows/s through the evaluator's path: samples "
            f"table {ingest_target['evaluator_samples_table']:,.0f}/s, complete samples "
            f"{ingest_target['evaluator_complete_samples']:,.0f}/s: {verdict(ingest_target['met'])}"
        )
        if "duckdb_insert_ceiling" in ingest_target:
            print(
                f"        DuckDB's own INSERT of this row reaches {ingest_target['duckdb_insert_ceiling']:,.0f} "
                f"rows/s; {TARGET_ROWS_PER_SECOND:,} rows/s of it is {ingest_target['mb_per_s_needed']:,.0f} MB/s"
            )
        if "duckdb_insert_ceiling_one_thread" in ingest_target:
            print(
                f"        on one of DuckDB's threads {ingest_target['duckdb_insert_ceiling_one_thread']:,.0f} rows/s; "
                f"into memory (no file) {ingest_target['duckdb_insert_ceiling_in_memory']:,.0f} rows/s"
            )
    view_target = found["checkpoint_summary_10M_s"]
    note = "" if view_target["applies"] else " (below 10M rows: run with --large for the target's size)"
    value = f"{view_target['value']:.3f} s" if view_target["value"] is not None else view_target["error"]
    print(
        f"target: checkpoint_summary over {TARGET_VIEW_ROWS:,} sample rows under {TARGET_VIEW_SECONDS * 1000:.0f} "
        f"ms: {value} at {view_target['sample_rows']:,}: {verdict(view_target['met'])}{note}"
    )


if __name__ == "__main__":
    main()
