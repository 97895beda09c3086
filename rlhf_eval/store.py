"""The DuckDB store: schema migrations, staged writes, idempotent ingestion.

DuckDB lets no other process open a database file while one process holds a read-write
connection. So that the dashboard, gate and report keep working while an evaluation writes,
the evaluator never holds one for long:

1. each finished batch of rows is written as a shard, an Arrow IPC file, into ``<db>.staging/``
   (written to a temporary name, fsynced, then renamed: a shard is either whole or absent). IPC
   rather than Parquet: a shard lives for seconds, and Parquet's encoding and decoding of the
   token-id lists were most of the evaluator's ingest time (docs/performance.md, "Store").
   Shards a run killed under an earlier version left as Parquet are still ingested;
2. ``flush()`` opens the database read-write, ingests every pending shard in one transaction
   (one ``INSERT`` per table: that table's shards concatenated), closes it and only then
   deletes the shards. Readers open read-only between flushes (``query.py`` retries the brief
   moments a flush holds the lock).

A run killed at any point loses no finished batch: its shards are ingested on the next start.
One writer at a time is enforced with a lock file.

Keys. Every table has a key (``KEYS``): content-addressed tables (``IGNORE``) keep the first
row written for a key, descriptive ones (``REPLACE``) the latest. The small tables hold their
keys as primary keys (``INSERT OR IGNORE``/``OR REPLACE``). The per-sample tables and
``bon_values`` (``UNINDEXED``) have none since migration 0004: DuckDB holds a key's index (ART)
in memory whole while its table is written, so the writer's memory and each flush's time grew
with the database. Their keys stay unique by three rules, each exact:

- A shard lands at most once. Its name is written to ``ingested_shards`` in the transaction
  that commits its rows, and a flush deletes, without ingesting it, a pending shard already
  there: the one way to see a shard again is a writer killed after COMMIT and before deleting
  its shards. Only names of shards still on disk are kept: names (time, random) are never
  reused, so a name whose file is gone cannot come back.
- Within a flush a table's shards are concatenated in staging order and one row per key is
  kept: the first (``IGNORE``) or the last (``REPLACE``), as one ``INSERT`` per shard kept them
  (``stage`` already keeps one row per key within a shard; shards that are all fresh, below,
  hold distinct keys by their promise and skip this pass).
- Against the stored rows, rows staged with ``fresh=True`` are inserted as they are; any other
  rows are checked: ``IGNORE`` inserts only the keys not stored (an anti-join), ``REPLACE``
  deletes the stored rows of its keys first. A check reads the table's key columns whole:
  sample ids are content hashes, so no row group can be skipped by its min/max, and the cost
  and the memory of the read grow with the table (docs/performance.md measures it), which is
  why the evaluator's rows skip it.

``fresh=True`` is the single writer's promise that every key of the rows was absent from the
database when it looked (holding the writer lock) and that it stages each key at most once.
The promise still holds when the rows land: until then the only rows to reach the database are
that writer's own shards (the lock keeps other writers out, and each writer ingests the shards
a killed one left before it looks: ``writer()``), none of them holds the key (staged once), and
the ledger keeps the shard itself from landing twice. The evaluator keeps it
(``pipeline.py``): each part of a model's plan is read from the database (``stored_part``) once
per run, after the shards of earlier runs are ingested, and only the rows it lacks are computed
and staged, once each; the units of a run are distinct models and a sample id hashes its model,
prompt, generation key and index, so no two parts share a key; an ensemble that is both proxy
and gold is staged once. Features of a sample that has some stored (a detector added or its
version changed) replace those and are staged checked. Other writers (the analysis'
``bon_values``, ``stage`` by default) pay the check. Measured against the alternatives (a
check on every flush, the primary keys) in docs/performance.md ("Store").
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
from typing import TYPE_CHECKING, Any

import duckdb

from rlhf_eval import faults, stats
from rlhf_eval.errors import DatabaseLocked, StoreError

if TYPE_CHECKING:  # pyarrow is imported where rows are written: a read-only command never needs it
    import pyarrow as pa

MAX_DEFER = 3.0  # seconds rows may stay staged while readers keep the database busy
IGNORE = "IGNORE"  # content-addressed: the first write of a key is the only one
REPLACE = "REPLACE"  # descriptive: the latest write wins
#: Tables without a primary key (migration 0004): the flush keeps their keys unique (module docstring).
UNINDEXED = frozenset({"samples", "kl", "scores", "features", "bon_values"})
#: The names of the shards whose rows are committed (the ledger).
LEDGER = "ingested_shards"
#: Marks the shards of rows staged with ``fresh=True``: ``<time>-<random>-new-<table>.arrow``.
FRESH_MARK = "new"
#: A shard's file suffix: Arrow IPC; ``.parquet`` shards (written before IPC) are still read.
SHARD_SUFFIX = ".arrow"
SHARD_SUFFIXES = (SHARD_SUFFIX, ".parquet")


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
    def stage(self, table: str, rows: Sequence[dict[str, Any]], *, fresh: bool = False) -> None:
        """Write rows as one shard (atomically) for the next flush.

        ``fresh=True`` promises that no key of ``rows`` is stored and that this writer stages
        each of them once (module docstring): the flush then inserts them without reading the
        stored keys."""
        if not rows:
            return
        self._write_shard(table, encode_rows(table, rows), fresh=fresh)

    def stage_bytes(self, table: str, payload: bytes, *, fresh: bool = False) -> None:
        """Stage a shard encoded elsewhere (``shard_bytes``, e.g. by a Ray worker): written as
        ``stage`` writes its own, with the same promise for ``fresh``."""
        self._write_shard(table, payload, fresh=fresh)

    def stage_refresh(self, keys: Sequence[tuple[str, str]]) -> None:
        """Ask the next flush to recompute the aggregates of these (run, checkpoint) pairs
        (``checkpoint_stats``, see ``stats.py``): staged as a shard like rows, so the request
        survives a run killed before that flush."""
        if not keys:
            return
        import pyarrow as pa

        runs, checkpoints = zip(*sorted(set(keys)), strict=True)
        self._write_shard(REFRESH_SHARD, pa.table({"run": list(runs), "checkpoint": list(checkpoints)}))

    def _write_shard(self, table: str, data: pa.Table | bytes, *, fresh: bool = False) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        name = shard_name(table, fresh=fresh)
        tmp = self.staging / (name + ".tmp")
        try:
            with tmp.open("wb") as handle:
                handle.write(data if isinstance(data, bytes) else ipc_bytes(data))
                handle.flush()
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
        return any(self.shards())

    def pending_shards(self) -> list[Path]:
        if not self.staging.is_dir():
            return []
        for leftover in self.staging.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # a shard that was never completed: its batch reruns
        return sorted(self.shards())

    def shards(self) -> Iterator[Path]:
        """The finished shards in the staging folder, of either suffix (``Path.glob``: nothing
        for a missing or unreadable folder, as for a reader without the writer's rights)."""
        for suffix in SHARD_SUFFIXES:
            yield from self.staging.glob(f"*{suffix}")

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
            for table, group in by_table(record_shards(con, shards)).items():
                if table == REFRESH_SHARD:
                    for shard in group:
                        request = read_shard(shard)
                        touched.update(zip(request["run"].to_pylist(), request["checkpoint"].to_pylist(), strict=True))
                    continue
                ingest(con, table, group)
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


def encode_rows(table: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Rows as the Arrow table a shard of ``table`` holds: its schema, one row per key."""
    import pyarrow as pa

    from rlhf_eval.table_schemas import TABLES

    mode, schema = TABLES[table]
    return pa.Table.from_pylist(unique_rows(table, mode, rows), schema=schema)


def shard_bytes(table: str, rows: Sequence[dict[str, Any]]) -> bytes:
    """A shard of ``table`` encoded in memory, for ``Store.stage_bytes``."""
    return ipc_bytes(encode_rows(table, rows))


def ipc_bytes(data: pa.Table) -> bytes:
    """``data`` as an Arrow IPC file (uncompressed: written and read back within seconds)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, data.schema) as writer:
        writer.write_table(data)
    return bytes(sink.getvalue().to_pybytes())


def shard_name(table: str, *, fresh: bool = False) -> str:
    """A new shard's file name: staging order (the time), uniqueness, freshness, the table."""
    mark = f"{FRESH_MARK}-" if fresh else ""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-{mark}{table}{SHARD_SUFFIX}"


def shard_table(shard: Path) -> tuple[str, bool]:
    """The table of a shard and whether its rows were staged fresh, from its name.

    >>> shard_table(Path(shard_name("kl", fresh=True))), shard_table(Path(shard_name("kl")))
    (('kl', True), ('kl', False))
    """
    parts = shard.stem.split("-")
    return parts[-1], parts[-2] == FRESH_MARK


def by_table(shards: Sequence[Path]) -> dict[str, list[Path]]:
    """Shards grouped by table, each group in staging order."""
    groups: dict[str, list[Path]] = {}
    for shard in shards:
        groups.setdefault(shard_table(shard)[0], []).append(shard)
    return groups


def record_shards(con: duckdb.DuckDBPyConnection, shards: Sequence[Path]) -> list[Path]:
    """The shards not ingested yet, recorded in the ledger within the caller's transaction; the
    names of shards no longer on disk are dropped from it (they cannot come back)."""
    import pyarrow as pa

    con.register("pending_shards", pa.table({"name": pa.array([shard.name for shard in shards], pa.string())}))
    done = {
        row[0]
        for row in con.execute(f"SELECT name FROM {LEDGER} WHERE name IN (SELECT name FROM pending_shards)").fetchall()
    }
    con.execute(f"DELETE FROM {LEDGER} WHERE name NOT IN (SELECT name FROM pending_shards)")
    con.execute(
        f"INSERT INTO {LEDGER} SELECT name, now() FROM pending_shards WHERE name NOT IN (SELECT name FROM {LEDGER})"
    )
    con.unregister("pending_shards")  # not on failure: in an aborted transaction it would hide the error
    return [shard for shard in shards if shard.name not in done]


def ingest(con: duckdb.DuckDBPyConnection, table: str, shards: Sequence[Path]) -> None:
    """One ``INSERT`` of a table's shards (in staging order) within the caller's transaction,
    keeping one row per key as the table does (the rules in the module docstring)."""
    import pyarrow as pa

    from rlhf_eval.table_schemas import TABLES

    mode, schema = TABLES[table]
    data = pa.concat_tables([read_shard(shard, schema) for shard in shards])
    fresh = all(shard_table(shard)[1] for shard in shards)
    if len(shards) > 1 and not fresh:
        data = one_per_key(data, KEYS[table], mode)
    con.register("incoming", data)
    if table not in UNINDEXED:
        con.execute(f"INSERT OR {mode} INTO {table} BY NAME SELECT * FROM incoming")
    elif fresh:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
    else:
        same_key = " AND ".join(f"t.{key} = i.{key}" for key in KEYS[table])
        if mode == REPLACE:
            con.execute(f"DELETE FROM {table} AS t USING incoming AS i WHERE {same_key}")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        else:
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT * FROM incoming AS i "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {same_key})"
            )
    con.unregister("incoming")  # not on failure, as above


