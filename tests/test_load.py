"""The load test of issue 8: one evaluation over 200 tiny checkpoints is killed part-way, resumed,
and five browser sessions keep loading the dashboard while the resumed run writes.

1. A fixture writes one Trainer-style run dir, ``ppo-load/checkpoint-10`` .. ``checkpoint-2000``:
   ``gpt2_ref`` (about 12k parameters) with its weights moved by seeded noise that grows with the
   step (each checkpoint its own fingerprint), saved as safetensors with the tokenizer and a
   ``trainer_state.json`` whose PPO metric names make the run a ``ppo`` run (about 5 s).
2. ``rlhf-eval eval`` (4 prompts x 1 sample, 8 new tokens) is SIGKILLed by its PID once
   ``KILL_AFTER`` checkpoints have landed (polled read-only through ``query.checkpoint_summary``).
3. ``rlhf-eval dashboard`` is started on a free loopback port, five threads open one Chromium
   each (pinned to ``BROWSER_CPUS``) and load the Overview once, then the evaluation is rerun on
   the same database. Until it exits, and for one last round after, each session goes through the
   five pages (session k starts at page k, so every page is under load at once), each round
   starting with a full load of the page's URL and going on through the sidebar's links. Each page
   must render its title and content (charts, tables, responses) within ``TIMEOUT_MS``, with no
   exception, error alert or "cannot be read" warning, and no uncaught JavaScript error; the
   Symptoms page's points (one per checkpoint) must only grow, grow while the writer runs, and end
   at every checkpoint.
4. The resumed run must exit 0 and leave exactly one evaluation's rows: 200 checkpoints and the
   reference, ``N_PROMPTS`` samples each, one KL row per sample, one score per sample and scorer,
   the same feature rows for every sample, no key twice.

Every page's latency (from the ``goto`` or click until the script is idle and the content drawn) is
written to ``load-latencies.json`` with a median/p95/max summary per page in ``load-summary.txt``,
in ``$RLHF_EVAL_ARTIFACTS`` when set, else in ``tmp_path``, and printed (``pytest -s`` shows it).
No assertion is on time: speed is measured, not asserted, apart from the render timeout.

Run with ``make test-slow`` (11-15 minutes on 2 CPU cores shared with other test suites; figures in
docs/dashboard-testing.md); it needs ``/usr/bin/chromium`` (skipped without it unless
``RLHF_EVAL_REQUIRE_BROWSER`` is set). Every process is stopped by its PID.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).parent / "dashboards"))  # the browser helpers of the dashboard tests

from test_browser import (  # noqa: E402
    ERROR_SELECTOR,
    REQUIRE_ENV,
    VIEWPORT,
    artifacts_dir,
    browser_missing,
    chromium,
    cli_executable,
    dashboard_server,
    load,
    require_browser,
    stop,
    wait_for_charts,
    wait_for_count,
    wait_idle,
)

from rlhf_eval.errors import StoreError  # noqa: E402
from rlhf_eval.query import checkpoint_summary  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(browser_missing()) and not os.environ.get(REQUIRE_ENV), reason=browser_missing() or "the browser is there"
    ),
]

RUN = "ppo-load"
N_CHECKPOINTS = 200  # besides the reference
STEP_EVERY = 10  # checkpoint-10, checkpoint-20, ..., checkpoint-2000
KILL_AFTER = 60  # checkpoints landed before the first attempt is killed
N_PROMPTS = 4
SAMPLES = 1
SESSIONS = 5
TIMEOUT_MS = 90_000  # a page that does not render in this time is a failure (the slowest seen: 40 s)
THINK_S = 1.0  # a session's pause between two page loads
#: The CPUs the browsers run on: the upper half (one core of two). The five clients would run on
#: their users' own machines; here they share the cores with the evaluator and the server, and
#: unconfined their rendering takes most of them (Chromium sets its processes' nice values itself,
#: so only an affinity confines it).
BROWSER_CPUS = set(sorted(os.sched_getaffinity(0))[len(os.sched_getaffinity(0)) // 2 :])
WRITER_LIMIT_S = 900  # a guard, not a timing: each attempt must end within this
PROMPTS = ["explain why the sky is blue", "list three good ideas", "the cat sat on a mat", "a dog runs fast"]
#: The points of the first chart on the page: on Symptoms, one per evaluated checkpoint (reference included).
POINTS_JS = """() => {
    const chart = document.querySelector('[data-testid="stVegaLiteChart"]');
    return chart ? chart.querySelectorAll('g.mark-symbol.role-mark path').length : 0;
}"""
#: Warnings that mean the database could not be read (it holds checkpoints from before the resume on).
UNREADABLE = ("cannot be read", "no database", "holds no evaluated checkpoint", "not an rlhf-eval database")


@dataclass(frozen=True)
class PageCheck:
    path: str  # URL path ("" is the default page)
    title: str
    charts: int = 0  # at least this many drawn Vega-Lite charts
    tables: int = 0  # at least this many st.dataframe grids
    other: tuple[str, int] | None = None  # (selector, at least)
    points: bool = False  # record the first chart's points


PAGES = [
    PageCheck("", "Overview", tables=1),
    # gold of all runs, proxy and gold of the one run with its fit, the trainer's objective/kl
    PageCheck("overoptimization", "Over-optimization", charts=3, points=True),
    PageCheck("symptoms", "Symptoms", charts=4, points=True),  # the four default symptoms
    PageCheck("samples", "Samples", other=('[data-testid="stHtml"] .response', 2)),  # a response and its reference's
    PageCheck("compare", "Compare", charts=1, tables=1),
]


@dataclass(frozen=True)
class Visit:
    """One page load of one session."""

    session: int
    page: str
    how: str  # "load": the page's URL loaded in full; "link": its sidebar link clicked
    at_s: float  # when it started, seconds after the resumed evaluation started
    latency_s: float  # from the goto or click until the script is idle and the content drawn
    writer_running: bool  # the resumed evaluation was running when the load started
    points: int | None
    error: str | None


# -- the checkpoints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def load_run(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> Path:
    """``ppo-load/checkpoint-{10..2000}``: ``gpt2_ref`` plus seeded noise of sd 0.004 * sqrt(i) for
    the i-th checkpoint (the init's sd is 0.02), so KL from the reference grows along the run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_eval.tiny.training import quiet_transformers

    require_browser()
    run_dir = tmp_path_factory.mktemp("load") / RUN
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(gpt2_ref), dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(gpt2_ref))
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    history: list[dict[str, Any]] = []
    for i in range(1, N_CHECKPOINTS + 1):
        step = i * STEP_EVERY
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(start[name] + 0.004 * i**0.5 * torch.randn(param.shape, generator=generator))
        out = run_dir / f"checkpoint-{step}"
        with quiet_transformers():
            model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
        # as Trainer writes it: the whole log history so far; PPO's metric names make it a ppo run
        history.append({"step": step, "objective/kl": 0.01 * i, "objective/scores": 0.5 + 0.001 * i})
        state = {"global_step": step, "max_steps": N_CHECKPOINTS * STEP_EVERY, "log_history": history}
        (out / "trainer_state.json").write_text(json.dumps(state))
    return run_dir


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(suite of ``N_PROMPTS`` prompts, gold scorer file)."""
    root = tmp_path_factory.mktemp("load-workload")
    suite = root / "prompts.jsonl"
    suite.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:N_PROMPTS]))
    gold = root / "gold.py"
    gold.write_text(
        "def score(prompts, responses):\n    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n"
    )
    return suite, gold


# -- the evaluation --------------------------------------------------------------------------


def landed(db: Path) -> int:
    """Checkpoints stored so far, reference included; 0 before the database exists."""
    try:
        return len(checkpoint_summary(db))
    except (StoreError, duckdb.Error):  # no database yet, or created and not yet migrated
        return 0


def kill_part_way(command: list[str], db: Path, log: Path) -> tuple[int, float]:
    """Start the evaluation, SIGKILL it by PID once ``KILL_AFTER`` checkpoints have landed;
    returns (checkpoints stored when it was killed, seconds it ran)."""
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        while landed(db) < KILL_AFTER + 1:
            if proc.poll() is not None:
                pytest.fail(
                    f"the first attempt exited ({proc.returncode}) before it was killed:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() - started > WRITER_LIMIT_S:
                pytest.fail(f"{KILL_AFTER} checkpoints did not land in {WRITER_LIMIT_S} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        stop(proc)
    return landed(db), time.monotonic() - started


def count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def check_rows(db: Path) -> dict[str, int]:
    """Exactly the rows of one evaluation of the run: every checkpoint once with all its samples,
    every key once. Returns the row counts."""
    summary = checkpoint_summary(db)
    assert len(summary) == N_CHECKPOINTS + 1, [r["checkpoint"] for r in summary]
    assert [r["checkpoint"] for r in summary if r["step"]] == [
        f"checkpoint-{i * STEP_EVERY}" for i in range(1, N_CHECKPOINTS + 1)
    ]
    assert {(r["n_prompts"], r["n_samples"]) for r in summary} == {(N_PROMPTS, N_PROMPTS * SAMPLES)}
    n = (N_CHECKPOINTS + 1) * N_PROMPTS * SAMPLES
    con = duckdb.connect(str(db), read_only=True)
    try:
        counts = {
            table: count(con, f"SELECT count(*) FROM {table}")
            for table in ("checkpoints", "samples", "kl", "scores", "features", "evaluations")
        }
        assert counts["checkpoints"] == N_CHECKPOINTS + 1
        assert count(con, "SELECT count(DISTINCT (run, checkpoint)) FROM checkpoints") == N_CHECKPOINTS + 1
        assert count(con, "SELECT count(DISTINCT model_fp) FROM checkpoints") == N_CHECKPOINTS + 1  # all differ
        assert counts["samples"] == n
        assert count(con, "SELECT count(DISTINCT sample_id) FROM samples") == n
        assert count(con, "SELECT count(DISTINCT (model_fp, prompt_id, gen_key, sample_idx)) FROM samples") == n
        # every checkpoint's model has exactly its plan: each prompt x sample index
        complete = (
            "SELECT count(*) FROM (SELECT model_fp FROM samples GROUP BY model_fp "
            f"HAVING count(*) = {N_PROMPTS * SAMPLES} AND count(DISTINCT prompt_id) = {N_PROMPTS})"
        )
        assert count(con, complete) == N_CHECKPOINTS + 1
        assert count(con, "SELECT count(*) FROM samples WHERE model_fp NOT IN (SELECT model_fp FROM checkpoints)") == 0
        assert counts["kl"] == n == count(con, "SELECT count(DISTINCT (sample_id, ref_fp)) FROM kl")
        assert counts["scores"] == 2 * n == count(con, "SELECT count(DISTINCT (sample_id, scorer_id)) FROM scores")
        assert counts["features"] == count(con, "SELECT count(DISTINCT (sample_id, feature, version)) FROM features")
        per_sample = con.execute("SELECT DISTINCT count(*) FROM features GROUP BY sample_id").fetchall()
        assert len(per_sample) == 1 and counts["features"] == n * per_sample[0][0], per_sample
        statuses = con.execute("SELECT status FROM evaluations ORDER BY started_at").fetchall()
        assert statuses[-1] == ("completed",), statuses
    finally:
        con.close()
    return counts


# -- the browser sessions --------------------------------------------------------------------


def visit(page: Any, url: str, check: PageCheck, *, reload: bool) -> int | None:
    """Open one page, by a full load of its URL (``reload``, a new Streamlit session) or by its
    link in the sidebar (the same session reruns), and wait until its script is done and its
    content drawn; returns its first chart's points when asked. Raises on a timeout, an error
    element or a warning that the database cannot be read."""
    if reload:
        page.goto(f"{url}/{check.path}", wait_until="domcontentloaded", timeout=TIMEOUT_MS)
        page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=TIMEOUT_MS)
    else:
        nav = page.locator('[data-testid="stSidebarNav"]')
        nav.get_by_role("link", name=check.title, exact=True).click(timeout=TIMEOUT_MS)
    page.locator('[data-testid="stHeading"] h1', has_text=check.title).first.wait_for(timeout=TIMEOUT_MS)
    wait_idle(page, TIMEOUT_MS)  # the previous page's elements are gone once the run is over
    if check.charts:
        wait_for_charts(page, check.charts, TIMEOUT_MS)
    if check.tables:
        wait_for_count(page, '[data-testid="stDataFrame"]', check.tables, TIMEOUT_MS)
    if check.other:
        wait_for_count(page, *check.other, timeout_ms=TIMEOUT_MS)
    errors = [text.strip()[:300] for text in page.locator(ERROR_SELECTOR).all_inner_texts()]
    if errors:
        raise AssertionError(f"errors on the page: {errors}")
    warnings = page.locator('[data-testid="stAlertContentWarning"]').all_inner_texts()
    unreadable = [w for w in warnings if any(phrase in w for phrase in UNREADABLE)]
    if unreadable:
        raise AssertionError(f"the database could not be read: {unreadable}")
    return int(page.evaluate(POINTS_JS)) if check.points else None


class Sessions:
    """``SESSIONS`` threads, each with its own Chromium (Playwright's sync API wants one instance
    per thread), visiting the pages in turn until the writer is done, then once more each. Every
    round of the five pages starts with a full load (as a user's refresh does) and goes on through
    the sidebar's links."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ready = [threading.Event() for _ in range(SESSIONS)]
        self.writer_started = threading.Event()
        self.writer_done = threading.Event()
        self.started_at = 0.0
        self.visits: list[Visit] = []
        self.failures: list[str] = []
        self.js_errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.session, args=(k,), daemon=True) for k in range(SESSIONS)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for k, event in enumerate(self.ready):
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"session {k} did not open the dashboard: {self.failures}")
        if self.failures:  # a session that failed to start sets its event too
            raise AssertionError("\n".join(self.failures))

    def writer_running(self, started_at: float) -> None:
        self.started_at = started_at
        self.writer_started.set()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [k for k, thread in enumerate(self.threads) if thread.is_alive()]
        assert not alive, f"sessions {alive} did not finish"

    def session(self, k: int) -> None:
        try:
            # a CPU affinity is per thread on Linux and inherited by the processes a thread starts:
            # the Playwright driver and Chromium that this thread launches stay on BROWSER_CPUS
            os.sched_setaffinity(threading.get_native_id(), BROWSER_CPUS)
            with chromium() as browser:
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                page.on("pageerror", lambda exc: self.record_js_error(k, exc))
                load(page, self.url, "Overview", TIMEOUT_MS)  # warm (the first load may need a reload)
                self.ready[k].set()
                self.writer_started.wait()
                self.visit_pages(k, page)
                context.close()
        except Exception:
            with self.lock:
                self.failures.append(f"session {k}: {traceback.format_exc()}")
        finally:
            self.ready[k].set()

    def record_js_error(self, k: int, exc: Any) -> None:
        with self.lock:
            self.js_errors.append(f"session {k}: {exc}")

    def visit_pages(self, k: int, page: Any) -> None:
        last_round: int | None = None  # once the writer is done: every page once more
        failed, error = 0, None
        for n in itertools.count():
            running = not self.writer_done.is_set()
            if not running and last_round is None:
                last_round = len(PAGES)
            if last_round == 0 or failed >= 3:  # 3 failures: recorded; no use going on
                return
            check = PAGES[(k + n) % len(PAGES)]
            reload = n % len(PAGES) == 0 or error is not None  # a round starts with a full load, as after a failure
            at = time.monotonic()
            points, error = None, None
            try:
                points = visit(page, self.url, check, reload=reload)
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                failed += 1
            done = time.monotonic()
            with self.lock:
                self.visits.append(
                    Visit(
                        k,
                        check.title,
                        "load" if reload else "link",
                        round(at - self.started_at, 2),
                        round(done - at, 3),
                        running,
                        points,
                        error,
                    )  # fmt: skip
                )
            if last_round is not None:
                last_round -= 1
            time.sleep(THINK_S)


