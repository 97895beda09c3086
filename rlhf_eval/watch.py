"""Watch a training run: evaluate each checkpoint as soon as it is completely written, update the
over-optimization analysis, and alert when gold reward turns.

Each poll lists the run dir's ``checkpoint-N/`` folders and keeps those that are completely
written (``checkpoint_ready.py``: whole files, ``trainer_state.json``, and no change within a
settle period at two polls in a row). When that set grows or changes, the run dir is evaluated
exactly as ``rlhf-eval eval RUN_DIR`` would, restricted to the complete checkpoints
(``EvalConfig.checkpoints``): the same run name, method, training logs and reference, and the
content-addressed cache makes the checkpoints already stored cost no model work. Then the run is
re-analysed and its ``overoptimization`` row read: when ``early_warning`` or ``overoptimized``
turns true, an alert names the best checkpoint so far.

Stopping: SIGINT (Ctrl-C) and SIGTERM stop the watcher between or during evaluations. The store
is crash-safe (finished batches are staged shards ingested idempotently, see ``store.py``), so
an interrupted evaluation loses no finished batch and writes no duplicate; the watcher ingests
what is staged before it exits (code 130 for SIGINT, 143 for SIGTERM), and a rerun resumes.

``RunMonitor`` (evaluate, analyse, track alerts) is shared with ``RlhfEvalCallback``
(``callback.py``), which runs the same step from a Trainer's ``on_save``.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from rlhf_eval.analysis.runner import AnalysisOptions
from rlhf_eval.checkpoint_ready import (
    DEFAULT_SETTLE,
    FileEntry,
    checkpoint_step,
    content_reason,
    is_trainer_run,
    json_reason,
    root_model_reason,
    root_snapshot,
    settle_reason,
    snapshot,
)
from rlhf_eval.discover import STEP_IN_NAME, is_model_dir
from rlhf_eval.errors import RlhfEvalError, UserInputError, did_you_mean
from rlhf_eval.pipeline import EvalConfig, EvalResult, log

DEFAULT_INTERVAL = 10.0
ALERT_SIGNALS = ("early_warning", "overoptimized")
#: Every ``overoptimization`` flag an alert can follow (``--alert-on``): the two above, and
#: ``gold_falling`` (the upper bound of the recent gold slope below 0: a stricter warning).
SIGNAL_CHOICES = ("early_warning", "overoptimized", "gold_falling")


def parse_signals(text: str) -> tuple[str, ...]:
    """``--alert-on`` as a tuple of signals: a comma list of ``SIGNAL_CHOICES``.

    >>> parse_signals("overoptimized, gold_falling")
    ('overoptimized', 'gold_falling')
    """
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name not in SIGNAL_CHOICES:
            raise UserInputError(
                f"--alert-on {name!r}: use a comma list of {', '.join(SIGNAL_CHOICES)}."
                f"{did_you_mean(name, list(SIGNAL_CHOICES))}"
            )
    if not names:
        raise UserInputError(f"--alert-on {text!r}: name at least one of {', '.join(SIGNAL_CHOICES)}")
    return names


FINAL = "final"  # the checkpoint name discovery gives the model saved at a run's root

Event = dict[str, Any]


# -- alerts (pure) -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """A signal of a run's ``overoptimization`` row that just turned true."""

    run: str
    signal: str  # "early_warning" or "overoptimized"
    last_checkpoint: str | None
    best_checkpoint: str | None
    best_probability: float | None
    evidence: str

    def line(self) -> str:
        what = {
            "early_warning": "early warning: gold reward may be falling over the latest checkpoints",
            "overoptimized": "over-optimized: the last checkpoint is significantly below the best earlier one",
        }[self.signal]
        best = self.best_checkpoint or "-"
        if self.best_probability is not None:
            best += f" (P(best) {self.best_probability:.2f})"
        return f"ALERT {self.run}: {what} (at {self.last_checkpoint}); best checkpoint so far: {best}. {self.evidence}"

    def as_event(self) -> Event:
        return {
            "event": "alert",
            "run": self.run,
            "signal": self.signal,
            "last_checkpoint": self.last_checkpoint,
            "best_checkpoint": self.best_checkpoint,
            "best_probability": self.best_probability,
            "evidence": self.evidence,
        }


