"""Does ``rlhf-eval eval`` stream? Peak resident memory of real evaluations, each a fresh
``rlhf-eval eval`` process, at growing sample counts, against a baseline eval of 2 samples with
the same models:

    .venv/bin/python bench/memory.py                         # 1k .. 100k samples (about 9 min here)
    .venv/bin/python bench/memory.py --max-samples 10000     # 1k .. 10k (about 2 min)
    .venv/bin/python bench/memory.py --quick                 # 500 and 2k samples only (under a minute)
    .venv/bin/python bench/memory.py --no-analysis           # evals without the analysis afterwards
    .venv/bin/python bench/memory.py --json                  # the figures as JSON on stdout

**Setup** (a temporary folder, offline, ``rlhf_eval.tiny``): a word-level tokenizer of 63 tokens,
a random-init GPT-2 reference and a policy (hidden 16, 2 layers; a plain model dir, run
``bench``), a GPT-2 reward model of the same size as ``--proxy`` and a Python function as
``--gold``. The suite is a JSONL file of distinct prompts (3 to 9 words). Every eval writes a
fresh DuckDB file with ``--samples 10 --max-new-tokens 8 --no-progress`` and the default
analysis afterwards. **Samples** counts every sample row an eval generates, scores and stores:
the reference's and the policy's (so 100k samples = 5,000 prompts x 10 samples x 2 models); the
policy's also get a KL forward (the reference's KL is 0 without one).

**Peak RSS** of each process is its ``ru_maxrss`` from ``os.wait4`` (the kernel's high-water
mark of that process alone); /proc/PID/status VmRSS is also sampled every 0.2 s to say *when*
the peak happened (the fraction of the wall time). **Beyond the loaded models** = peak RSS −
the baseline's peak RSS (an eval of 1 prompt x 1 sample: the same imports, models, tokenizers,
DuckDB and analysis code). Growth: a least-squares line through (samples, peak) of every size,
given per 10k samples and per sample.

Targets (the performance issue): evaluating 100k samples streams; peak RSS beyond the loaded
models stays under 2 GB and does not grow with the number of samples. "Does not grow" is judged
as a fitted slope under 10 MB per 10k samples (1 KB per sample: anything that keeps a
per-sample Python object — a dict of a few fields and two token-id lists is already ~1-2 KB —
fails it, while allocator noise and DuckDB's bounded caches pass). When 100k is not measured,
the 2 GB verdict is on the fitted line at 100k and says so.

**Where it goes** (``--trace N``, default 2,000 samples; off with ``--quick``): the same eval in
this process under ``tracemalloc`` (Python allocations only; not torch's or DuckDB's native
memory), with snapshots taken at the entry of ``Evaluation.evaluate_unit`` and of
``Evaluation.compute_scores`` for each model (the latter after generation and KL, when a
model's per-sample structures are all alive). The growth between the two for the policy is
attributed to the innermost ``rlhf_eval`` line on each allocation's stack and divided by that
model's samples: bytes per sample, per line. **When the peak happens** (``--phases N``, default
10,000): the eval and its analysis once more in this process without tracemalloc, VmRSS sampled
every 20 ms and charged to the innermost phase running (``Evaluation.generate``, ``compute_kl``,
``compute_scores``, ``compute_features``, ``compute_ensembles``, ``summary``, ``Store.flush``, the
analysis). ``--no-analysis`` runs every eval with ``--no-analysis`` (and the in-process run without
it): the memory of the evaluator and the store alone. Measures only; nothing in the pipeline is
changed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
os.environ.update(ENV)

ROOT = Path(__file__).resolve().parent.parent
# The console script beside this interpreter; ``python -m rlhf_eval`` where there is none (a
# machine with the project on PYTHONPATH, as bench/gpu.sh runs it).
_SCRIPT = Path(sys.executable).parent / "rlhf-eval"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rlhf_eval"]
SAMPLES_PER_PROMPT = 10
MODELS = 2  # the reference and one policy
MAX_NEW_TOKENS = 8
TARGET_BYTES = 2 * 1024**3
TARGET_SAMPLES = 100_000
GROWTH_BOUND = 10 * 1024**2  # bytes per 10k samples
SIZES = (1_000, 3_000, 10_000, 30_000, 100_000)
WORDS = (
    "the cat sat on a mat dog runs fast explain why sky is blue list three good ideas "
    "and it was very big small red green sun moon star tree bird sings today because of light "
    "water cold warm one two first second also so then but not yes no I think you can help "
    "house road rain snow wind"
).split()
GOLD = "def score(prompts, responses):\n    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n"
MB = 1024**2


def build_fixture(root: Path) -> dict[str, Path]:
    """Tokenizer, reference, policy (in run dir ``bench``), reward model and gold function."""
    from rlhf_eval import tiny

    tok = tiny.build_word_tokenizer(root / "tokenizer", WORDS)
    size = {"hidden_size": 16, "num_layers": 2, "num_heads": 2}
    return {
        "ref": tiny.build_causal_lm(root / "ref", tok, seed=0, **size),
        "policy": tiny.build_causal_lm(root / "bench" / "policy", tok, seed=1, **size),
        "rm": tiny.build_reward_model(root / "rm", tok, seed=2, **size),
        "gold": _write(root / "gold.py", GOLD),
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def prompt_text(index: int) -> str:
    """A distinct prompt per index: its three base-60 digits as words, then 0..6 random words."""
    digits = [WORDS[(index // 60**k) % 60] for k in range(3)]
    rng = random.Random(index)
    return " ".join(digits + [rng.choice(WORDS) for _ in range(rng.randint(0, 6))])


def write_suite(path: Path, prompts: int) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(prompts):
            handle.write(json.dumps({"prompt": prompt_text(i)}) + "\n")
    return path


def eval_args(fixture: dict[str, Path], suite: Path, db: Path, samples_per_prompt: int, analysis: bool) -> list[str]:
    return [
        "eval", str(fixture["policy"]), "--run", "bench", "--ref", str(fixture["ref"]), "--suite", str(suite),
        "--proxy", str(fixture["rm"]), "--gold", f"{fixture['gold']}:score", "--samples", str(samples_per_prompt),
        "--max-new-tokens", str(MAX_NEW_TOKENS), "--db", str(db), "--no-progress",
        *([] if analysis else ["--no-analysis"]),
    ]  # fmt: skip


def rss_of(pid: int) -> int | None:
    """VmRSS of a live process in bytes, or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def run_eval(
    fixture: dict[str, Path], work: Path, prompts: int, samples_per_prompt: int, analysis: bool = True
) -> dict[str, Any]:
    """One fresh ``rlhf-eval eval`` process: wall time, peak RSS, when it peaked, RSS at exit.

    The eval runs under a small Python wrapper that prints its child's ``ru_maxrss``
    (RUSAGE_CHILDREN of a process with one child is that child's high-water mark, from the
    kernel); VmRSS of the eval process is sampled every 0.2 s meanwhile."""
    suite = write_suite(work / f"prompts-{prompts}x{samples_per_prompt}.jsonl", prompts)
    db = work / f"eval-{prompts}x{samples_per_prompt}.duckdb"
    wrapper = (
        "import resource, subprocess, sys, json\n"
        "code = subprocess.call(sys.argv[1:])\n"
        "print(json.dumps({'code': code, 'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, *CLI, *eval_args(fixture, suite, db, samples_per_prompt, analysis)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **ENV},
        cwd=work,
    )
    trace: list[tuple[float, int]] = []
    out: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda name=name, s=s: out.__setitem__(name, s.read()))  # type: ignore[misc]
        for name, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    child: int | None = None
    while proc.poll() is None:
        if child is None:
            try:
                kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                child = int(kids[0]) if kids else None
            except (OSError, ValueError):
                child = None
        rss = rss_of(child) if child is not None else None
        if rss is not None:
            trace.append((time.perf_counter() - started, rss))
        time.sleep(0.2)
    wall = time.perf_counter() - started
    for reader in readers:
        reader.join()
    lines = out.get("stdout", b"").decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines else {"code": -1, "maxrss_kb": 0}
    if report["code"] != 0:
        raise RuntimeError(f"rlhf-eval eval failed ({report['code']}): {out.get('stderr', b'').decode()[-2000:]}")
    db.unlink(missing_ok=True)
    peak = int(report["maxrss_kb"]) * 1024
    peak_at = max(trace, key=lambda tr: tr[1])[0] / wall if trace else float("nan")
    return {
        "samples": prompts * samples_per_prompt * MODELS,
        "prompts": prompts,
        "wall_s": wall,
        "peak_rss": peak,
        "peak_sampled": max((r for _, r in trace), default=0),
        "peak_at": peak_at,
        "final_rss": trace[-1][1] if trace else 0,
    }