# -- the figures -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n q / 100)
    return ordered[int(rank) - 1]


def latency_row(label: str, visits: Sequence[Visit]) -> dict[str, Any]:
    """Loads, median, p95 and max latency in seconds of the visits that rendered, and the median
    of those made while the writer ran."""
    every = [v.latency_s for v in visits if v.error is None]
    during = [v.latency_s for v in visits if v.error is None and v.writer_running]
    return {
        "page": label,
        "loads": len(every),
        "loads_while_writing": len(during),
        "median_s": round(statistics.median(every), 2) if every else None,
        "p95_s": round(percentile(every, 95), 2) if every else None,
        "max_s": round(max(every), 2) if every else None,
        "median_while_writing_s": round(statistics.median(during), 2) if during else None,
    }


def summarize(visits: Sequence[Visit]) -> list[dict[str, Any]]:
    """One row per page, then all pages opened by a full load, by a sidebar link, and in all."""
    rows = [latency_row(check.title, [v for v in visits if v.page == check.title]) for check in PAGES]
    rows.append(latency_row("all, full loads", [v for v in visits if v.how == "load"]))
    rows.append(latency_row("all, sidebar links", [v for v in visits if v.how == "link"]))
    rows.append(latency_row("all", visits))
    return rows


def summary_text(table: Sequence[dict[str, Any]], facts: dict[str, Any]) -> str:
    lines = [f"{key}: {value}" for key, value in facts.items()]
    lines.append(f"{'page':<20} {'loads':>5} {'writing':>7} {'median s':>8} {'p95 s':>6} {'max s':>6}")
    for row in table:
        lines.append(
            f"{row['page']:<20} {row['loads']:>5} {row['loads_while_writing']:>7} {row['median_s']!s:>8} "
            f"{row['p95_s']!s:>6} {row['max_s']!s:>6}"
        )
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (``/proc/PID/stat``); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(url: str) -> int | None:
    """The PID of the dashboard server this process started for ``url`` (the ``rlhf-eval dashboard``
    process becomes the Streamlit server), found by its ``--server.port``."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"streamlit" in args and port.encode() in args:
            return int(entry.name)
    return None


# -- the test --------------------------------------------------------------------------------


def test_200_checkpoints_killed_resumed_while_five_sessions_load_the_dashboard(
    tmp_path: Path, load_run: Path, workload: tuple[Path, Path], gpt2_ref: Path, reward_model_dir: Path
) -> None:
    require_browser()
    suite, gold = workload
    db = tmp_path / "load.duckdb"
    command = [
        cli_executable(), "eval", str(load_run), "--ref", str(gpt2_ref), "--suite", str(suite),
        "--proxy", str(reward_model_dir), "--gold", f"{gold}:score", "--db", str(db),
        "--samples", str(SAMPLES), "--max-new-tokens", "8", "--no-progress",
    ]  # fmt: skip
    at_kill, first_s = kill_part_way(command, db, tmp_path / "eval-killed.log")
    assert KILL_AFTER + 1 <= at_kill < N_CHECKPOINTS + 1, at_kill

    writer_log = tmp_path / "eval-resumed.log"
    writer: subprocess.Popen[bytes] | None = None
    with dashboard_server(db, tmp_path / "server.log") as url:
        sessions = Sessions(url)
        sessions.start()
        try:
            sessions.wait_ready(timeout=180)
            with writer_log.open("wb") as log:
                writer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            started = time.monotonic()
            sessions.writer_running(started)
            server = server_pid(url)
            server_cpu = [cpu_seconds(server) if server else None]
            writer_cpu = None
            while writer.poll() is None:  # the writer's CPU time is read until it exits
                writer_cpu = cpu_seconds(writer.pid) or writer_cpu
                if time.monotonic() - started > WRITER_LIMIT_S:
                    pytest.fail(f"the resumed evaluation did not finish in {WRITER_LIMIT_S} s")
                time.sleep(0.5)
            resumed_s = time.monotonic() - started
            server_cpu.append(cpu_seconds(server) if server else None)
            sessions.writer_done.set()
            sessions.join(timeout=300)
        finally:
            sessions.writer_started.set()  # a session still waiting goes on, sees done and finishes
            sessions.writer_done.set()
            if writer is not None:
                stop(writer)
            for thread in sessions.threads:  # their browsers close before the server stops
                thread.join(timeout=120)
    assert writer is not None
    output = writer_log.read_text()
    assert writer.returncode == 0, output[-3000:]
    counts = check_rows(db)

    visits = sessions.visits
    out = artifacts_dir(tmp_path)
    table = summarize(visits)
    waited = [line for line in output.splitlines() if "waited" in line]
    during = sum(v.writer_running for v in visits)
    before, after = server_cpu
    server_s = round(after - before, 1) if before is not None and after is not None else None
    writer_s = round(writer_cpu, 1) if writer_cpu is not None else None
    facts = {
        "checkpoints": f"{N_CHECKPOINTS} + reference, {N_PROMPTS} prompts x {SAMPLES} sample, 8 new tokens",
        "first attempt": f"SIGKILLed after {first_s:.1f} s with {at_kill} checkpoints stored (1 kill)",
        "resumed attempt": f"{resumed_s:.1f} s, exit {writer.returncode}; {waited[-1] if waited else ''}".strip(),
        "rows": counts,
        "sessions": f"{SESSIONS} Chromium sessions on CPUs {sorted(BROWSER_CPUS)}, {len(visits)} page loads, "
        f"{during} while the evaluation wrote",
        "CPU seconds while the resumed run wrote": f"evaluator {writer_s}, dashboard server {server_s} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)",
    }
    (out / "load-latencies.json").write_text(
        json.dumps({"facts": facts, "summary": table, "visits": [asdict(v) for v in visits]}, indent=1)
    )
    text = summary_text(table, facts)
    (out / "load-summary.txt").write_text(text + "\n")
    print(f"\nload test ({out / 'load-latencies.json'}):\n{text}")

    assert not sessions.failures, "\n".join(sessions.failures)
    failed = [v for v in visits if v.error]
    assert not failed, f"{len(failed)} of {len(visits)} page loads failed: {failed[:10]}"
    assert not sessions.js_errors, f"uncaught errors in the pages' JavaScript: {sessions.js_errors[:10]}"
    for k in range(SESSIONS):
        mine = [v for v in visits if v.session == k]
        assert {v.page for v in mine if not v.writer_running} == {c.title for c in PAGES}, f"session {k}: {mine}"
        seen = [v.points for v in mine if v.page == "Symptoms" and v.points is not None]
        assert seen == sorted(seen), f"session {k}: the number of checkpoints on Symptoms went down: {seen}"
        assert seen[-1] == N_CHECKPOINTS + 1, f"session {k}: {seen}"
        assert seen[0] < seen[-1], f"session {k} saw no checkpoint land: {seen}"
    while_writing = [v.points for v in visits if v.page == "Symptoms" and v.writer_running and v.points is not None]
    assert len(set(while_writing)) >= 2, f"no checkpoint was seen landing while the evaluation wrote: {while_writing}"