def new_alerts(
    previous: Mapping[str, bool], row: Mapping[str, Any], signals: Sequence[str] = ALERT_SIGNALS
) -> tuple[list[Alert], dict[str, bool]]:
    """The alerts an ``overoptimization`` row raises given the flags seen before, and the flags now.

    A signal alerts when it turns true (false or unseen before); it alerts again only after it
    has been false in between, so a run that stays flagged is reported once.

    >>> row = {"run": "r", "early_warning": True, "overoptimized": False, "last_checkpoint": "checkpoint-3",
    ...        "best_checkpoint": "checkpoint-1", "best_probability": 0.7, "evidence": "..."}
    >>> alerts, flags = new_alerts({}, row)
    >>> [a.signal for a in alerts], flags
    (['early_warning'], {'early_warning': True, 'overoptimized': False})
    >>> new_alerts(flags, row)[0]
    []
    """
    flags = {name: bool(row.get(name)) for name in signals}
    alerts = [
        Alert(
            run=str(row.get("run")),
            signal=name,
            last_checkpoint=row.get("last_checkpoint"),
            best_checkpoint=row.get("best_checkpoint"),
            best_probability=row.get("best_probability"),
            evidence=str(row.get("evidence") or ""),
        )
        for name in signals
        if flags[name] and not previous.get(name, False)
    ]
    return alerts, flags


# -- one step: evaluate the complete checkpoints, analyse, alert ---------------------------------
@dataclass(frozen=True)
class Update:
    """What one ``RunMonitor.update`` did."""

    result: EvalResult
    run: str | None
    summary: list[dict[str, Any]]  # the run's checkpoint_summary rows after the analysis
    verdict: dict[str, Any] | None  # the run's overoptimization row, None when not analysed
    alerts: list[Alert]
    skipped: list[str]  # runs the analysis left out, with why


class RunMonitor:
    """Evaluates the complete checkpoints of one run dir, re-analyses the run and tracks which
    alert signals are on. The same step serves ``watch`` and ``RlhfEvalCallback``."""

    def __init__(
        self,
        eval_config: EvalConfig,
        analysis: AnalysisOptions | None = None,
        signals: Sequence[str] = ALERT_SIGNALS,
    ) -> None:
        if len(eval_config.paths) != 1:
            raise UserInputError(f"{' '.join(eval_config.paths) or 'RUN_DIR'}: watch one training output dir")
        self.eval_config = eval_config
        self.analysis = analysis
        self.signals = tuple(signals)
        self.flags: dict[str, bool] = {}

    def update(self, checkpoints: Sequence[str]) -> Update:
        from rlhf_eval.analysis.runner import analyze_database
        from rlhf_eval.pipeline import evaluate
        from rlhf_eval.query import checkpoint_summary, fetch_dicts

        result = evaluate(replace(self.eval_config, checkpoints=tuple(sorted(checkpoints))))
        run = result.runs[0] if result.runs else None
        summary = result.summary
        verdict = None
        skipped: list[str] = []
        alerts: list[Alert] = []
        if run is not None:
            db = self.eval_config.db
            _, skipped = analyze_database(db, [run], self.analysis, skip_unknown=True)
            summary = checkpoint_summary(db, [run])  # now with the normalized columns and prob_best
            found = fetch_dicts(db, "SELECT * FROM overoptimization WHERE run = ?", [run])
            if found:
                verdict = found[0]
                alerts, self.flags = new_alerts(self.flags, verdict, self.signals)
        return Update(result, run, summary, verdict, alerts, skipped)


def summary_events(update: Update, names: Sequence[str]) -> list[Event]:
    """One ``evaluated`` event per checkpoint of ``names`` that the evaluation stored."""
    wanted = set(names)
    events = []
    for row in update.summary:
        if row.get("checkpoint") in wanted and not row.get("is_reference"):
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            events.append({"event": "evaluated", **clean})
    return events


# -- the run dir, poll by poll ------------------------------------------------------------------
@dataclass(frozen=True)
class RunScan:
    """One look at the run dir: the complete checkpoints (name -> snapshot) and the others."""

    ready: dict[str, tuple[FileEntry, ...]]
    waiting: dict[str, str]  # name -> why not ready
    run_files: tuple[FileEntry, ...] = ()  # root files that discovery reads (trainer state, model card)
    blocker: str = ""  # why nothing can be evaluated now ('' when something can)
    changing: tuple[str, ...] = ()  # candidates whose files changed since the previous scan


