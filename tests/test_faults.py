"""Faults on real processes and real files: SIGKILL at 20 points, a full disk, a damaged file, a
second writer; a reader process reads every database the whole time.

The evaluator reports the fault sites it reaches (``rlhf_eval.faults``): generation steps and
batches, KL batches, score and feature chunks, shards written but not renamed, a flush before and
after its COMMIT and while it deletes its shards. An uninterrupted run's trace says where the work
goes; each trial kills a fresh run with SIGKILL at one of those points (picked at random, spread
over the kinds of site), checks that the database opens and passes ``rlhf-eval verify``, reruns the
same command and compares every stored row, by key and value, with the uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from rlhf_eval.faults import KILL_ENV, SIGNAL_ENV, TRACE_ENV
from rlhf_eval.integrity import check

KILL_TRIALS = 20
PROMPTS = [
    "the cat sat on a mat",
    "explain why the sky is blue",
    "list three good ideas please",
    "a dog runs fast on the mat",
    "why is the cat on a mat",
    "please explain three good ideas",
]

#: Reads every database in a folder in a loop (the dashboard's checks and overview, the summary the
#: gate and report read) until a flag file appears; prints what happened as JSON. A read may fail
#: only with the library's own one-line error naming the database.
READER = r"""
import json, sys, time
from pathlib import Path
from rlhf_eval.dashboard_data import database_problem, overview
from rlhf_eval.errors import RlhfEvalError
from rlhf_eval.query import checkpoint_summary
folder, flag = Path(sys.argv[1]), Path(sys.argv[2])
outcome = {"reads": 0, "clear_errors": 0, "bad": [], "databases": []}
seen = set()
while True:
    finished = flag.exists()
    for db in sorted(folder.glob("*.duckdb")):
        seen.add(db.name)
        for read in (database_problem, checkpoint_summary, overview):
            try:
                problem = read(db)
                outcome["reads"] += 1
                if isinstance(problem, str) and ("Traceback" in problem or "\n" in problem):
                    outcome["bad"].append(f"{read.__name__}({db.name}): {problem!r}")
            except RlhfEvalError as exc:
                text = str(exc)
                if str(db) in text and "\n" not in text:
                    outcome["clear_errors"] += 1
                else:
                    outcome["bad"].append(f"{read.__name__}({db.name}): {type(exc).__name__}: {text}")
            except Exception as exc:
                outcome["bad"].append(f"{read.__name__}({db.name}): {type(exc).__name__}: {exc}")
    if finished:
        break
    time.sleep(0.25)
outcome["databases"] = sorted(seen)
print(json.dumps(outcome))
"""


@dataclass(frozen=True)
class Workload:
    suite: Path
    gold: str
    ref: Path
    policy: Path
    proxy: Path

    def command(self, db: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "rlhf_eval", "eval", str(self.policy), "--run", "r", "--ref", str(self.ref),
            "--suite", str(self.suite), "--proxy", str(self.proxy), "--gold", self.gold, "--db", str(db),
            "--samples", "2", "--max-new-tokens", "12", "--no-progress", *extra,
        ]  # fmt: skip


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in (KILL_ENV, TRACE_ENV, SIGNAL_ENV)}
    return {**base, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


@pytest.fixture(scope="module")
def workload(
    tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> Workload:
    root = tmp_path_factory.mktemp("faults")
    suite = root / "prompts.jsonl"
    suite.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    (root / "gold.py").write_text("def score(prompts, responses):\n    return [float(len(r)) for r in responses]\n")
    return Workload(suite, f"{root / 'gold.py'}:score", gpt2_ref, gpt2_variant_a, reward_model_dir)


@pytest.fixture(scope="module")
def uninterrupted(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A run that was never interrupted, and the fault sites it reached in order."""
    root = tmp_path_factory.mktemp("clean")
    db, trace = root / "clean.duckdb", root / "trace.txt"
    subprocess.run(workload.command(db), env=env(**{TRACE_ENV: str(trace)}), check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    return db, trace.read_text().split()


@contextmanager
def reader_running(folder: Path) -> Iterator[dict[str, object]]:
    """A reader process polling every database in ``folder`` while the block runs; its outcome is
    filled into the yielded dict when the block ends."""
    flag = folder / "reader-done"
    proc = subprocess.Popen([sys.executable, "-c", READER, str(folder), str(flag)], stdout=subprocess.PIPE,
                            text=True, env=env())  # fmt: skip
    outcome: dict[str, object] = {}
    try:
        yield outcome
    finally:
        flag.touch()
        out, _ = proc.communicate(timeout=120)
        outcome.update(json.loads(out))


def dump(db: Path, skip: tuple[str, ...] = ()) -> dict[str, list[tuple]]:
    """Every stored row by key and value, without per-invocation ids and times (but ``skip``)."""
    queries = {
        "samples": "SELECT * EXCLUDE (eval_id) FROM samples ORDER BY sample_id",
        "kl": "SELECT * FROM kl ORDER BY sample_id, ref_fp",
        "scores": "SELECT * FROM scores ORDER BY sample_id, scorer_id",
        "features": "SELECT * FROM features ORDER BY sample_id, feature",
        "checkpoints": "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoints ORDER BY run, checkpoint",
        "prompts": "SELECT * FROM prompts ORDER BY suite_fp, idx",
        "scorers": "SELECT * FROM scorers ORDER BY scorer_id",
        "stats": "SELECT * EXCLUDE (refreshed_at) FROM checkpoint_stats ORDER BY run, checkpoint",
    }
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in queries.items() if name not in skip}
    finally:
        con.close()


