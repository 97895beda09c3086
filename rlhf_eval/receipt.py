"""Receipts: a cached rerun's answer, replayed without opening the database.

A fully cached ``rlhf-eval eval`` proves from the database that every row it would write is
stored (``Evaluation.stored_result``) and prints the stored summary. As a command that proof is
mostly fixed costs: DuckDB's import and two connections, about 0.3 s of a 0.35 s rerun, against
under 0.1 s for Python, click and a few hundred ``stat`` calls. So after a command has answered,
it writes a *receipt* beside the database (``<db>.receipts.json``): what the command printed,
stamped with the identity of everything the answer depends on. The same command run again stats
the same paths and, when every identity is unchanged, prints the receipt's answer: the one it
would read again from the same bytes. The technique is make's and git's index: a file whose
``stat`` is unchanged is taken as unchanged.

A receipt is replayed only when all of these hold:

1. the same command: its settings, the working directory and the format of receipts;
2. the same inputs: every file and folder under each input path (run and checkpoint folders,
   adapter bases, the reference, the reward models, the suite and its prompt file) compared as
   a listing of (path, device, inode, size, mtime_ns, ctime_ns); a new checkpoint, a rewritten
   weight file or a touched config is a miss;
3. the same code: every file of the installed ``rlhf_eval`` package (a new detector version
   asks for rows the database may lack), and the entry files of DuckDB and PyYAML;
4. the same database: the file's identity, and no WAL file and no staged shard beside it. DuckDB
   commits either into the WAL or, at a checkpoint, into the file, so a commit changes one of
   them; ``ctime`` cannot be set back by a user.

A receipt is written only from a *verified* answer (``verify_and_record``): the inputs and the
database are stamped, the read-only check runs in full (settings, suite, discovery and every
query), and they are stamped again. It is kept only when the check found every row and the two
stamps agree, so the answer is the one that state of the files gives. A stamp newer than the
file system's timestamp granularity is not trusted (git's "racily clean" files): a write in the
same tick would not change it. Inputs that are not local paths (hub ids, whose snapshot can
move; Python scorers, whose imports can change) get no receipt, and neither do runs with the
fault-injection variables set.

Anything unexpected (an unreadable receipt, a vanished file) is a miss: the command then does
what it does without receipts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_eval import faults

#: Bumped when the receipt's content or its meaning changes: older receipts are then ignored.
FORMAT = 1
#: Receipts kept per database (the most recent ones; each is one command's answer).
MAX_RECEIPTS = 8
#: Inputs with more files than this get no receipt: stat-ing them would cost what the database
#: check costs.
MAX_ENTRIES = 50_000
#: How old a stamp must be to be trusted, on file systems with fine timestamps (a Linux
#: timestamp advances once per kernel tick, 1 to 10 ms) and on coarse ones (1 s on ext3 and
#: HFS+, 2 s on FAT), told apart by whether the times are whole milliseconds.
SETTLED_NS = 50_000_000
SETTLED_COARSE_NS = 2_000_000_000
#: Environment variables that make a run behave differently (fault injection in tests).
REFUSING_ENV = (faults.KILL_ENV, faults.TRACE_ENV)
#: The file suffixes of staged shards, as ``store.SHARD_SUFFIXES`` (store.py imports DuckDB).
SHARD_SUFFIXES = (".arrow", ".parquet")
#: The package whose files are stamped as "the code".
PACKAGE_DIR = Path(__file__).resolve().parent
#: Libraries the database's answer goes through (DuckDB reads the file, PyYAML the suite): their
#: entry files are stamped too, so an upgrade or a downgrade is a miss.
DEPENDENCIES = ("duckdb", "_duckdb", "yaml")


@dataclass(frozen=True)
class Answer:
    """What a command printed: its lines on stderr, and stdout as a table and as JSON."""

    stderr: tuple[str, ...]
    table: str
    json: str


@dataclass(frozen=True)
class Stamp:
    """The identities an answer depends on. ``files`` maps a path to ``[dev, ino, size,
    mtime_ns, ctime_ns]`` (a folder to ``[dev, ino]``; a path that is gone to ``[]``)."""

    db: tuple[int, ...]
    files: dict[str, list[int]]
    code: dict[str, list[int]]


def receipts_path(db: str | Path) -> Path:
    path = Path(db).expanduser()
    return path.with_name(path.name + ".receipts.json")


def command_key(command: str, settings: Mapping[str, Any]) -> str:
    """The command's identity: its settings as given, the working directory (relative paths
    resolve against it) and the receipt format."""
    text = json.dumps(
        {"format": FORMAT, "command": command, "cwd": os.getcwd(), "settings": dict(settings)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def refused_by_environment() -> bool:
    return any(os.environ.get(name) for name in REFUSING_ENV)


def file_identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def listing(roots: Iterable[str], *, skip_dirs: frozenset[str] = frozenset()) -> dict[str, list[int]] | None:
    """Identity of every file and folder under ``roots`` (symbolic links followed, each folder
    once); None when there are more than ``MAX_ENTRIES``."""
    found: dict[str, list[int]] = {}
    seen_dirs: set[tuple[int, int]] = set()
    pending = list(roots)
    while pending:
        path = pending.pop()
        try:
            st = os.stat(path)
        except OSError:
            found[path] = []
            continue
        if not os.path.isdir(path):
            found[path] = file_identity(st)
        else:
            found[path] = [st.st_dev, st.st_ino]
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            try:
                names = os.listdir(path)
            except OSError:
                found[path] = []
                continue
            pending.extend(os.path.join(path, name) for name in names if name not in skip_dirs)
        if len(found) > MAX_ENTRIES:
            return None
    return found


def code_listing() -> dict[str, list[int]]:
    """The package's own files (compiled bytecode left out: Python writes it as it imports) and
    the entry files of ``DEPENDENCIES``, found without importing them."""
    files = listing([str(PACKAGE_DIR)], skip_dirs=frozenset({"__pycache__"})) or {}
    for name in DEPENDENCIES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            files[spec.origin] = file_identity(os.stat(spec.origin))
    return {path: identity for path, identity in files.items() if len(identity) != 2}


def database_identity(db: str | Path) -> tuple[int, ...] | None:
    """The database file's identity; None when it is missing or a commit may still be elsewhere
    (a WAL file, staged shards)."""
    path = Path(db).expanduser()
    wal = path.with_name(path.name + ".wal")  # DuckDB's own name for it
    staging = path.with_name(path.name + ".staging")  # ``Store.staging`` (store.py imports DuckDB)
    try:
        st = path.stat()
    except OSError:
        return None
    if wal.exists() or any(any(staging.glob(f"*{suffix}")) for suffix in SHARD_SUFFIXES):
        return None
    return tuple(file_identity(st))


def take_stamp(db: str | Path, roots: Sequence[str]) -> Stamp | None:
    identity = database_identity(db)
    files = listing(roots)
    if identity is None or files is None:
        return None
    return Stamp(identity, files, code_listing())


def settled(stamp: Stamp, now_ns: int) -> bool:
    """Whether no write could still go unseen: every time in the stamp is older than the file
    system's timestamp granularity."""
    times = [t for identity in (stamp.db, *stamp.files.values(), *stamp.code.values()) for t in identity[3:5]]
    for t in times:
        coarse = t % 1_000_000 == 0
        if now_ns - t < (SETTLED_COARSE_NS if coarse else SETTLED_NS):
            return False
    return True


