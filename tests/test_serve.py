"""``rlhf-eval dashboard``: a real server on a free loopback port, stopped by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlhf_eval.cli import app
from rlhf_eval.serve import HOST, dashboard_env, streamlit_command


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a listening TCP socket on ``port`` (Linux ``/proc/net/tcp*``)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) != port or fields[3] != "0A":  # 0A: LISTEN
                continue
            if len(address) == 8:
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
            else:
                found.add("::" if int(address, 16) == 0 else address)
    return found


def test_the_command_binds_to_loopback_headless_without_statistics() -> None:
    command = streamlit_command(8600)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8600"
    assert command[command.index("--server.headless") + 1] == "true"
    assert command[command.index("--browser.gatherUsageStats") + 1] == "false"
    assert command[4].endswith(os.path.join("dashboards", "app.py"))
    assert dashboard_env("x.duckdb")["RLHF_EVAL_DB"] == str(Path("x.duckdb").resolve())


def test_a_bad_port_is_one_line_exit_2() -> None:
    result = CliRunner().invoke(app, ["dashboard", "--port", "70000"])
    assert result.exit_code == 2
    assert "--port 70000: use a TCP port in 1..65535" in result.output


def test_the_server_answers_on_loopback_and_stops_by_pid(tmp_path: Path) -> None:
    db = tmp_path / "missing.duckdb"  # the app shows how to fill it; the server must still serve
    port = free_port()
    executable = shutil.which("rlhf-eval") or str(Path(os.sys.executable).with_name("rlhf-eval"))
    proc = subprocess.Popen(
        [executable, "dashboard", "--db", str(db), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        health = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/_stcore/health", timeout=2) as response:
                    health = response.read().decode()
                    break
            except OSError:
                time.sleep(0.3)
        assert health == "ok", proc.stderr.read().decode() if proc.poll() is not None else "no answer in 60 s"
        with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as response:
            assert response.status == 200
        assert listening_addresses(port) == {"127.0.0.1"}  # nothing beyond loopback
        assert not db.exists()  # serving never creates the database
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{HOST}:{port}/_stcore/health", timeout=2)