def assert_same_rows(got: dict[str, list[tuple]], want: dict[str, list[tuple]]) -> None:
    """Equal row for row; the aggregates' floats to the last bits (sums depend on row order)."""
    assert got.keys() == want.keys()
    for table in want:
        assert len(got[table]) == len(want[table]), table
        if table != "stats":
            assert got[table] == want[table], table
            continue
        for got_row, want_row in zip(got[table], want[table], strict=True):
            for a, b in zip(got_row, want_row, strict=True):
                assert a == (pytest.approx(b, rel=1e-9) if isinstance(b, float) else b), table


def kill_points(trace: list[str], count: int, seed: int) -> list[int]:
    """``count`` distinct 1-based positions in ``trace``, random but spread over the kinds of site
    (generate, kl, scores, features, stage, flush, unit): one of each kind in turn."""
    rng = random.Random(seed)
    by_kind: dict[str, list[int]] = {}
    for position, site in enumerate(trace, 1):
        by_kind.setdefault(site.split(".")[0], []).append(position)
    for positions in by_kind.values():
        rng.shuffle(positions)
    picked: list[int] = []
    while len(picked) < count and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(picked) < count:
                picked.append(by_kind[kind].pop())
    return sorted(picked)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_points_are_spread_over_every_kind_of_site() -> None:
    trace = ["generate.step"] * 50 + ["kl.batch"] * 3 + ["flush.inserted", "flush.committed"] + ["unit.complete"]
    points = kill_points(trace, 6, seed=0)
    kinds = Counter(trace[p - 1].split(".")[0] for p in points)
    assert kinds == {"flush": 2, "generate": 2, "kl": 1, "unit": 1}  # in turn, kinds in name order
    assert len(set(points)) == 6
    assert kill_points(trace, 100, seed=0) == list(range(1, len(trace) + 1))


#: A process that reaches sites a, b, b in turn.
THREE_SITES = "from rlhf_eval.faults import reach\nreach('a'); reach('b'); reach('b')"


