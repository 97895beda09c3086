"""``rlhf-eval dashboard``: serve the Streamlit app in ``dashboards/`` on the loopback interface.

The app reads the database named by ``RLHF_EVAL_DB`` through ``rlhf_eval.query`` only (read-only
connections, one per query), so serving it never blocks an evaluation that writes. The server
binds to 127.0.0.1: the data may be private, and nothing outside this machine should reach it
(put an authenticating proxy in front to share it). Usage statistics are off.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rlhf_eval.errors import UserInputError

HOST = "127.0.0.1"
DEFAULT_PORT = 8501


def dashboard_app() -> Path:
    """The app's entry script, ``dashboards/app.py`` next to the package (a source checkout)."""
    app = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
    if not app.is_file():
        raise UserInputError(
            f"{app}: the dashboard app is not there; run from a source checkout installed with `pip install -e .`"
        )
    return app


def streamlit_command(port: int, app: Path | None = None) -> list[str]:
    """The command line that serves the app on ``HOST:port`` (headless, no usage statistics, no
    file watcher: a served dashboard does not reload when files change)."""
    if not 1 <= port <= 65535:
        raise UserInputError(f"--port {port}: use a TCP port in 1..65535 (e.g. {DEFAULT_PORT})")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app or dashboard_app()),
        "--server.address",
        HOST,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
    ]


def dashboard_env(db: str | Path) -> dict[str, str]:
    """The environment of the server: the database as an absolute path in ``RLHF_EVAL_DB``."""
    return {**os.environ, "RLHF_EVAL_DB": str(Path(db).expanduser().resolve())}


def serve_dashboard(db: str | Path, port: int = DEFAULT_PORT) -> None:
    """Serve until interrupted. The process becomes the Streamlit server (exec), so its PID is the
    server's and Ctrl-C or a signal stops it directly, leaving no orphan behind."""
    command = streamlit_command(port)
    print(f"dashboard: http://{HOST}:{port} (database {Path(db).resolve()}; Ctrl-C to stop)", file=sys.stderr)
    sys.stderr.flush()
    sys.stdout.flush()
    os.execve(command[0], command, dashboard_env(db))
