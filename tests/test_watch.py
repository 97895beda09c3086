"""``rlhf-eval watch``: the alert logic on verdict rows, option errors, and the watcher as a real
process on a run dir whose checkpoints land while it runs (one half-written first), whose gold
falls, and that is interrupted with SIGINT during an evaluation (then rerun: it resumes, alerts and
exits with the chosen code)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from rlhf_eval import tiny
from rlhf_eval.cli import app
from rlhf_eval.discover import discover
from rlhf_eval.errors import UserInputError
from rlhf_eval.pipeline import EvalConfig
from rlhf_eval.store import Store
from rlhf_eval.watch import WatchConfig, new_alerts, run_name

SCORING_FLAG = "RLHF_EVAL_TEST_SCORING_FLAG"
TRAINER_TEXTS = ["the bird sings today", "one two three", "the tree is green and the sun is red"]
PROMPTS = ["the cat sat", "sat on a mat dog", "a mat dog runs", "explain why sky is", "why sky is blue", "list three"]
GOLD = f'''
import os
import time
from pathlib import Path

TRAINED = set("{" ".join(TRAINER_TEXTS)}".split())


def score(prompts, responses):
    """Minus the share of words from the training texts: gold falls as training goes on."""
    flag = os.environ.get("{SCORING_FLAG}")
    if flag:  # the SIGINT test: say scoring started, then take long enough to be interrupted
        Path(flag).touch()
        time.sleep(30)
    return [-sum(w in TRAINED for w in r.split()) / max(1, len(r.split())) for r in responses]
'''
ROOT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
              "training_args.bin", "trainer_state.json", "README.md")  # fmt: skip


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("watch-work")
    (root / "prompts.jsonl").write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    (root / "gold.py").write_text(GOLD)
    return root


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    """A real Trainer run, checkpoint-2/4/6 and the final model at the root, with TRL's PPO card."""
    out = tmp_path_factory.mktemp("watch-source") / "ppo-run"
    return tiny.build_trainer_run(out, gpt2_ref, TRAINER_TEXTS, save_steps=2, max_steps=6, seed=7, card_method="ppo")


