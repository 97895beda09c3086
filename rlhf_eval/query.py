"""The read path: what the dashboard, the gate and the report use.

Every read opens the database read-only, runs its parameterized queries and closes it at
once, so a reader never holds the file while the evaluator flushes (see ``store.py``). The
brief moments a flush holds the lock are retried.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from rlhf_eval.errors import StoreError
from rlhf_eval.store import connect, damage_reported


@contextmanager
def read_connection(path: str | Path, timeout: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection, closed on exit. A missing or damaged database is a clear error."""
    db = Path(path)
    if not db.is_file():
        raise StoreError(
            f"{db}: no database yet; fill it with `rlhf-eval eval PATH --ref REF --suite SUITE "
            f"--proxy RM --gold RM --db {db}` or `rlhf-eval demo`"
        )
    con = connect(db, read_only=True, timeout=timeout)
    try:
        with damage_reported(db):
            yield con
    finally:
        con.close()


def fetch_dicts(
    path: str | Path, sql: str, params: Sequence[Any] = (), *, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Rows of a parameterized query as dicts."""
    with read_connection(path, timeout=timeout) as con:
        cursor = con.execute(sql, list(params))
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def checkpoint_summary(path: str | Path, runs: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``checkpoint_summary`` rows, optionally only of some runs, ordered by run and step."""
    if runs:
        return fetch_dicts(
            path,
            "SELECT * FROM checkpoint_summary WHERE list_contains(?, run) ORDER BY run, step, checkpoint",
            [list(runs)],
        )
    return fetch_dicts(path, "SELECT * FROM checkpoint_summary ORDER BY run, step, checkpoint")


def training_logs(path: str | Path, run: str) -> list[dict[str, Any]]:
    return fetch_dicts(path, "SELECT * FROM training_logs WHERE run = ? ORDER BY step, metric", [run])


def analysis_is_current(path: str | Path, runs: Sequence[str]) -> bool:
    """Whether every run in ``runs`` has an analysis made after its checkpoints were last
    written, over the points now stored: rerunning it would reproduce it (it is seeded)."""
    with read_connection(path, timeout=5.0) as con:
        found = con.execute(
            """
            SELECT count(*) FROM analysis_runs r
            WHERE list_contains(?, r.run)
              AND r.analysed_at >= (SELECT max(c.evaluated_at) FROM checkpoints c WHERE c.run = r.run)
              AND r.n_points = (SELECT count(*) FROM checkpoints c WHERE c.run = r.run)
            """,
            [list(runs)],
        ).fetchone()
    return found is not None and found[0] == len(set(runs))