# --------------------------------------------------------------------------- tracemalloc


def innermost_project_frame(traceback: tracemalloc.Traceback) -> str:
    """``file:line`` of the innermost frame in ``rlhf_eval`` (else the innermost frame)."""
    frames = list(traceback)[::-1]  # tracemalloc lists the oldest frame first
    for frame in frames:
        if "/rlhf_eval/" in frame.filename:
            return f"{frame.filename.split('/rlhf_eval/', 1)[-1]}:{frame.lineno}"
    return f"{Path(frames[0].filename).name}:{frames[0].lineno}"


def source_line(site: str) -> str:
    name, _, line = site.rpartition(":")
    path = ROOT / "rlhf_eval" / name
    try:
        return path.read_text(encoding="utf-8").splitlines()[int(line) - 1].strip()[:90]
    except (OSError, ValueError, IndexError):
        return ""


def trace_in_process(fixture: dict[str, Path], work: Path, prompts: int) -> dict[str, Any]:
    """The eval in this process under tracemalloc; per-sample growth by allocating line."""
    from rlhf_eval import pipeline

    snapshots: list[tuple[str, tracemalloc.Snapshot]] = []
    original_unit, original_scores = pipeline.Evaluation.evaluate_unit, pipeline.Evaluation.compute_scores

    def evaluate_unit(self: Any, unit: Any, ref_fp: str) -> None:
        snapshots.append(("unit start", tracemalloc.take_snapshot()))
        original_unit(self, unit, ref_fp)

    def compute_scores(self: Any, *args: Any, **kwargs: Any) -> None:
        snapshots.append(("before scores", tracemalloc.take_snapshot()))
        original_scores(self, *args, **kwargs)

    suite = write_suite(work / "prompts-trace.jsonl", prompts)
    config = pipeline.EvalConfig(
        paths=(str(fixture["policy"]),),
        ref=str(fixture["ref"]),
        suite=str(suite),
        proxy=(str(fixture["rm"]),),
        gold=(f"{fixture['gold']}:score",),
        samples=SAMPLES_PER_PROMPT,
        max_new_tokens=MAX_NEW_TOKENS,
        run="bench",
        db=str(work / "trace.duckdb"),
        progress=False,
    )
    pipeline.Evaluation.evaluate_unit = evaluate_unit  # type: ignore[method-assign]
    pipeline.Evaluation.compute_scores = compute_scores  # type: ignore[method-assign]
    tracemalloc.start(30)
    try:
        start = tracemalloc.take_snapshot()
        evaluation = pipeline.Evaluation(config)
        after_init = tracemalloc.take_snapshot()
        evaluation.run()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        pipeline.Evaluation.evaluate_unit, pipeline.Evaluation.compute_scores = original_unit, original_scores
    per_unit = prompts * SAMPLES_PER_PROMPT

    def grouped(later: tracemalloc.Snapshot, earlier: tracemalloc.Snapshot, top: int) -> list[dict[str, Any]]:
        sizes: dict[str, int] = defaultdict(int)
        counts: dict[str, int] = defaultdict(int)
        for stat in later.compare_to(earlier, "traceback"):
            site = innermost_project_frame(stat.traceback)
            sizes[site] += stat.size_diff
            counts[site] += stat.count_diff
        ranked = sorted(sizes, key=lambda s: -sizes[s])[:top]
        return [
            {"site": s, "bytes": sizes[s], "bytes_per_sample": sizes[s] / per_unit, "blocks": counts[s],
             "code": source_line(s)}
            for s in ranked
        ]  # fmt: skip

    names = [name for name, _ in snapshots]
    # the policy is the second unit: its "unit start" and "before scores" snapshots
    starts = [i for i, n in enumerate(names) if n == "unit start"]
    scores = [i for i, n in enumerate(names) if n == "before scores"]
    unit_start, unit_scores = snapshots[starts[-1]][1], snapshots[scores[-1]][1]
    total_unit = sum(s.size_diff for s in unit_scores.compare_to(unit_start, "filename"))
    total_init = sum(s.size_diff for s in after_init.compare_to(start, "filename"))
    return {
        "prompts": prompts,
        "samples_per_model": per_unit,
        "traced_peak": traced_peak,
        "held_by_evaluation_init": total_init,
        "init_sites": grouped(after_init, start, 4),
        "policy_unit_growth": total_unit,
        "policy_unit_growth_per_sample": total_unit / per_unit,
        "policy_unit_sites": grouped(unit_scores, unit_start, 10),
    }


