"""The CLI surface: help for every command, documentation, validate, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from rlhf_eval.cli import app

ROOT = Path(__file__).resolve().parents[1]


def command_names() -> list[str]:
    return sorted(name for name, command in app.commands.items() if not isinstance(command, click.Group))


def test_every_command_has_help_and_is_documented() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text()
    for name in command_names():
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.stdout
        assert f"`rlhf-eval {name}" in docs, f"add a section '## `rlhf-eval {name} ...`' to docs/cli.md"


def test_help_starts_without_importing_torch() -> None:
    code = "import sys; from rlhf_eval.cli import app; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_validate_the_default_suite_as_json() -> None:
    result = CliRunner().invoke(app, ["validate", str(ROOT / "suites" / "default.yaml"), "--json"])
    assert result.exit_code == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert report["name"] == "default" and report["n_prompts"] >= 100


def test_validate_a_bad_suite_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "hello"}\n')
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: x\nversion: 1\nsource: {path: p.jsonl}\ngeneration: {max_new_token: 5}\n")
    result = CliRunner().invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Did you mean 'max_new_tokens'?" in result.stderr


def test_usage_errors_exit_2() -> None:
    result = CliRunner().invoke(app, ["eval", "somewhere"])
    assert result.exit_code == 2
    assert "Missing option" in result.stderr


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_exit_after_torch_keeps_the_code_the_output_and_the_atexit_handlers() -> None:
    code = (
        "import atexit, sys, torch\n"
        "from rlhf_eval.cli import exit_process\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "sys.stdout.write('buffered, no newline')\n"
        "exit_process(3)\n"
        "print('not reached')\n"
    )
    done = run_python(code)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered, no newlineatexit ran\n"


def test_exit_waits_for_running_threads_and_needs_torch_to_skip_teardown(tmp_path: Path) -> None:
    marker = tmp_path / "written_by_thread"
    code = (
        "import threading, time, torch\n"
        "from rlhf_eval.cli import exit_process\n"
        f"def late(): time.sleep(0.3); open({str(marker)!r}, 'w').write('done')\n"
        "threading.Thread(target=late).start()\n"
        "exit_process(0)\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"  # the ordinary exit joined the thread first
    # without torch: an ordinary SystemExit, whose message and code Python reports as usual
    done = run_python("from rlhf_eval.cli import exit_process; exit_process('bad input')")
    assert (done.returncode, done.stderr.strip()) == (1, "bad input")