def read_receipts(db: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(receipts_path(db).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("receipts"), dict):
        return {}
    return {key: entry for key, entry in data["receipts"].items() if isinstance(entry, dict)}


def find(db: str | Path, key: str) -> Answer | None:
    """The answer recorded for this command, when nothing it depends on changed since."""
    if refused_by_environment():
        return None
    entry = read_receipts(db).get(key)
    if entry is None:
        return None
    try:
        recorded = Stamp(tuple(entry["db"]), entry["files"], entry["code"])
        roots = list(entry["roots"])
        answer = Answer(tuple(entry["stderr"]), str(entry["table"]), str(entry["json"]))
    except (KeyError, TypeError, ValueError):
        return None
    if database_identity(db) != recorded.db or code_listing() != recorded.code or listing(roots) != recorded.files:
        return None
    return answer


def verify_and_record(
    db: str | Path,
    key: str,
    roots: Sequence[str] | None,
    verify: Callable[[], tuple[Answer, Sequence[str]] | None],
    now_ns: Callable[[], int] = time.time_ns,
) -> bool:
    """Run ``verify`` (the read-only check, returning the answer and the input paths it read,
    or None when the database lacks something) between two stamps of ``roots`` and the
    database; record the answer when both stamps agree and are settled. True when recorded."""
    if roots is None or refused_by_environment():
        return False
    before = take_stamp(db, roots)
    if before is None:
        return False
    verified = verify()
    if verified is None:
        return False
    answer, read_roots = verified
    if sorted(read_roots) != sorted(roots):
        return False
    after = take_stamp(db, roots)
    if after is None or after != before or not settled(after, now_ns()):
        return False
    write(db, key, roots, after, answer)
    return True


def write(db: str | Path, key: str, roots: Sequence[str], stamp: Stamp, answer: Answer) -> None:
    """Add one receipt, keeping the ``MAX_RECEIPTS`` most recent; written whole and renamed into
    place, so a reader sees the old file or the new one. A file that cannot be written just means
    no receipt."""
    receipts = read_receipts(db)
    receipts.pop(key, None)
    receipts[key] = {
        "written_ns": time.time_ns(),
        "roots": list(roots),
        "db": list(stamp.db),
        "files": stamp.files,
        "code": stamp.code,
        "stderr": list(answer.stderr),
        "table": answer.table,
        "json": answer.json,
    }
    kept = dict(sorted(receipts.items(), key=lambda item: item[1].get("written_ns", 0))[-MAX_RECEIPTS:])
    path = receipts_path(db)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"format": FORMAT, "receipts": kept}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