def test_a_site_name_picks_its_first_visit_and_stop_halts_until_continued(tmp_path: Path) -> None:
    import time

    trace = tmp_path / "trace"
    killed = subprocess.run([sys.executable, "-c", THREE_SITES], env=env(**{KILL_ENV: "b", TRACE_ENV: str(trace)}))
    assert killed.returncode == -signal.SIGKILL and trace.read_text().split() == ["a", "b"]
    trace.unlink()
    halted = subprocess.Popen([sys.executable, "-c", THREE_SITES],
                              env=env(**{KILL_ENV: "b", SIGNAL_ENV: "STOP", TRACE_ENV: str(trace)}))  # fmt: skip
    deadline = time.monotonic() + 60
    while Path(f"/proc/{halted.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert halted.poll() is None and time.monotonic() < deadline, "the process never halted"
        time.sleep(0.02)
    assert trace.read_text().split() == ["a", "b"]  # halted at the first b
    os.kill(halted.pid, signal.SIGCONT)
    assert halted.wait(timeout=60) == 0  # continued, it goes past the second b
    assert trace.read_text().split() == ["a", "b", "b"]


@dataclass
class Trial:
    point: int
    site: str = ""
    killed_rc: int = 0
    staged_after_kill: int = 0
    problems_after_kill: tuple[str, ...] = ()
    resumed_rc: int = 0
    resumed_stderr: str = ""
    problems_after_resume: tuple[str, ...] = ()


def run_trial(workload: Workload, folder: Path, point: int) -> tuple[Trial, dict[str, list[tuple]]]:
    db, trace = folder / f"kill-{point:05d}.duckdb", folder / f"kill-{point:05d}.trace"
    trial = Trial(point)
    killed = subprocess.run(workload.command(db), env=env(**{KILL_ENV: str(point), TRACE_ENV: str(trace)}),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    trial.killed_rc = killed.returncode
    trial.site = trace.read_text().split()[-1] if trace.exists() else "(none)"
    staging = db.with_name(db.name + ".staging")
    trial.staged_after_kill = len(list(staging.glob("*"))) if staging.is_dir() else 0
    if db.exists():  # killed after the database was created: it opens and is sound
        trial.problems_after_kill = tuple(check(db).problems)
    resumed = subprocess.run(workload.command(db), env=env(), capture_output=True, text=True, timeout=300)
    trial.resumed_rc, trial.resumed_stderr = resumed.returncode, resumed.stderr[-2000:]
    trial.problems_after_resume = tuple(check(db).problems)
    return trial, dump(db)


@pytest.mark.slow  # 40 evaluator processes: minutes on 2 cores (tests/test_processes.py kills 4 in `make test`)
def test_sigkill_at_20_points_then_resume_gives_the_uninterrupted_rows(
    workload: Workload, uninterrupted: tuple[Path, list[str]], tmp_path: Path
) -> None:
    clean_db, trace = uninterrupted
    want = dump(clean_db)
    points = kill_points(trace, KILL_TRIALS, seed=20261127)
    folder = tmp_path / "dbs"
    folder.mkdir()
    with reader_running(folder) as reads, ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda p: run_trial(workload, folder, p), points))
    lines = [f"{t.point:5d} {t.site:18s} rc={t.killed_rc} staged={t.staged_after_kill}" for t, _ in results]
    print(f"\n{len(results)} kills of {len(trace)} fault sites reached by an uninterrupted run:\n" + "\n".join(lines))
    print(f"reader: {reads['reads']} reads, {reads['clear_errors']} clear errors, {len(reads['bad'])} bad")
    for trial, got in results:
        assert trial.killed_rc == -signal.SIGKILL, trial
        assert trial.problems_after_kill == (), trial
        assert trial.resumed_rc == 0, trial.resumed_stderr
        assert trial.problems_after_resume == (), trial
        assert_same_rows(got, want)
    kinds = {t.site.split(".")[0] for t, _ in results}
    assert {"generate", "kl", "scores", "features", "stage", "flush"} <= kinds, kinds
    assert reads["bad"] == []
    assert int(str(reads["reads"])) > 0


# -- a full disk --------------------------------------------------------------------------------