class Scanner:
    """Finds the complete checkpoints of a run dir. With ``settle`` > 0, a checkpoint must also be
    unchanged (same files, sizes and times) since the previous scan: a copy that keeps the
    source's file times looks old but still changes between polls."""

    def __init__(self, run_dir: Path, settle: float = DEFAULT_SETTLE) -> None:
        self.run_dir = run_dir
        self.settle = settle
        self.previous: dict[str, tuple[FileEntry, ...]] = {}
        self.complete: dict[str, tuple[FileEntry, ...]] = {}  # snapshots whose content checks passed

    def look(self, name: str, entries: tuple[FileEntry, ...], content: str, now: float | None) -> tuple[str, bool]:
        """(why ``name`` is not ready or '', whether its files changed since the previous scan)."""
        changed = self.previous.get(name) != entries
        first = name not in self.previous
        self.previous[name] = entries
        reason = content or settle_reason(entries, self.settle, now)
        if not reason and changed and self.settle > 0:
            reason = "first seen, checking again at the next poll" if first else "changed since the last poll"
        return reason, changed

    def scan(self, now: float | None = None) -> RunScan:
        root = self.run_dir
        if not root.is_dir():
            return RunScan({}, {}, blocker=f"{root} is not created yet")
        trainer_run = is_trainer_run(root)
        ready: dict[str, tuple[FileEntry, ...]] = {}
        waiting: dict[str, str] = {}
        changing: list[str] = []
        for child in sorted(root.iterdir(), key=lambda p: (checkpoint_step(p.name) or 0, p.name)):
            if checkpoint_step(child.name) is None or not child.is_dir():
                continue
            entries = snapshot(child)
            content = "" if self.complete.get(child.name) == entries else content_reason(child, trainer_run=trainer_run)
            if not content:  # unchanged files need no second read (a long run has many checkpoints)
                self.complete[child.name] = entries
            reason, changed = self.look(child.name, entries, content, now)
            if changed:
                changing.append(child.name)
            if reason:
                waiting[child.name] = reason
            else:
                ready[child.name] = entries
        run_files = tuple(e for e in root_snapshot(root) if e.name in ("trainer_state.json", "README.md"))
        blocker = ""
        state = root / "trainer_state.json"
        if state.exists() and json_reason(state):
            blocker = f"run root: {json_reason(state)}"
        if is_model_dir(root):
            entries = root_snapshot(root)
            reason, changed = self.look(FINAL, entries, root_model_reason(root, settle=0), now)
            if changed:
                changing.append(FINAL)
            checkpoints_done = bool(ready) and not waiting  # the final save comes after the last checkpoint
            if checkpoints_done and reason:
                waiting[FINAL] = reason if reason.startswith("final") else f"final model at the run root: {reason}"
            elif checkpoints_done:
                ready[FINAL] = entries
        return RunScan(ready, waiting, run_files, blocker, tuple(changing))


def run_name(run_dir: Path, run: str | None) -> str:
    """The name ``rlhf-eval eval RUN_DIR`` gives the run (``--run``, else the dir's name, or its
    parent's for a dir named like a step)."""
    if run:
        return run
    resolved = run_dir.expanduser()
    return resolved.parent.name if STEP_IN_NAME.search(resolved.name) else resolved.name


# -- the loop -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WatchConfig:
    """One ``rlhf-eval watch``: ``eval`` holds the evaluation options, its single path the run dir."""

    eval: EvalConfig
    interval: float = DEFAULT_INTERVAL
    settle: float = DEFAULT_SETTLE
    alert_exit_code: int | None = None  # stop with this code when an alert fires; None: keep watching
    stop_after_idle: float | None = None  # stop (code 0) after this many seconds with nothing new
    max_polls: int | None = None  # stop (code 0) after this many polls
    analysis: AnalysisOptions | None = None
    alert_on: tuple[str, ...] = ALERT_SIGNALS  # the overoptimization flags that alert

    def __post_init__(self) -> None:
        if len(self.eval.paths) != 1:
            raise UserInputError(f"{' '.join(self.eval.paths) or 'RUN_DIR'}: watch takes one training output dir")
        if not self.interval > 0:
            raise UserInputError(f"--interval {self.interval}: use a number of seconds > 0, e.g. 10")
        if not self.settle >= 0:
            raise UserInputError(f"--settle {self.settle}: use a number of seconds >= 0 (0 turns the guard off)")
        code = self.alert_exit_code
        if code is not None and (not 0 <= code <= 125 or code == 2):
            raise UserInputError(
                f"--alert-exit-code {code}: use 0-125 other than 2 (2 means an error; 126 and up are the shell's)"
            )
        if self.stop_after_idle is not None and not self.stop_after_idle > 0:
            raise UserInputError(f"--stop-after-idle {self.stop_after_idle}: use a number of seconds > 0")
        if self.max_polls is not None and self.max_polls < 1:
            raise UserInputError(f"max_polls {self.max_polls}: use at least 1")

    @property
    def run_dir(self) -> Path:
        return Path(self.eval.paths[0]).expanduser()


