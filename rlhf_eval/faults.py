"""Named fault sites, so that reliability tests can kill a real evaluator at chosen points.

The evaluator and the store call ``reach(site)`` at the points where a crash would leave the
most interesting state behind: after a generation step or a KL batch, after a score chunk was
staged, between writing a shard and renaming it, between a flush's inserts and its COMMIT,
between the COMMIT and the deletion of the ingested shards. Two environment variables drive it:

- ``RLHF_EVAL_FAULT_TRACE=FILE`` appends every site reached to ``FILE``, one name per line, so a
  test can see where an uninterrupted run goes and pick points across generation, scoring and
  writing;
- ``RLHF_EVAL_KILL_AT=N`` makes the process SIGKILL itself when it reaches its N-th site
  (counting from 1, in the order of the trace): no ``finally`` block, no flush, no atexit
  handler runs, as when the machine or the OOM killer stops it. ``RLHF_EVAL_KILL_AT=SITE`` (a
  site's name) picks the first time that site is reached;
- ``RLHF_EVAL_KILL_SIGNAL=STOP`` sends SIGSTOP instead: the process halts at that point until
  a test has changed the world around it (filled the disk, say) and sends SIGCONT.

With none set, ``reach`` returns at once: all are read once, at import.
"""

from __future__ import annotations

import os
import signal

TRACE_ENV = "RLHF_EVAL_FAULT_TRACE"
KILL_ENV = "RLHF_EVAL_KILL_AT"
SIGNAL_ENV = "RLHF_EVAL_KILL_SIGNAL"

_trace_path = os.environ.get(TRACE_ENV) or None
_kill_spec = os.environ.get(KILL_ENV) or ""
_kill_at = int(_kill_spec) if _kill_spec.isdigit() else 0
_kill_site = "" if _kill_spec.isdigit() else _kill_spec
_signal = signal.SIGSTOP if os.environ.get(SIGNAL_ENV, "").upper() in ("STOP", "SIGSTOP") else signal.SIGKILL
_reached = 0


def reach(site: str) -> None:
    """Record that the process reached ``site``; die (or stop) here if this is the chosen point."""
    global _reached
    global _kill_site
    if _trace_path is None and not _kill_at and not _kill_site:
        return
    _reached += 1
    if _trace_path is not None:
        with open(_trace_path, "a", encoding="utf-8") as trace:
            trace.write(site + "\n")
    if _reached == _kill_at or site == _kill_site:
        _kill_site = ""  # a stopped process that is continued goes on past later visits
        os.kill(os.getpid(), _signal)