def eval_options(workload: Path, ref: Path, rm: Path, db: Path) -> list[str]:
    return [
        "--ref", str(ref), "--suite", str(workload / "prompts.jsonl"), "--proxy", str(rm),
        "--gold", f"{workload / 'gold.py'}:score", "--db", str(db), "--samples", "2", "--max-new-tokens", "8",
        "--no-progress",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def plain_db(
    tmp_path_factory: pytest.TempPathFactory, workload: Path, source_run: Path, gpt2_ref: Path, reward_model_dir: Path
) -> Path:
    """``rlhf-eval eval`` of the finished run (a copy named like the watched dirs), uninterrupted."""
    root = tmp_path_factory.mktemp("watch-plain")
    shutil.copytree(source_run, root / "ppo-run")
    db = root / "plain.duckdb"
    args = ["eval", str(root / "ppo-run"), *eval_options(workload, gpt2_ref, reward_model_dir, db)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return db


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every stored row by key and value, without per-invocation ids, times and the run dir's path."""
    queries = {
        "samples": "SELECT * EXCLUDE (eval_id) FROM samples ORDER BY sample_id",
        "kl": "SELECT * FROM kl ORDER BY sample_id, ref_fp",
        "scores": "SELECT * FROM scores ORDER BY sample_id, scorer_id",
        "features": "SELECT * FROM features ORDER BY sample_id, feature",
        "checkpoints": "SELECT * EXCLUDE (eval_id, evaluated_at, path) FROM checkpoints ORDER BY run, checkpoint",
        "training_logs": "SELECT * FROM training_logs ORDER BY run, step, metric",
        "prompts": "SELECT * FROM prompts ORDER BY suite_fp, idx",
        "analysis_runs": "SELECT * EXCLUDE (analysed_at) FROM analysis_runs ORDER BY run",
        "analysis_points": "SELECT * EXCLUDE (analysed_at) FROM analysis_points ORDER BY run, checkpoint",
    }
    with duckdb.connect(str(db), read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in queries.items()}


def rows(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


class Watcher:
    """``python -m rlhf_eval watch`` as a real process, its output lines collected as they come."""

    def __init__(self, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlhf_eval", "watch", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.readers = [
            threading.Thread(target=self.read, args=(stream, name), daemon=True)
            for stream, name in ((self.proc.stdout, "out"), (self.proc.stderr, "err"))
        ]
        for reader in self.readers:
            reader.start()

    def read(self, stream: Any, name: str) -> None:
        for line in stream:
            self.lines[name].append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines["err"][-40:])

    def wait_for(self, stream: str, needle: str, timeout: float = 120.0) -> int:
        """Index of the first line of ``stream`` containing ``needle``, waiting for it to come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, line in enumerate(list(self.lines[stream])):
                if needle in line:
                    return index
            if self.proc.poll() is not None and not any(r.is_alive() for r in self.readers):
                break
            time.sleep(0.05)
        raise AssertionError(f"no line with {needle!r} on std{stream}; stderr:\n{self.output()}")

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.lines["out"] if line.startswith("{")]
        return [e for e in found if kind is None or e["event"] == kind]

    def finish(self, timeout: float = 120.0) -> int:
        code = self.proc.wait(timeout=timeout)
        for reader in self.readers:
            reader.join(timeout=10)
        return code


def watch_args(run_dir: Path, workload: Path, ref: Path, rm: Path, db: Path, *extra: str) -> list[str]:
    fast = ["--interval", "0.2", "--settle", "0.3", "--json"]
    return [str(run_dir), *eval_options(workload, ref, rm, db), *fast, *extra]


# -- pure parts --------------------------------------------------------------------------------
def verdict(early: bool | None, over: bool | None) -> dict[str, Any]:
    return {
        "run": "r", "early_warning": early, "overoptimized": over, "last_checkpoint": "checkpoint-9",
        "best_checkpoint": "checkpoint-3", "best_probability": 0.81, "evidence": "gold peaks at checkpoint-3",
    }  # fmt: skip


def test_alerts_fire_once_per_change_of_state() -> None:
    sequence = [(False, False), (None, False), (True, False), (True, False), (True, True), (True, True),
                (False, False), (True, False)]  # fmt: skip
    flags: dict[str, bool] = {}
    fired = []
    for early, over in sequence:
        alerts, flags = new_alerts(flags, verdict(early, over))
        fired.append([a.signal for a in alerts])
    assert fired == [[], [], ["early_warning"], [], ["overoptimized"], [], [], ["early_warning"]]
    (both,) = new_alerts({}, verdict(False, True))[0]
    assert both.signal == "overoptimized"
    line = both.line()
    assert line.startswith("ALERT r: over-optimized") and "best checkpoint so far: checkpoint-3 (P(best) 0.81)" in line
    assert line.endswith("gold peaks at checkpoint-3") and both.as_event()["event"] == "alert"


def test_run_name_is_the_one_eval_gives(tmp_path: Path) -> None:
    assert run_name(tmp_path / "ppo-run", None) == "ppo-run"
    assert run_name(tmp_path / "ppo-run" / "step-300", None) == "ppo-run"
    assert run_name(tmp_path / "ppo-run", "mine") == "mine"


def test_discovery_reads_only_the_named_checkpoints(tmp_path: Path, source_run: Path) -> None:
    run = tmp_path / "ppo-run"
    shutil.copytree(source_run, run)
    (run / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6, "log_hist')  # being written
    with pytest.raises(UserInputError, match="trainer_state.json: invalid JSON"):
        discover([str(run)])  # unchanged: every checkpoint is read
    (only,) = discover([str(run)], checkpoints=("checkpoint-2", "checkpoint-4"))
    assert [c.checkpoint for c in only.checkpoints] == ["checkpoint-2", "checkpoint-4"] and only.method == "ppo"
    (with_final,) = discover([str(run)], checkpoints=("checkpoint-2", "final"))
    assert [(c.checkpoint, c.step) for c in with_final.checkpoints] == [("checkpoint-2", 2), ("final", 6)]


def test_bad_options_are_one_line_errors(tmp_path: Path, gpt2_ref: Path, workload: Path) -> None:
    config = EvalConfig(paths=(str(tmp_path),), ref=str(gpt2_ref), suite="s", proxy=("p",), gold=("g",))
    bad = [({"interval": 0}, "--interval"), ({"settle": -1}, "--settle"),
           ({"alert_exit_code": 2}, "--alert-exit-code 2"), ({"stop_after_idle": 0}, "--stop-after-idle")]  # fmt: skip
    for kwargs, flag in bad:
        with pytest.raises(UserInputError, match=flag):
            WatchConfig(eval=config, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="one training output dir"):
        WatchConfig(eval=EvalConfig(paths=("a", "b"), ref="r", suite="s", proxy=("p",), gold=("g",)))
    # a missing suite fails before any waiting, as exit code 2 with one line
    args = ["watch", str(tmp_path / "run"), "--ref", str(gpt2_ref), "--suite", str(tmp_path / "nope.yaml"),
            "--proxy", "p", "--gold", "g", "--db", str(tmp_path / "w.duckdb"), "--interval", "0.1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "nope.yaml" in result.stderr
    (tmp_path / "file").write_text("x")
    args[1] = str(tmp_path / "file")
    args[5] = str(workload / "prompts.jsonl")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "not a directory" in result.stderr


# -- real processes ----------------------------------------------------------------------------
def test_checkpoints_landing_while_watching_are_evaluated_once_complete(
    tmp_path: Path, workload: Path, source_run: Path, plain_db: Path, gpt2_ref: Path, reward_model_dir: Path
) -> None:
    run, db = tmp_path / "ppo-run", tmp_path / "watch.duckdb"
    watcher = Watcher(watch_args(run, workload, gpt2_ref, reward_model_dir, db, "--stop-after-idle", "2"))
    watcher.wait_for("err", f"waiting: {run} is not created yet")
    shutil.copytree(source_run / "checkpoint-2", run / "checkpoint-2")  # a complete checkpoint
    watcher.wait_for("out", '"checkpoint": "checkpoint-2"')

    # checkpoint-4 appears half-written: config and tokenizer, then part of the weights
    half = run / "checkpoint-4"
    half.mkdir()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source_run / "checkpoint-4" / name, half / name)
    weights = (source_run / "checkpoint-4" / "model.safetensors").read_bytes()
    (half / "model.safetensors").write_bytes(weights[: len(weights) * 3 // 5])
    seen_half = watcher.wait_for("err", "waiting: checkpoint-4: model.safetensors: ")
    time.sleep(0.6)  # three polls with the half-written checkpoint in place
    assert not [e for e in watcher.events("evaluated") if e["checkpoint"] == "checkpoint-4"]
    with (half / "model.safetensors").open("ab") as handle:
        handle.write(weights[len(weights) * 3 // 5 :])
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "trainer_state.json"):
        shutil.copy(source_run / "checkpoint-4" / name, half / name)  # Trainer writes its state last
    watcher.wait_for("out", '"checkpoint": "checkpoint-4"')

    # checkpoint-6 is written under a staging name and renamed when complete
    shutil.copytree(source_run / "checkpoint-6", run / "tmp-checkpoint-6")
    time.sleep(0.4)
    (run / "tmp-checkpoint-6").rename(run / "checkpoint-6")
    for name in ROOT_FILES:  # then the final save and TRL's model card at the root
        shutil.copy2(source_run / name, run / name)
    assert watcher.finish() == 0, watcher.output()

    evaluated = [e["checkpoint"] for e in watcher.events("evaluated")]
    assert evaluated == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]  # each once, in order
    assert seen_half < watcher.wait_for("err", "evaluated checkpoint-4")  # only after it was complete
    assert not any("tmp-checkpoint" in line for line in watcher.lines["err"])
    stopped = watcher.events("stopped")[-1]
    assert stopped["reason"] == "idle" and stopped["evaluated"] == evaluated
    signals = [a["signal"] for a in watcher.events("alert")]
    assert "early_warning" in signals and len(signals) == len(set(signals))  # once per change of state
    assert all(a["best_checkpoint"] == "reference" for a in watcher.events("alert"))

    # the database is exactly what a plain eval of the finished dir writes (method from the card too)
    assert dump(db) == dump(plain_db)
    assert {r[0] for r in rows(db, "SELECT DISTINCT method FROM checkpoints WHERE NOT is_reference")} == {"ppo"}
    paths = {r[0] for r in rows(db, "SELECT path FROM checkpoints WHERE NOT is_reference")}
    assert paths == {str(run / f"checkpoint-{step}") for step in (2, 4, 6)}
    stray = rows(db, "SELECT count(*) FROM samples WHERE model_fp NOT IN (SELECT model_fp FROM checkpoints)")
    assert stray == [(0,)]  # no sample of a half-written model


def test_sigint_during_an_evaluation_then_a_rerun_completes_and_alerts_with_the_chosen_code(
    tmp_path: Path, workload: Path, source_run: Path, plain_db: Path, gpt2_ref: Path, reward_model_dir: Path
) -> None:
    run, db, flag = tmp_path / "ppo-run", tmp_path / "interrupted.duckdb", tmp_path / "scoring-started"
    shutil.copytree(source_run, run)
    args = watch_args(run, workload, gpt2_ref, reward_model_dir, db, "--stop-after-idle", "2")
    watcher = Watcher(args, {SCORING_FLAG: str(flag)})
    deadline = time.monotonic() + 120
    while not flag.exists():  # the evaluation is under way: samples generated, gold scoring started
        assert watcher.proc.poll() is None and time.monotonic() < deadline, watcher.output()
        time.sleep(0.05)
    watcher.proc.send_signal(signal.SIGINT)
    assert watcher.finish(timeout=60) == 130, watcher.output()
    assert watcher.events("stopped")[-1]["reason"] == "SIGINT"
    assert "SIGINT: finished batches are stored" in watcher.output()

    # the database opens, holds the batches finished before the stop, once each, and nothing staged
    assert rows(db, "SELECT status FROM evaluations") == [("interrupted",)]
    (n_samples, distinct), *_ = rows(db, "SELECT count(*), count(DISTINCT sample_id) FROM samples")
    assert 0 < n_samples == distinct
    assert rows(db, "SELECT count(*) = count(DISTINCT (sample_id, scorer_id)) FROM scores") == [(True,)]
    assert not Store(db).pending_shards()

    # the rerun resumes; gold falls, so the alert fires and the watcher exits with the chosen code
    rerun = Watcher([*args, "--alert-exit-code", "3"])
    assert rerun.finish() == 3, rerun.output()
    assert dump(db) == dump(plain_db)  # exactly the rows of an uninterrupted run
    alerts = rerun.events("alert")
    assert [a["signal"] for a in alerts] == ["early_warning", "overoptimized"]
    assert all(a["run"] == "ppo-run" and a["last_checkpoint"] == "checkpoint-6" for a in alerts)
    assert alerts[0]["best_checkpoint"] == "reference" and 0 < alerts[0]["best_probability"] <= 1
    line = rerun.lines["err"][rerun.wait_for("err", "ALERT ppo-run: early warning")]
    assert "best checkpoint so far: reference (P(best)" in line and alerts[0]["evidence"] in line
    assert rerun.events("stopped")[-1] == {
        "event": "stopped", "reason": "alert", "exit_code": 3, "run": "ppo-run",
        "evaluated": ["checkpoint-2", "checkpoint-4", "checkpoint-6"], "alerts": ["early_warning", "overoptimized"],
    }  # fmt: skip


def test_sigterm_while_waiting_exits_143_and_writes_nothing(
    tmp_path: Path, workload: Path, gpt2_ref: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "never.duckdb"
    watcher = Watcher(watch_args(tmp_path / "not-yet", workload, gpt2_ref, reward_model_dir, db))
    watcher.wait_for("err", "is not created yet")
    watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.finish(timeout=60) == 143, watcher.output()
    assert "SIGTERM: nothing was stored" in watcher.output() and not db.exists()
    assert watcher.events("stopped") == [
        {"event": "stopped", "reason": "SIGTERM", "exit_code": 143, "run": "not-yet", "evaluated": [], "alerts": []}
    ]


def test_alert_on_chooses_the_signals() -> None:
    from rlhf_eval.errors import UserInputError
    from rlhf_eval.watch import new_alerts, parse_signals

    row = {"run": "r", "early_warning": True, "overoptimized": False, "gold_falling": True}
    alerts, flags = new_alerts({}, row, parse_signals("overoptimized,gold_falling"))
    assert [a.signal for a in alerts] == ["gold_falling"] and flags == {"overoptimized": False, "gold_falling": True}
    with pytest.raises(UserInputError, match="Did you mean 'gold_falling'"):
        parse_signals("gold_faling")
    with pytest.raises(UserInputError, match="name at least one"):
        parse_signals(" , ")