def read_shard(shard: Path, schema: pa.Schema | None = None) -> pa.Table:
    """A shard's rows, with the table's schema when given: an Arrow IPC file, or a Parquet one
    left by a run under an earlier version (``ParquetFile.read``: a third faster than
    ``pq.read_table`` on small files)."""
    import pyarrow as pa

    if shard.suffix == ".parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(shard) as handle:
            data = handle.read()
    else:
        with pa.OSFile(str(shard)) as source:
            data = pa.ipc.open_file(source).read_all()
    return data if schema is None or data.schema.equals(schema) else data.cast(schema)


def one_per_key(data: pa.Table, keys: Sequence[str], mode: str) -> pa.Table:
    """The rows of ``data`` with one row per key, in their order: the first (IGNORE) or the last
    (REPLACE) of each key.

    >>> import pyarrow as pa
    >>> data = pa.table({"sample_id": ["a", "b", "a"], "scorer_id": ["r", "r", "r"], "value": [1.0, 2.0, 3.0]})
    >>> one_per_key(data, ("sample_id", "scorer_id"), IGNORE)["value"].to_pylist()
    [1.0, 2.0]
    >>> one_per_key(data, ("sample_id", "scorer_id"), REPLACE)["value"].to_pylist()
    [2.0, 3.0]
    """
    import numpy as np
    import pyarrow as pa

    which = "min" if mode == IGNORE else "max"
    positions = data.select(list(keys)).append_column("position", pa.array(np.arange(data.num_rows)))
    picked = positions.group_by(list(keys)).aggregate([("position", which)])[f"position_{which}"]
    return data.take(np.sort(picked.to_numpy()))


#: Each table's key: unique in every table (primary keys, or kept by the flush: module docstring).
KEYS = {
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
    keys = KEYS[table]
    kept: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row.get(k) for k in keys)
        if mode == REPLACE or key not in kept:
            kept[key] = row
    return list(kept.values())
