"""Is a database sound? Every stored block read back, every key unique, every row's parents there.

DuckDB checksums each block it writes and verifies the checksum when it reads the block, so
reading every column of every table (a hash of each value, folded with ``bit_xor``) surfaces a
damaged file as an error instead of leaving it to the first query that happens to touch the bad
block. On top of that the store's own invariants:

- one row per key in every table (``store.KEYS``: what the store keeps unique);
- no orphans: every ``kl``, ``scores`` and ``features`` row belongs to a stored sample, and every
  stored checkpoint has its samples and its ``checkpoint_stats`` aggregates (both land in the
  flush that completes the checkpoint);
- the schema version is one this package knows.

Read-only: it opens the file with ``read_only=True`` and never writes (``rlhf-eval verify``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from rlhf_eval.errors import UserInputError
from rlhf_eval.store import KEYS, SCHEMA_VERSION, connect

#: (child table, what must exist for each of its rows, the SQL that counts the rows without it).
ORPHAN_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("kl", "its sample", "SELECT count(*) FROM kl c ANTI JOIN samples s USING (sample_id)"),
    ("scores", "its sample", "SELECT count(*) FROM scores c ANTI JOIN samples s USING (sample_id)"),
    ("features", "its sample", "SELECT count(*) FROM features c ANTI JOIN samples s USING (sample_id)"),
    (
        "checkpoints",
        "its samples",
        "SELECT count(*) FROM checkpoints c WHERE NOT EXISTS "
        "(SELECT 1 FROM samples s WHERE s.model_fp = c.model_fp AND s.gen_key = c.gen_key)",
    ),
    (
        "checkpoints",
        "its checkpoint_stats row",
        "SELECT count(*) FROM checkpoints c ANTI JOIN checkpoint_stats s USING (run, checkpoint)",
    ),
)


@dataclass(frozen=True)
class IntegrityReport:
    """What ``check`` found: ``problems`` is empty when the database is sound."""

    path: str
    schema_version: int
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(path: str | Path) -> IntegrityReport:
    """Read the whole database at ``path`` and check the store's invariants.

    A file that is missing is a ``UserInputError``; one that DuckDB cannot open is the
    ``StoreError`` of ``store.connect`` (naming the file, changing nothing).
    """
    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"--db {file}: no such database file; pass the file an evaluation wrote")
    con = connect(file, read_only=True, timeout=10.0)
    try:
        return _check(con, str(file))
    finally:
        con.close()


def _check(con: duckdb.DuckDBPyConnection, path: str) -> IntegrityReport:
    problems: list[str] = []

    def first_row(sql: str, what: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The query's first row, or None with a problem recorded when DuckDB fails to read it."""
        try:
            return con.execute(sql, list(params)).fetchone()
        except duckdb.CatalogException:
            return None  # an older schema without the table
        except duckdb.Error as exc:
            problems.append(f"{what}: reading it failed ({str(exc).splitlines()[0][:200]})")
            return None

    try:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        ]
    except duckdb.Error as exc:
        return IntegrityReport(path, 0, {}, [f"the catalog: reading it failed ({str(exc).splitlines()[0][:200]})"])
    version = 0
    if "schema_migrations" not in tables:
        problems.append("schema_migrations is missing: this is not a database rlhf-eval wrote")
    else:
        found = first_row("SELECT list(version ORDER BY version) FROM schema_migrations", "schema_migrations")
        versions = list(found[0] or []) if found else []
        version = max(versions, default=0)
        if found and versions != list(range(1, version + 1)):
            problems.append(f"schema_migrations has versions {versions}; expected 1..{version} without gaps")
        if version > SCHEMA_VERSION:
            problems.append(f"schema version {version} is newer than this rlhf-eval's ({SCHEMA_VERSION}); upgrade it")
    rows: dict[str, int] = {}
    for table in tables:
        counted = first_row(every_value_query(con, table), table)
        if counted is not None:
            rows[table] = int(counted[0])
    for table, (keys, rows_of_them) in duplicated_keys(con, [t for t in KEYS if t in rows], problems).items():
        problems.append(
            f"{table}: {keys} keys ({', '.join(KEYS[table])}) are stored more than once ({rows_of_them} rows)"
        )
    for child, parent, sql in ORPHAN_CHECKS:
        if child in rows:
            orphans = first_row(sql, f"{child} -> {parent}")
            if orphans and orphans[0]:
                problems.append(f"{child}: {orphans[0]} rows without {parent}")
    return IntegrityReport(path=path, schema_version=version, rows=rows, problems=problems)


def every_value_query(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """A query that reads every value of ``table`` (so DuckDB verifies the checksum of each of its
    blocks) and returns its row count first."""
    columns = [name for (name,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ? "
        "ORDER BY ordinal_position",
        [table],
    ).fetchall()]  # fmt: skip
    folded = "".join(f', bit_xor(hash("{c}"))' for c in columns)
    return f'SELECT count(*){folded} FROM "{table}"'


def duplicated_keys(
    con: duckdb.DuckDBPyConnection, tables: Sequence[str], problems: list[str] | None = None
) -> dict[str, tuple[int, int]]:
    """The tables that hold a key (``store.KEYS``) more than once: the number of such keys and of
    their rows. A table that cannot be read is left out, with a line in ``problems`` when given."""
    found: dict[str, tuple[int, int]] = {}
    for table in tables:
        columns = ", ".join(f'"{k}"' for k in KEYS[table])
        try:
            keys, rows = con.execute(
                f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {table} GROUP BY {columns} "
                "HAVING count(*) > 1)"
            ).fetchone() or (0, 0)
        except duckdb.Error as exc:
            if problems is not None:
                problems.append(f"{table} keys: reading it failed ({str(exc).splitlines()[0][:200]})")
            continue
        if keys:
            found[table] = (int(keys), int(rows))
    return found