#: Runs inside a private mount namespace (``unshare``): mounts a small tmpfs, copies a finished
#: database onto it, fills the file system to leave ``free`` bytes (before the evaluation starts,
#: or while it is halted at a fault site), runs an evaluation that needs more room (a second
#: policy), records what it did, checks the database, frees the room, resumes.
DISK_FULL = r"""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_faults import Workload, dump, reader_running, env
from rlhf_eval.faults import KILL_ENV, SIGNAL_ENV
from rlhf_eval.integrity import check
spec, out = json.loads(sys.argv[2]), Path(sys.argv[3])
small = Path(spec["mount"])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
workload = Workload(**{k: (Path(v) if k != "gold" else v) for k, v in spec["workload"].items()})
filler = small / "filler"

def fill(free):
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - free))

def stopped(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0] == "T"

results = []
with reader_running(small) as reads:
    for case in spec["cases"]:
        free, site = case["free"], case["site"]
        db = small / f"full-{free}-{site or 'start'}.duckdb"
        shutil.copy(spec["db"], db)
        before = dump(db)
        command = workload.command(db, "--run", "second")
        if site is None:  # the disk is full before the evaluation starts
            fill(free)
            run = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
            rc, stderr, reached = run.returncode, run.stderr, None
        else:  # the evaluation halts at `site`, the disk fills, the evaluation goes on
            proc = subprocess.Popen(command, env={**env(), KILL_ENV: site, SIGNAL_ENV: "STOP"},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 300
            while proc.poll() is None and not stopped(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            reached = proc.poll() is None and stopped(proc.pid)
            fill(free)
            os.kill(proc.pid, signal.SIGCONT)
            _, stderr = proc.communicate(timeout=300)
            rc = proc.returncode
        after_fail = dump(db)
        problems = check(db).problems
        filler.unlink()
        resumed = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
        final = dump(db)
        results.append({
            "free": free, "site": site, "reached": reached, "rc": rc, "stderr": stderr, "db": str(db),
            "kept": all(row in after_fail[t] for t in before for row in before[t]),
            "problems_after_fail": problems, "resumed_rc": resumed.returncode, "resumed_stderr": resumed.stderr[-2000:],
            "problems_after_resume": check(db).problems,
            "grew": {t: len(final[t]) - len(before[t]) for t in before},
        })
        db.unlink()
        for extra in small.glob(db.name + "*"):
            shutil.rmtree(extra) if extra.is_dir() else extra.unlink()
subprocess.run(["umount", str(small)], check=False)
out.write_text(json.dumps({"results": results, "reads": reads}, default=str))
"""


