"""Shared pieces of the dashboard's pages: the database path, cached reads, the sidebar, downloads.

Reads go through ``rlhf_eval.dashboard_data`` only and are cached per database version (the file's
mtime and size), so a flush by the writer shows new data on the next rerun; Refresh clears the cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from rlhf_eval import dashboard_data as data

AUTO_REFRESH = {"off": 0, "10 s": 10, "30 s": 30, "1 min": 60, "5 min": 300}
HIGHLIGHT_CSS = (
    "<style>mark.rep{background:#ffe08a;} mark.phrase{background:#ffb3b3;} "
    "mark.rep.phrase{background:#f5a3ff;} .response{white-space:pre-wrap;font-family:monospace;"
    "font-size:0.85rem;border:1px solid #ddd;border-radius:4px;padding:6px;}</style>"
)


def db_path() -> Path:
    return data.database_path()


@st.cache_data(show_spinner=False, max_entries=256)
def _cached(name: str, db: str, version: tuple[int, int], args: tuple[Any, ...], kwargs: tuple[Any, ...]) -> Any:
    return getattr(data, name)(db, *args, **dict(kwargs))


def read(name: str, *args: Any, **kwargs: Any) -> Any:
    """``dashboard_data.<name>(db, *args, **kwargs)``, cached until the database file changes."""
    db = str(db_path())
    return _cached(name, db, data.database_version(db), tuple(args), tuple(sorted(kwargs.items())))


def sidebar() -> None:
    """The database path, a Refresh button and the auto-refresh interval."""
    with st.sidebar:
        st.caption(f"Database: `{db_path()}` (set with `RLHF_EVAL_DB`)")
        if st.button("Refresh", key="refresh", help="Clear the cached queries and read the database again"):
            st.cache_data.clear()
        choice = st.selectbox("Auto-refresh", list(AUTO_REFRESH), key="auto_refresh")
    seconds = AUTO_REFRESH[choice]
    if seconds:
        _ticker(seconds)


def _ticker(seconds: int) -> None:
    @st.fragment(run_every=seconds)
    def tick() -> None:
        now = time.monotonic()
        last = st.session_state.setdefault("last_refresh", now)
        if now - last >= seconds:
            st.session_state["last_refresh"] = now
            st.rerun(scope="app")

    tick()


def require_database() -> str:
    """The sidebar, then the database path; or show why it cannot be read and how to fill it, and
    stop the page. Every page calls it first (the sidebar lives in the pages, not in app.py, so that
    it is part of every page's run)."""
    sidebar()
    db = db_path()
    problem = data.database_problem(db)
    if problem:
        st.warning(problem)
        st.markdown("Fill it with an evaluation, or build the offline demo:")
        st.code(data.fill_command(db), language="bash")
        st.stop()
    return str(db)


def download(df: pd.DataFrame, name: str, label: str = "Download CSV") -> None:
    """A CSV download of the data behind a plot or table."""
    st.download_button(
        label, df.to_csv(index=False).encode(), file_name=f"{name}.csv", mime="text/csv", key=f"csv-{name}"
    )


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows)