PHASES = (
    ("pipeline", "Evaluation", ("generate", "compute_kl", "compute_scores", "compute_features", "compute_ensembles",
                                "summary")),
    ("store", "Store", ("flush",)),
)  # fmt: skip


def phases_in_process(fixture: dict[str, Path], work: Path, prompts: int, analysis: bool = True) -> dict[str, Any]:
    """The eval and its analysis in this process (no tracemalloc), VmRSS sampled every 20 ms by
    a thread; each sample is charged to the innermost phase running (an ``Evaluation`` stage, a
    ``Store.flush``, the analysis): the peak RSS of each phase."""
    import importlib

    from rlhf_eval import pipeline
    from rlhf_eval.analysis.runner import analyze_database

    current = ["setup"]
    peaks: dict[str, int] = defaultdict(int)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = rss_of(os.getpid()) or 0
            peaks[current[-1]] = max(peaks[current[-1]], rss)
            time.sleep(0.02)

    def wrap(owner: Any, name: str) -> Any:
        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            current.append(name)
            try:
                return original(*args, **kwargs)
            finally:
                current.pop()

        setattr(owner, name, wrapped)
        return original

    originals = []
    for module, cls, names in PHASES:
        owner = getattr(importlib.import_module(f"rlhf_eval.{module}"), cls)
        originals += [(owner, n, wrap(owner, n)) for n in names]
    suite = write_suite(work / "prompts-phases.jsonl", prompts)
    db = work / "phases.duckdb"
    config = pipeline.EvalConfig(
        paths=(str(fixture["policy"]),), ref=str(fixture["ref"]), suite=str(suite), proxy=(str(fixture["rm"]),),
        gold=(f"{fixture['gold']}:score",), samples=SAMPLES_PER_PROMPT, max_new_tokens=MAX_NEW_TOKENS, run="bench",
        db=str(db), progress=False,
    )  # fmt: skip
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = pipeline.evaluate(config)
        if analysis:
            current.append("analysis")
            analyze_database(db, list(result.runs), skip_unknown=True)
            current.pop()
    finally:
        stop.set()
        sampler.join()
        for owner, name, original in originals:
            setattr(owner, name, original)
    return {"samples": prompts * SAMPLES_PER_PROMPT * MODELS, "peaks": dict(peaks)}


