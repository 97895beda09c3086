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
  handler runs, as when the machine or the OOM killer stops it.

With neither set, ``reach`` returns at once: both are read once, at import.
"""

from __future__ import annotations

import os
import signal

TRACE_ENV = "RLHF_EVAL_FAULT_TRACE"
KILL_ENV = "RLHF_EVAL_KILL_AT"

_trace_path = os.environ.get(TRACE_ENV) or None
_kill_at = int(os.environ.get(KILL_ENV) or 0)
_reached = 0


def reach(site: str) -> None:
    """Record that the process reached ``site``; die here if this is the chosen point."""
    global _reached
    if _trace_path is None and not _kill_at:
        return
    _reached += 1
    if _trace_path is not None:
        with open(_trace_path, "a", encoding="utf-8") as trace:
            trace.write(site + "\n")
    if _reached == _kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