def namespace_prefix() -> list[str] | None:
    """A command prefix that runs in a private mount namespace where tmpfs can be mounted."""
    for prefix in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        try:
            probe = subprocess.run([*prefix, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True,
                                   timeout=30)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return None


def test_a_full_disk_fails_clearly_keeps_every_stored_row_and_resumes(
    workload: Workload, uninterrupted: tuple[Path, list[str]], tmp_path: Path, gpt2_variant_b: Path
) -> None:
    prefix = namespace_prefix()
    if prefix is None:
        pytest.skip("no private mount namespace here (unshare --mount) to mount a small tmpfs in")
    small, out = tmp_path / "small", tmp_path / "disk-full.json"
    small.mkdir()
    spec = {
        "mount": str(small),
        "db": str(uninterrupted[0]),
        "cases": [
            # too little room for the evaluation's first shard; with more room left, shards deleted
            # after each flush free it again and whether any write fails at all varies from run to run
            {"free": 0, "site": None},
            {"free": 16 * 1024, "site": None},
            # the shards are staged, the flush has inserted them: DuckDB's own COMMIT meets the full disk
            {"free": 0, "site": "flush.inserted"},
        ],
        "workload": {**{k: str(v) for k, v in vars(workload).items()}, "policy": str(gpt2_variant_b)},
    }
    tests = Path(__file__).parent
    run = subprocess.run([*prefix, sys.executable, "-c", DISK_FULL, str(tests), json.dumps(spec), str(out)],
                         capture_output=True, text=True, env=env(), timeout=900)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    for result in report["results"]:
        print(f"\n{result['free']} bytes free at {result['site'] or 'the start'}: exit {result['rc']}: "
              f"{result['stderr'].strip()}")  # fmt: skip
        assert result["reached"] is not False, "the evaluation never halted at its fault site"
        assert result["rc"] == 2, result
        # the last line says what failed; lines before it report work that was stored before the
        # disk filled up (the evaluation's summary, when only its analysis could not be written)
        *_, line = result["stderr"].strip().splitlines()
        assert "Traceback" not in result["stderr"] and result["stderr"].count("error: ") == 1, result["stderr"]
        assert line.startswith(f"error: {result['db']}"), line
        assert "No space left on device" in line and "rerun" in line, line  # the cause and the fix
        assert result["kept"], "a row stored before the disk filled up is gone"
        assert result["problems_after_fail"] == []
        assert result["resumed_rc"] == 0, result["resumed_stderr"]
        assert result["problems_after_resume"] == []
        assert result["grew"]["samples"] == len(PROMPTS) * 2  # the second policy's samples, once
    assert report["reads"]["bad"] == []


# -- a damaged file -----------------------------------------------------------------------------


def damage(db: Path, table: str) -> None:
    """Flip 64 bytes inside the first stored block of ``table`` (past the block's checksum)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        (block_size,) = con.execute("SELECT block_size FROM pragma_database_size()").fetchone() or (0,)
        block_id, offset = con.execute(
            "SELECT block_id, block_offset FROM pragma_storage_info(?) WHERE persistent AND block_id >= 0 "
            "ORDER BY block_id, block_offset LIMIT 1",
            [table],
        ).fetchone() or (0, 0)
    finally:
        con.close()
    position = 3 * 4096 + block_id * block_size + 8 + offset  # three header pages, then blocks
    with db.open("r+b") as handle:
        handle.seek(position)
        original = handle.read(64)
        handle.seek(position)
        handle.write(bytes(b ^ 0xFF for b in original))


def test_a_damaged_file_is_named_never_rewritten_and_verify_lists_it(
    workload: Workload, uninterrupted: tuple[Path, list[str]], tmp_path: Path
) -> None:
    from rlhf_eval.errors import StoreError
    from rlhf_eval.query import fetch_dicts

    db = tmp_path / "damaged.duckdb"
    shutil.copy(uninterrupted[0], db)
    damage(db, "samples")
    digest, inode, before = sha256(db), db.stat().st_ino, dump(db, skip=("samples",))
    with reader_running(tmp_path) as reads:
        verify = subprocess.run([sys.executable, "-m", "rlhf_eval", "verify", "--db", str(db)], env=env(),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        run = subprocess.run(workload.command(db), env=env(), capture_output=True, text=True, timeout=300)
        with pytest.raises(StoreError, match=r"damaged\.duckdb: the database file is damaged \(Corrupt database"):
            fetch_dicts(db, "SELECT sum(length(sample_id)) + sum(length(response)) FROM samples")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "problem: samples: reading it failed (Corrupt database file" in verify.stdout
    assert run.returncode == 2, run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"error: {db}: the database file is damaged") and "rlhf-eval verify" in line, line
    # never recreated or rewritten: the same file, every row it held still there (the evaluation
    # that stopped may have added its own row to `evaluations` before it reached the damage)
    assert db.stat().st_ino == inode
    assert sha256(db) == digest or dump(db, skip=("samples",)) == before
    assert reads["bad"] == []


# -- a second writer ----------------------------------------------------------------------------


def test_a_second_writer_fails_clearly_while_the_first_finishes_untouched(
    workload: Workload, uninterrupted: tuple[Path, list[str]], tmp_path: Path
) -> None:
    import time

    db = tmp_path / "shared.duckdb"
    lock = db.with_name(db.name + ".lock")
    with reader_running(tmp_path) as reads:
        first = subprocess.Popen(workload.command(db), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the first holds the writer lock once its pid is in the lock file
        # Stopped (not killed) while the second tries: on a fast machine the first could otherwise
        # finish before the second has imported torch, and the test would prove nothing.
        os.kill(first.pid, signal.SIGSTOP)
        try:
            still_running = first.poll() is None
            second = subprocess.run(workload.command(db), env=env(), capture_output=True, text=True, timeout=300)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        _, first_err = first.communicate(timeout=600)
    assert still_running, "the first writer finished before it took the lock; the test proves nothing"
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip() == (
        f"error: {db}: another evaluation (pid {first.pid}) is writing to this database; wait for it to finish, "
        "or pass --db with another file"
    )
    assert first.returncode == 0, first_err
    assert check(db).problems == []
    assert_same_rows(dump(db), dump(uninterrupted[0]))
    assert reads["bad"] == []
