"""The DuckDB store: schema migrations, staged writes, idempotent ingestion.

DuckDB lets no other process open a database file while one process holds a read-write
connection. So that the dashboard, gate and report keep working while an evaluation writes,
the evaluator never holds one for long:

1. each finished batch of rows is written as a Parquet shard into ``<db>.staging/`` (written
   to a temporary name, fsynced, then renamed: a shard is either whole or absent);
2. ``flush()`` opens the database read-write, ingests every pending shard in one transaction,
   closes it and only then deletes the shards. Readers open read-only between flushes
   (``query.py`` retries the brief moments a flush holds the lock).

A run killed at any point loses no finished batch: its shards are ingested on the next start.
Rows are keyed by content hashes, so ingesting a shard twice (killed after COMMIT and before
the shards were deleted) changes nothing. One writer at a time is enforced with a lock file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from rlhf_eval import faults, stats
from rlhf_eval.errors import DatabaseLocked, StoreError

MAX_DEFER = 3.0  # seconds rows may stay staged while readers keep the database busy
IGNORE = "IGNORE"  # content-addressed: the first write of a key is the only one
REPLACE = "REPLACE"  # descriptive: the latest write wins

LIST_INT = pa.list_(pa.int32())


def interval_columns(*names: str) -> list[str]:
    """Each name followed by its ``_ci_low`` and ``_ci_high`` columns."""
    return [column for name in names for column in (name, f"{name}_ci_low", f"{name}_ci_high")]


#: analysis_points / analysis_runs columns (see migrations/0002_analysis.sql): name -> type.
ANALYSIS_POINT_COLUMNS: dict[str, pa.DataType] = {
    "run": pa.string(),
    "checkpoint": pa.string(),
    "step": pa.int64(),
    "kl_estimator": pa.string(),
    "kl": pa.float64(),
    "sqrt_kl": pa.float64(),
    **dict.fromkeys(interval_columns("proxy_norm", "gold_norm"), pa.float64()),
    "prob_best": pa.float64(),
    **dict.fromkeys(interval_columns("gold_drop_from_best"), pa.float64()),
    "past_peak": pa.bool_(),
    "gold_debiased": pa.float64(),
    "gold_length_explained": pa.float64(),
    "gold_length_share": pa.float64(),
    "proxy_gold_tau": pa.float64(),
    "proxy_disagreement": pa.float64(),
    "kl_bon_analytic": pa.float64(),
    "kl_bon_plugin": pa.float64(),
    "kl_bon_differ": pa.bool_(),
    "duplicate_fraction": pa.float64(),
    "analysed_at": pa.timestamp("us"),
}
ANALYSIS_RUN_COLUMNS: dict[str, pa.DataType] = {
    "run": pa.string(),
    "method": pa.string(),
    "kind": pa.string(),
    "kl_estimator": pa.string(),
    "n_points": pa.int32(),
    "n_prompts": pa.int32(),
    "replicates": pa.int32(),
    "seed": pa.int64(),
    "peak_checkpoint": pa.string(),
    "peak_step": pa.int64(),
    "peak_kl": pa.float64(),
    "peak_sqrt_kl": pa.float64(),
    "gold_at_peak": pa.float64(),
    "gold_at_last": pa.float64(),
    "gold_norm_at_peak": pa.float64(),
    "gold_norm_at_last": pa.float64(),
    "last_checkpoint": pa.string(),
    "last_step": pa.int64(),
    **dict.fromkeys(interval_columns("gold_drop", "proxy_gain_after_peak"), pa.float64()),
    "overoptimized": pa.bool_(),
    "best_checkpoint": pa.string(),
    "best_probability": pa.float64(),
    **dict.fromkeys(interval_columns("proxy_slope_after_peak", "gold_slope_after_peak"), pa.float64()),
    "diverging": pa.bool_(),
    "early_warning": pa.bool_(),
    "early_warning_points": pa.int32(),
    **dict.fromkeys(interval_columns("gold_slope_recent"), pa.float64()),
    "gold_falling": pa.bool_(),
    "fit_form": pa.string(),
    **dict.fromkeys(interval_columns("fit_alpha", "fit_beta", "fit_d_star", "fit_kl_star", "fit_r_star"), pa.float64()),
    "fit_peak_resolved": pa.bool_(),
    "fit_note": pa.string(),
    "evidence": pa.string(),
    "notes": pa.string(),
    "analysed_at": pa.timestamp("us"),
}


def analysis_schema(columns: dict[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(columns.items()))


TABLES: dict[str, tuple[str, pa.Schema]] = {
    "evaluations": (
        REPLACE,
        pa.schema(
            [
                ("eval_id", pa.string()),
                ("started_at", pa.timestamp("us")),
                ("finished_at", pa.timestamp("us")),
                ("status", pa.string()),
                ("command", pa.string()),
                ("config", pa.string()),
                ("provenance", pa.string()),
                ("seed", pa.int64()),
                ("schema_version", pa.int32()),
            ]
        ),
    ),
    "suites": (
        IGNORE,
        pa.schema(
            [
                ("suite_fp", pa.string()),
                ("name", pa.string()),
                ("version", pa.string()),
                ("source", pa.string()),
                ("n_prompts", pa.int32()),
            ]
        ),
    ),
    "prompts": (
        IGNORE,
        pa.schema(
            [
                ("suite_fp", pa.string()),
                ("idx", pa.int32()),
                ("prompt_id", pa.string()),
                ("text", pa.string()),
                ("messages", pa.string()),
                ("category", pa.string()),
            ]
        ),
    ),
    "generation_configs": (IGNORE, pa.schema([("gen_key", pa.string()), ("config", pa.string())])),
    "checkpoints": (
        REPLACE,
        pa.schema(
            [
                ("run", pa.string()),
                ("checkpoint", pa.string()),
                ("step", pa.int64()),
                ("method", pa.string()),
                ("is_reference", pa.bool_()),
                ("path", pa.string()),
                ("kind", pa.string()),
                ("base_model", pa.string()),
                ("model_fp", pa.string()),
                ("ref_fp", pa.string()),
                ("suite_fp", pa.string()),
                ("gen_key", pa.string()),
                ("samples_per_prompt", pa.int32()),
                ("proxy_scorer", pa.string()),
                ("gold_scorer", pa.string()),
                ("eval_id", pa.string()),
                ("evaluated_at", pa.timestamp("us")),
            ]
        ),
    ),
    "samples": (
        IGNORE,
        pa.schema(
            [
                ("sample_id", pa.string()),
                ("model_fp", pa.string()),
                ("prompt_id", pa.string()),
                ("gen_key", pa.string()),
                ("sample_idx", pa.int32()),
                ("prompt_token_ids", LIST_INT),
                ("token_ids", LIST_INT),
                ("response", pa.string()),
                ("n_tokens", pa.int32()),
                ("ended_eos", pa.bool_()),
                ("prompt_truncated", pa.bool_()),
                ("eval_id", pa.string()),
            ]
        ),
    ),
    "kl": (
        IGNORE,
        pa.schema(
            [
                ("sample_id", pa.string()),
                ("ref_fp", pa.string()),
                ("logp_policy", pa.float64()),
                ("logp_ref", pa.float64()),
                ("k1", pa.float64()),
                ("k2", pa.float64()),
                ("k3", pa.float64()),
                ("kl_full", pa.float64()),
                ("n_tokens", pa.int32()),
            ]
        ),
    ),
    "scorers": (
        IGNORE,
        pa.schema(
            [
                ("scorer_id", pa.string()),
                ("name", pa.string()),
                ("kind", pa.string()),
                ("spec", pa.string()),
                ("higher_is_better", pa.bool_()),
            ]
        ),
    ),
    "scores": (
        IGNORE,
        pa.schema([("sample_id", pa.string()), ("scorer_id", pa.string()), ("value", pa.float64())]),
    ),
    "features": (
        REPLACE,
        pa.schema(
            [("sample_id", pa.string()), ("feature", pa.string()), ("version", pa.int32()), ("value", pa.float64())]
        ),
    ),
    "training_logs": (
        REPLACE,
        pa.schema([("run", pa.string()), ("step", pa.int64()), ("metric", pa.string()), ("value", pa.float64())]),
    ),
    "file_hashes": (
        REPLACE,
        pa.schema([("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()), ("sha256", pa.string())]),
    ),
    "bon_runs": (
        REPLACE,
        pa.schema(
            [
                ("run", pa.string()),
                ("pool_run", pa.string()),
                ("pool_checkpoint", pa.string()),
                ("pool_size", pa.int32()),
                ("ns", LIST_INT),
                ("path", pa.string()),
                ("model_fp", pa.string()),
                ("suite_fp", pa.string()),
                ("gen_key", pa.string()),
                ("proxy_scorer", pa.string()),
                ("gold_scorer", pa.string()),
                ("eval_id", pa.string()),
                ("evaluated_at", pa.timestamp("us")),
            ]
        ),
    ),
    "bon_values": (
        REPLACE,
        pa.schema(
            [
                ("run", pa.string()),
                ("n", pa.int32()),
                ("prompt_id", pa.string()),
                ("metric", pa.string()),
                ("value", pa.float64()),
            ]
        ),
    ),
    "analysis_points": (REPLACE, analysis_schema(ANALYSIS_POINT_COLUMNS)),
    "analysis_runs": (REPLACE, analysis_schema(ANALYSIS_RUN_COLUMNS)),
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The recorded migrations shipped with the package, in order."""
    found = []
    for entry in resources.files("rlhf_eval.migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


SCHEMA_VERSION = max(m.version for m in migrations())
#: The migration that adds ``checkpoint_stats``; its aggregates are filled when it is applied.
STATS_MIGRATION = 3
#: Shards of this name hold (run, checkpoint) pairs whose aggregates the flush refreshes.
REFRESH_SHARD = "stats_refresh"


def is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def connect(
    path: Path, *, read_only: bool, timeout: float = 60.0, waited: list[float] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the database, retrying while another process holds a conflicting lock.

    Seconds spent waiting for the lock are appended to ``waited`` when given. A file that is not
    a DuckDB database is reported, never overwritten or recreated.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            if is_lock_error(exc) and time.monotonic() < deadline:
                if waited is not None:
                    waited.append(delay)
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            if is_lock_error(exc):
                raise DatabaseLocked(
                    f"{path}: the database stayed locked by another process for {timeout:.0f} s; "
                    "wait for it to finish and try again"
                ) from None
            first = str(exc).splitlines()[0][:200]
            raise StoreError(
                f"{path}: cannot open the database ({first}); if the file is damaged, move it aside "
                "and pass --db with a new path (nothing was changed)"
            ) from None


def is_damage(exc: BaseException) -> bool:
    """Whether DuckDB failed because the file itself is damaged or unreadable."""
    return isinstance(exc, duckdb.IOException) or "Corrupt database file" in str(exc)


@contextmanager
def damage_reported(path: Path) -> Iterator[None]:
    """Turn DuckDB's errors about a damaged file into a ``StoreError`` naming it and the next step."""
    try:
        yield
    except duckdb.Error as exc:
        if not is_damage(exc):
            raise
        first = str(exc).splitlines()[0][:200]
        raise StoreError(
            f"{path}: the database file is damaged ({first}); list what is affected with "
            f"`rlhf-eval verify --db {path}` and restore the file from a copy (nothing was changed)"
        ) from None


class Store:
    """The single writer of a database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".staging")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_handle: Any = None
        self._pending = 0
        self._last_flush = time.monotonic()
        self.lock_waits: list[float] = []  # seconds this writer waited for readers to close

    @property
    def lock_wait_seconds(self) -> float:
        return sum(self.lock_waits)

    # -- exclusive writer -------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[Store]:
        """Hold the writer lock for the duration of an evaluation; fail fast if taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.lock_path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"{self.path}: another evaluation (pid {holder}) is writing to this database; "
                "wait for it to finish, or pass --db with another file"
            ) from None
        try:  # unbuffered, so that a failed write leaves nothing for close() to retry
            os.ftruncate(handle.fileno(), 0)
            os.write(handle.fileno(), str(os.getpid()).encode())
        except OSError as exc:  # a full disk: the pid is only a hint for the message above
            if exc.errno != errno.ENOSPC:
                raise
        self._lock_handle = handle
        try:
            self.migrate()
            self.flush()
            self.mark_interrupted()
            yield self
            self.flush()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
            self._lock_handle = None

    def mark_interrupted(self) -> None:
        """Evaluations still 'running' while we hold the writer lock were killed: say so."""
        con = connect(self.path, read_only=False, waited=self.lock_waits)
        try:
            with damage_reported(self.path):
                con.execute("UPDATE evaluations SET status = 'interrupted' WHERE status = 'running'")
        finally:
            con.close()

    def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction; returns the schema version."""
        con = connect(self.path, read_only=False, waited=self.lock_waits)
        try:
            with damage_reported(self.path):
                con.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
                )
                done = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
                for migration in migrations():
                    if migration.version in done:
                        continue
                    con.execute("BEGIN TRANSACTION")
                    con.execute(migration.sql)
                    if migration.version == STATS_MIGRATION:
                        stats.refresh_all(con)  # aggregates of the checkpoints stored before it
                    con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, migration.name]
                    )
                    con.execute("COMMIT")
                return SCHEMA_VERSION
        finally:
            con.close()

    # -- staged writes ----------------------------------------------------------------------
    def stage(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Write rows as one Parquet shard (atomically) for the next flush."""
        if not rows:
            return
        mode, schema = TABLES[table]
        self._write_shard(table, pa.Table.from_pylist(unique_rows(table, mode, rows), schema=schema))

    def stage_refresh(self, keys: Sequence[tuple[str, str]]) -> None:
        """Ask the next flush to recompute the aggregates of these (run, checkpoint) pairs
        (``checkpoint_stats``, see ``stats.py``): staged as a shard like rows, so the request
        survives a run killed before that flush."""
        if not keys:
            return
        runs, checkpoints = zip(*sorted(set(keys)), strict=True)
        self._write_shard(REFRESH_SHARD, pa.table({"run": list(runs), "checkpoint": list(checkpoints)}))

    def _write_shard(self, table: str, data: pa.Table) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{table}.parquet"
        tmp = self.staging / (name + ".tmp")
        try:
            pq.write_table(data, tmp)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:  # a full disk, a read-only or vanished folder
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"{self.staging}: staging rows failed ({str(exc).splitlines()[0][:200]}); free space or fix the "
                "folder, then rerun the same command: every row written before is kept and the run resumes"
            ) from None
        faults.reach("stage.written")
        tmp.rename(self.staging / name)
        self._pending += 1

    def has_pending_shards(self) -> bool:
        """Whether finished shards wait for a flush; touches nothing, so it is safe without the
        writer lock (``pending_shards`` removes unfinished ones, which only the writer may)."""
        return self.staging.is_dir() and any(self.staging.glob("*.parquet"))

    def pending_shards(self) -> list[Path]:
        if not self.staging.is_dir():
            return []
        for leftover in self.staging.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # a shard that was never completed: its batch reruns
        return sorted(self.staging.glob("*.parquet"))

    def flush(self, *, wait: bool = True) -> int:
        """Ingest all pending shards in one transaction; returns the number of shards.

        With ``wait=False`` a flush that would have to wait for a reader is put off (the shards
        stay pending for the next one), so readers do not hold up the evaluation; once rows have
        been pending for ``MAX_DEFER`` seconds, or a checkpoint's rows are complete (a refresh
        request is pending), the flush waits (for one reader's query at most), so that readers
        see each checkpoint land when it is done while a busy dashboard polls.
        """
        shards = self.pending_shards()
        if not shards:
            return 0
        if time.monotonic() - self._last_flush >= MAX_DEFER:
            wait = True
        if any(shard.stem.endswith(f"-{REFRESH_SHARD}") for shard in shards):
            wait = True  # a completed checkpoint lands now, even while readers keep the database busy
        try:
            con = connect(self.path, read_only=False, timeout=60.0 if wait else 0.0, waited=self.lock_waits)
        except DatabaseLocked:
            if wait:
                raise
            return 0
        try:
            con.execute("BEGIN TRANSACTION")
            touched: set[tuple[str, str]] = set()
            for index, shard in enumerate(shards):
                table = shard.stem.rsplit("-", 1)[-1]
                if table == REFRESH_SHARD:
                    request = pq.read_table(shard)
                    touched.update(zip(request["run"].to_pylist(), request["checkpoint"].to_pylist(), strict=True))
                    continue
                mode, schema = TABLES[table]
                data = pq.read_table(shard, schema=schema)
                view = f"shard_{index}"
                con.register(view, data)
                con.execute(f"INSERT OR {mode} INTO {table} BY NAME SELECT * FROM {view}")
                con.unregister(view)
            stats.refresh_checkpoints(con, sorted(touched))  # requested aggregates land with the rows
            faults.reach("flush.inserted")
            con.execute("COMMIT")
            faults.reach("flush.committed")
        except duckdb.Error as exc:
            raise StoreError(
                f"{self.path}: writing rows failed ({str(exc).splitlines()[0][:200]}); nothing of this write was "
                f"stored and its rows stay staged in {self.staging.name}/: free space or fix the file system, "
                "then rerun the same command to resume"
            ) from None
        finally:
            con.close()
        for shard in shards:
            shard.unlink(missing_ok=True)
            faults.reach("flush.deleted")
        self._pending = 0
        self._last_flush = time.monotonic()
        return len(shards)

    def maybe_flush(self, every: float = 5.0) -> None:
        """Flush when shards are pending and ``every`` seconds passed since the last flush."""
        if self._pending and time.monotonic() - self._last_flush >= every:
            self.flush(wait=False)

    # -- reads by the writer ----------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A short read on the writer's side (the writer lock is held, so no other writer)."""
        return self.queries([(sql, params)])[0]

    def queries(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Several short reads on one connection (opening one costs tens of milliseconds)."""
        con = connect(self.path, read_only=False, waited=self.lock_waits)
        try:
            with damage_reported(self.path):
                return [con.execute(sql, list(params)).fetchall() for sql, params in statements]
        finally:
            con.close()


_KEYS = {
    "evaluations": ("eval_id",),
    "suites": ("suite_fp",),
    "prompts": ("suite_fp", "idx"),
    "generation_configs": ("gen_key",),
    "checkpoints": ("run", "checkpoint"),
    "samples": ("sample_id",),
    "kl": ("sample_id", "ref_fp"),
    "scorers": ("scorer_id",),
    "scores": ("sample_id", "scorer_id"),
    "features": ("sample_id", "feature"),
    "training_logs": ("run", "step", "metric"),
    "file_hashes": ("path",),
    "bon_runs": ("run",),
    "bon_values": ("run", "n", "prompt_id", "metric"),
    "analysis_points": ("run", "checkpoint"),
    "analysis_runs": ("run",),
}


def unique_rows(table: str, mode: str, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key, as the table keeps them: the first (IGNORE) or the last (REPLACE).

    >>> rows = [{"sample_id": "a", "scorer_id": "r", "value": 1.0}, {"sample_id": "a", "scorer_id": "r", "value": 2.0}]
    >>> unique_rows("scores", IGNORE, rows)[0]["value"], unique_rows("scores", REPLACE, rows)[0]["value"]
    (1.0, 2.0)
    """
    keys = _KEYS[table]
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in keys)
        if mode == REPLACE or key not in kept:
            kept[key] = row
    return list(kept.values())