# --------------------------------------------------------------------------- report


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-samples", type=int, default=100_000, help="largest eval (samples, both models)")
    parser.add_argument("--sizes", default=None, help="comma-separated sample counts (overrides the ladder)")
    parser.add_argument("--trace", type=int, default=2_000, help="samples of the tracemalloc run (0: none)")
    parser.add_argument("--phases", type=int, default=10_000, help="samples of the peak-by-phase run (0: none)")
    parser.add_argument("--quick", action="store_true", help="500 and 2,000 samples, no trace")
    parser.add_argument(
        "--no-analysis",
        dest="analysis",
        action="store_false",
        help="evals with --no-analysis: what the evaluator and the store hold, without the analysis afterwards",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    per_prompt = SAMPLES_PER_PROMPT * MODELS
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    elif args.quick:
        sizes, args.trace, args.phases = [500, 2_000], 0, 0
    else:
        sizes = [s for s in SIZES if s <= args.max_samples] or [args.max_samples]
        if args.max_samples not in sizes:
            sizes.append(args.max_samples)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        fixture = build_fixture(work / "models")
        log("baseline: 1 prompt x 1 sample ...")
        baseline = run_eval(fixture, work, 1, 1, args.analysis)
        log(f"  peak {baseline['peak_rss'] / MB:.0f} MB, {baseline['wall_s']:.1f} s")
        runs = []
        for n in sizes:
            prompts = max(1, n // per_prompt)
            log(f"{prompts * per_prompt} samples ({prompts} prompts x {SAMPLES_PER_PROMPT} x {MODELS} models) ...")
            run = run_eval(fixture, work, prompts, SAMPLES_PER_PROMPT, args.analysis)
            run["beyond_baseline"] = run["peak_rss"] - baseline["peak_rss"]
            runs.append(run)
            log(f"  peak {run['peak_rss'] / MB:.0f} MB (+{run['beyond_baseline'] / MB:.0f}), {run['wall_s']:.1f} s")
        phases = None
        if args.phases:
            log(f"peak RSS by phase, in process: {args.phases} samples ...")
            phases = phases_in_process(fixture, work, max(1, args.phases // per_prompt), args.analysis)
        trace = None
        if args.trace:
            log(f"tracemalloc, in process: {args.trace} samples ...")
            trace = trace_in_process(fixture, work, max(1, args.trace // per_prompt))

    xs = np.array([r["samples"] for r in runs], dtype=float)
    ys = np.array([r["peak_rss"] for r in runs], dtype=float)
    slope, intercept = np.polyfit(xs, ys, 1) if len(runs) >= 2 else (float("nan"), float(ys[0]))
    secs = np.polyfit(xs, [r["wall_s"] for r in runs], 1) if len(runs) >= 2 else (float("nan"), 0.0)
    largest = runs[-1]
    measured_100k = largest["samples"] >= TARGET_SAMPLES
    at_100k = largest["beyond_baseline"] if measured_100k else intercept + slope * TARGET_SAMPLES - baseline["peak_rss"]
    result = {
        "machine": {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cores": os.cpu_count(),
            "load_average": os.getloadavg()[0],
        },
        "setup": {
            "samples_per_prompt": SAMPLES_PER_PROMPT,
            "models": MODELS,
            "max_new_tokens": MAX_NEW_TOKENS,
            "analysis": args.analysis,
        },
        "baseline": baseline,
        "runs": runs,
        "fit": {
            "bytes_per_sample": slope,
            "bytes_per_10k": slope * 10_000,
            "intercept": intercept,
            "seconds_per_10k": secs[0] * 10_000,
            "extrapolated_100k_seconds": secs[1] + secs[0] * TARGET_SAMPLES,
        },
        "phases": phases,
        "trace": trace,
        "targets": {
            "beyond_models_under_2GB_at_100k": {
                "value": at_100k, "target": TARGET_BYTES, "met": at_100k < TARGET_BYTES,
                "measured": measured_100k,
            },
            "does_not_grow": {"value": slope * 10_000, "target": GROWTH_BOUND, "met": slope * 10_000 < GROWTH_BOUND},
        },
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    report(result)


def report(r: dict[str, Any]) -> None:
    """The human-readable tables."""
    b, f, t = r["baseline"], r["fit"], r["targets"]
    print(f"machine: {r['machine']['cores']} cores, load average {r['machine']['load_average']:.1f}; "
          f"{r['machine']['date']}; tiny GPT-2 policy/reference/RM (hidden 16, 2 layers, 63 tokens), "
          f"{SAMPLES_PER_PROMPT} samples per prompt, max_new_tokens {MAX_NEW_TOKENS}"
          f"{'' if r['setup']['analysis'] else '; evals with --no-analysis'}")  # fmt: skip
    print(
        f"baseline eval (1 prompt x 1 sample, same models): peak RSS {b['peak_rss'] / MB:.0f} MB, {b['wall_s']:.1f} s"
    )
    print()
    print("| samples | prompts | wall | peak RSS | beyond baseline | peak at (of wall) | RSS at exit |")
    print("|---|---|---|---|---|---|---|")
    for run in r["runs"]:
        peak, beyond, final = run["peak_rss"] / MB, run["beyond_baseline"] / MB, run["final_rss"] / MB
        print(f"| {run['samples']:,} | {run['prompts']:,} | {run['wall_s']:.0f} s | {peak:.0f} MB | "
              f"{beyond:+.0f} MB | {run['peak_at']:.0%} | {final:.0f} MB |")  # fmt: skip
    print()
    print(f"fit: peak RSS grows {f['bytes_per_10k'] / MB:.1f} MB per 10k samples ({f['bytes_per_sample']:.0f} bytes "
          f"per sample); time {f['seconds_per_10k']:.0f} s per 10k samples, so 100k would take about "
          f"{f['extrapolated_100k_seconds'] / 60:.0f} min here")  # fmt: skip
    phases = r["phases"]
    if phases:
        print()
        print(f"peak RSS by phase, the same eval and its analysis in one process, {phases['samples']:,} samples "
              f"(VmRSS every 20 ms, charged to the innermost phase running):")  # fmt: skip
        print()
        print("| phase | peak RSS | beyond the baseline eval's peak |")
        print("|---|---|---|")
        for name, value in sorted(phases["peaks"].items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {value / MB:.0f} MB | {(value - b['peak_rss']) / MB:+.0f} MB |")
    trace = r["trace"]
    if trace:
        print()
        print(f"tracemalloc, in process, {trace['samples_per_model']:,} samples per model: Python allocations alive "
              f"after generation and KL of the policy, beyond those at the start of its unit: "
              f"{trace['policy_unit_growth'] / MB:.1f} MB = {trace['policy_unit_growth_per_sample']:.0f} bytes "
              f"per sample (traced peak {trace['traced_peak'] / MB:.0f} MB; held from Evaluation() on: "
              f"{trace['held_by_evaluation_init'] / MB:.1f} MB)")  # fmt: skip
        print()
        print("| allocated at (innermost rlhf_eval line) | bytes per sample | blocks | code |")
        print("|---|---|---|---|")
        for site in trace["policy_unit_sites"]:
            print(f"| {site['site']} | {site['bytes_per_sample']:.0f} | {site['blocks']:,} | `{site['code']}` |")
    print()
    print("| target | figure | |")
    print("|---|---|---|")
    big = t["beyond_models_under_2GB_at_100k"]
    how = "measured" if big["measured"] else "extrapolated along the fit"
    print(f"| peak RSS beyond the loaded models < 2 GB at 100k samples | {big['value'] / MB:.0f} MB ({how}) | "
          f"{verdict(big['met'])} |")  # fmt: skip
    grow = t["does_not_grow"]
    print(f"| does not grow with samples (< {GROWTH_BOUND / MB:.0f} MB per 10k) | "
          f"{grow['value'] / MB:.1f} MB per 10k | {verdict(grow['met'])} |")  # fmt: skip


if __name__ == "__main__":
    main()