@dataclass
class WatchResult:
    """What a watch did before it stopped, and the exit code it asks for."""

    run: str
    evaluated: list[str] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    polls: int = 0
    stopped: str = ""  # idle, max-polls, alert, SIGINT, SIGTERM
    exit_code: int = 0


class StopRequested(KeyboardInterrupt):
    """Raised by the SIGINT/SIGTERM handler, so the same cleanup runs for both signals."""


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Route SIGINT and SIGTERM to ``StopRequested``; the list receives each signal's number (a
    library below may turn the exception into its own error, the number says it was a stop)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise StopRequested(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def preflight(config: EvalConfig) -> None:
    """Check the options that need no checkpoint (suite, sampling, reference, scorers given)
    before waiting, so a typo fails now rather than when the first checkpoint lands."""
    from rlhf_eval.discover import CheckpointSpec
    from rlhf_eval.models import LoadOptions, resolve_model_dir
    from rlhf_eval.pipeline import sampling_params
    from rlhf_eval.rewards import parse_ensemble
    from rlhf_eval.suites import load_suite
    from rlhf_eval.units import validate_checkpoint

    if not config.proxy:
        raise UserInputError("--proxy: at least one proxy reward model or callable is required")
    if not config.gold:
        raise UserInputError("--gold: at least one gold reward model or callable is required")
    parse_ensemble(config.ensemble)
    sampling_params(config, load_suite(config.suite, limit=config.limit))
    ref_dir = resolve_model_dir(config.ref, "--ref reference model")
    options = LoadOptions(config.allow_pickle, config.trust_remote_code, "cpu")
    validate_checkpoint(CheckpointSpec("", "reference", 0, ref_dir, "base", is_reference=True), options)
    run_dir = Path(config.paths[0]).expanduser()
    if run_dir.exists() and not run_dir.is_dir():
        raise UserInputError(f"{config.paths[0]}: not a directory; pass the trainer's output_dir")


def recover_store(db: str) -> str:
    """After a stop: ingest the batches staged before it and mark the evaluation interrupted.
    Returns a line saying what happened."""
    from rlhf_eval.errors import StoreError
    from rlhf_eval.store import Store

    store = Store(db)
    if not store.path.exists() and not store.staging.is_dir():
        return "nothing was stored"
    try:
        with store.writer():
            pass
    except StoreError as exc:
        return f"staged rows stay for the next run to ingest ({exc})"
    return f"finished batches are stored in {db}"


def stored_counts(db: str, run: str) -> str:
    """The run's checkpoints (the reference included) and sample rows as stored, for the last line."""
    from rlhf_eval.query import fetch_dicts

    if not Path(db).is_file():
        return f"{db} not created"
    try:
        rows = fetch_dicts(
            db,
            "SELECT count(DISTINCT c.checkpoint) AS checkpoints, count(s.sample_id) AS samples "
            "FROM checkpoints c LEFT JOIN samples s ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key "
            "WHERE c.run = ?",
            [run],
            timeout=10.0,
        )
    except Exception:  # a report line only: never fail the stop because of it
        return "stored rows unknown"
    return f"run {run} has {rows[0]['checkpoints']} checkpoints registered and {rows[0]['samples']} sample rows stored"


def watch(config: WatchConfig, on_event: Callable[[Event], None] | None = None) -> WatchResult:
    """Poll ``config.run_dir`` until stopped; see the module docstring. ``on_event`` receives one
    dict per evaluated checkpoint, alert and stop (``rlhf-eval watch --json`` prints them)."""
    emit = on_event or (lambda event: None)
    run_dir = config.run_dir
    result = WatchResult(run=run_name(run_dir, config.eval.run))
    with stop_signals() as received:
        try:
            preflight(config.eval)
            poll_loop(config, result, emit)
        except BaseException as exc:
            if not received:
                raise
            stop_cleanly(config, result, received[0], exc, emit)
    return result


def poll_loop(config: WatchConfig, result: WatchResult, emit: Callable[[Event], None]) -> None:
    run_dir = config.run_dir
    scanner = Scanner(run_dir, config.settle)
    monitor = RunMonitor(config.eval, config.analysis, config.alert_on)
    evaluated: dict[str, tuple[FileEntry, ...]] = {}
    evaluated_run_files: tuple[FileEntry, ...] | None = None
    said: dict[str, str] = {}
    last_activity = time.monotonic()
    log(
        f"watching {run_dir} every {config.interval:g} s (settle {config.settle:g} s) -> {config.eval.db}; Ctrl-C stops"
    )
    while True:
        result.polls += 1
        scan = scanner.scan()
        if scan.changing:
            last_activity = time.monotonic()  # something is being written
        said = log_waiting(scan, said)
        todo = [name for name, entries in scan.ready.items() if evaluated.get(name) != entries]
        # a new trainer state or model card alone (method, logs) waits until nothing is being written
        refresh = scan.run_files != evaluated_run_files and not scan.waiting
        if scan.ready and not scan.blocker and (todo or refresh):
            log(f"evaluating {', '.join(todo) or 'the run again (its trainer state or card changed)'} of {result.run}")
            started = time.monotonic()
            try:
                update = monitor.update(list(scan.ready))
            except (RlhfEvalError, OSError) as exc:
                if all((run_dir / name).is_dir() for name in scan.ready if name != FINAL):
                    raise
                log(f"a checkpoint was removed while being evaluated ({exc}); trying again at the next poll")
                scanner.previous.clear()
                time.sleep(config.interval)
                continue
            evaluated.update(scan.ready)
            evaluated_run_files = scan.run_files
            last_activity = time.monotonic()
            result.run = update.run or result.run
            events = summary_events(update, todo)
            for event in events:
                result.evaluated.append(str(event["checkpoint"]))
                log(
                    f"evaluated {event['checkpoint']} (step {event['step']}): KL {fmt(event.get('kl'))}, "
                    f"proxy {fmt(event.get('proxy_reward'))}, gold {fmt(event.get('gold_reward'))} "
                    f"[{time.monotonic() - started:.1f} s]"
                )
                emit(event)
            if FINAL in todo and not any(e["checkpoint"] == FINAL for e in events):
                log("final model at the run root: the same weights and step as the last checkpoint, not a new point")
            report_verdict(update)
            for alert in update.alerts:
                result.alerts.append(alert)
                log(alert.line())
                emit(alert.as_event())
            if update.alerts and config.alert_exit_code is not None:
                finish(result, "alert", config.alert_exit_code, emit, config.eval.db)
                return
        if config.max_polls is not None and result.polls >= config.max_polls:
            finish(result, "max-polls", 0, emit, config.eval.db)
            return
        idle = time.monotonic() - last_activity
        if config.stop_after_idle is not None and idle >= config.stop_after_idle:
            finish(result, "idle", 0, emit, config.eval.db)
            return
        time.sleep(config.interval)


def log_waiting(scan: RunScan, said: dict[str, str]) -> dict[str, str]:
    """Log why each checkpoint is not ready, once per kind of reason (numbers aside, so a file
    growing or settling is one line, not one per poll); returns the reasons logged."""
    now: dict[str, str] = {}
    for name, reason in {**scan.waiting, "": scan.blocker}.items():
        if not reason or reason.startswith("first seen"):
            continue
        kind = re.sub(r"\d+(\.\d+)?", "#", reason)
        if said.get(name) != kind:
            log(f"waiting: {reason}" if not name or reason.startswith("final model") else f"waiting: {name}: {reason}")
        now[name] = kind
    return now


def fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def report_verdict(update: Update) -> None:
    for line in update.skipped:
        log(f"not analysed: {line}")
    if update.verdict is not None:
        log(f"{update.run}: {update.verdict.get('evidence')}")


def finish(result: WatchResult, why: str, code: int, emit: Callable[[Event], None], db: str) -> None:
    result.stopped, result.exit_code = why, code
    done = ", ".join(result.evaluated) or "no new checkpoint"
    log(f"stopped ({why}) after {result.polls} polls; evaluated {done}; {stored_counts(db, result.run)}")
    emit(
        {
            "event": "stopped",
            "reason": why,
            "exit_code": code,
            "run": result.run,
            "evaluated": result.evaluated,
            "alerts": [a.signal for a in result.alerts],
        }
    )


def stop_cleanly(
    config: WatchConfig, result: WatchResult, signum: int, exc: BaseException, emit: Callable[[Event], None]
) -> None:
    """After SIGINT/SIGTERM: store what is staged, say what was done, and set the exit code."""
    name = signal.Signals(signum).name
    if not isinstance(exc, KeyboardInterrupt):
        log(f"{name} interrupted {type(exc).__name__}: {str(exc)[:200]}")
    try:
        stored = recover_store(config.eval.db)
        log(f"{name}: {stored}; rerun the same command to resume")
        finish(result, name, 128 + signum, emit, config.eval.db)
    except KeyboardInterrupt:  # stopped again while cleaning up: the store stays crash-safe
        result.stopped, result.exit_code = name, 128 + signum
        log(f"{name} again: staged rows stay for the next run to ingest; rerun the same command to resume")
