"""Does a reader slow the evaluator down? The same evaluation, alone and beside a reader process
that queries ``checkpoint_summary`` in a loop, side by side in one run.

    .venv/bin/python bench/concurrent_read.py [--repeats 2]

Prints the writer's wall time in both settings, their ratio, and the reader's read count and
errors. Offline: it builds tiny checkpoints with ``rlhf_eval.tiny`` in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READER = r"""
import json, sys, time
from pathlib import Path
from rlhf_eval.query import checkpoint_summary
db, flag, interval = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
reads, errors = 0, 0
while not flag.exists():
    if db.exists():
        try:
            checkpoint_summary(db); reads += 1
        except Exception:
            errors += 1
    time.sleep(interval)
print(json.dumps({"reads": reads, "errors": errors}))
"""


def build(root: Path) -> dict[str, Path]:
    from rlhf_eval import tiny

    words = "the cat sat on a mat dog runs fast explain why sky is blue list three good ideas".split()
    tok = tiny.build_word_tokenizer(root / "tok", words)
    ref = tiny.build_causal_lm(root / "ref", tok, hidden_size=64, num_layers=2)
    policies = [tiny.finetune_causal_lm(ref, root / f"p{i}", [" ".join(words[i:])], steps=5, seed=i) for i in range(3)]
    rm = tiny.build_reward_model(root / "rm", tok)
    suite = root / "prompts.jsonl"
    suite.write_text("\n".join(json.dumps({"prompt": " ".join(words[i : i + 5]) + f" {i}"}) for i in range(40)))
    gold = root / "gold.py"
    gold.write_text("def score(p, r):\n    return [float(len(x)) for x in r]\n")
    return {"ref": ref, "rm": rm, "suite": suite, "gold": gold, **{f"p{i}": p for i, p in enumerate(policies)}}


def run_eval(paths: dict[str, Path], db: Path) -> tuple[float, float]:
    """Wall time of one evaluation and the seconds it waited for readers' locks."""
    cmd = [sys.executable, "-m", "rlhf_eval", "eval", str(paths["p0"]), str(paths["p1"]), str(paths["p2"]),
           "--run", "bench", "--ref", str(paths["ref"]), "--suite", str(paths["suite"]), "--proxy", str(paths["rm"]),
           "--gold", f"{paths['gold']}:score", "--db", str(db), "--samples", "4", "--max-new-tokens", "32",
           "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    elapsed = time.perf_counter() - started
    waited = float(re.search(r"waited ([0-9.]+) s for readers", done.stderr).group(1))  # type: ignore[union-attr]
    return elapsed, waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--intervals", default="0.5,0.01", help="reader sleep between queries, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = build(root)
        alone = [run_eval(paths, root / f"alone{i}.duckdb")[0] for i in range(args.repeats)]
        base = statistics.median(alone)
        print(f"writer alone: {base:6.2f} s (median of {args.repeats})")
        for interval in (float(x) for x in args.intervals.split(",")):
            times, waits, reads, errors = [], [], 0, 0
            for i in range(args.repeats):
                db, flag = root / f"beside{interval}-{i}.duckdb", root / f"done{interval}-{i}"
                reader = subprocess.Popen(
                    [sys.executable, "-c", READER, str(db), str(flag), str(interval)], stdout=subprocess.PIPE, text=True
                )
                elapsed, waited = run_eval(paths, db)
                times.append(elapsed)
                waits.append(waited)
                flag.touch()
                report = json.loads(reader.communicate()[0])
                reads, errors = reads + report["reads"], errors + report["errors"]
            t = statistics.median(times)
            print(
                f"writer beside a reader querying every {interval:g} s: {t:6.2f} s, ratio {t / base:5.3f}; "
                f"writer waited {statistics.median(waits):.3f} s for locks; reader {reads} reads, {errors} errors"
            )


if __name__ == "__main__":
    main()
