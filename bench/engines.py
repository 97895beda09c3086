"""``--engine local`` against ``--engine ray`` on the same evaluation, side by side in one run.

    .venv/bin/python bench/engines.py            # end_to_end.py's models: 5 GPT-2s, 2 RMs, 16 x 4 x 32
    .venv/bin/python bench/engines.py --quick    # 6 prompts x 2 samples x 16 new tokens
    .venv/bin/python bench/engines.py --json

The models are ``bench/end_to_end.py``'s (a ~12M-parameter GPT-2 reference, a Trainer run of 4
noisy checkpoints, two reward models with their own tokenizer), built offline. Both engines run
in this process on new databases: the local runner, then the Ray pipeline on a local cluster
started beforehand with ``--cpus`` CPUs (its start is timed apart: a cluster is usually
running already). The Ray run's rows must equal the local run's (samples, KL, scores, features
and the checkpoint aggregates; floats to fp32 rounding), and a rerun on Ray's database must
compute nothing. On a machine with few cores the Ray figure shows the engine's overhead (its
stages share the same cores, plus serialization between them); the engine is for clusters with
one GPU per actor, where generation, KL and scoring of different checkpoints run at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb


def end_to_end() -> Any:
    """``bench/end_to_end.py`` as a module (its model builder and eval config)."""
    path = Path(__file__).with_name("end_to_end.py")
    spec = importlib.util.spec_from_file_location("bench_end_to_end", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TABLES = {
    "samples": "SELECT * EXCLUDE (eval_id) FROM samples ORDER BY sample_id",
    "kl": "SELECT * FROM kl ORDER BY ALL",
    "scores": "SELECT * FROM scores ORDER BY ALL",
    "features": "SELECT * FROM features ORDER BY ALL",
    "summary": "SELECT * EXCLUDE (eval_id, evaluated_at) FROM checkpoint_summary ORDER BY ALL",
}


def stored(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}
    finally:
        con.close()


def differences(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """Where two databases' rows differ (floats compared to fp32 rounding, 1e-5 relative)."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6)
        return bool(x == y)

    found = []
    for name in TABLES:
        if len(a[name]) != len(b[name]):
            found.append(f"{name}: {len(a[name])} rows vs {len(b[name])}")
            continue
        bad = sum(not all(same(x, y) for x, y in zip(r, s, strict=True)) for r, s in zip(a[name], b[name], strict=True))
        if bad:
            found.append(f"{name}: {bad} rows differ")
    return found


def main() -> None:
    e2e = end_to_end()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="6 prompts x 2 samples x 16 new tokens")
    parser.add_argument("--cpus", type=int, default=0, help="CPUs of the local Ray cluster (0: all)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.samples, args.max_new_tokens = 6, 2, 16
    # end_to_end.py's model sizes (its defaults)
    model_args = argparse.Namespace(
        vocab=3000, hidden=384, layers=6, heads=6, rm_hidden=256, rm_layers=4, rm_heads=4, noise=0.05, seed=0
    )
    sizes = e2e.Sizes(args.prompts, args.samples, args.max_new_tokens, 1.0, 1.0, 0)

    from rlhf_eval.pipeline import evaluate

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="rlhf_eval_engines_") as temp:
        root = Path(temp)
        world = e2e.build_world(root / "models", model_args, sizes)
        say(f"models: {world.params}; local runner ...")
        extra = {"samples": args.samples, "max_new_tokens": args.max_new_tokens}
        local_config = replace(e2e.eval_config(world, root / "local.duckdb"), **extra)
        started = time.perf_counter()
        local = evaluate(local_config)
        local_s = time.perf_counter() - started
        say(f"local {local_s:.1f} s; starting a local Ray cluster ...")

        import ray

        started = time.perf_counter()
        ray.init(num_cpus=args.cpus or None, include_dashboard=False, log_to_driver=False)
        start_s = time.perf_counter() - started
        try:
            ray_config = replace(local_config, db=str(root / "ray.duckdb"), engine="ray")
            started = time.perf_counter()
            on_ray = evaluate(ray_config)
            ray_s = time.perf_counter() - started
            started = time.perf_counter()
            rerun = evaluate(ray_config)
            rerun_s = time.perf_counter() - started
            cpus = int(ray.cluster_resources().get("CPU", 0))
        finally:
            ray.shutdown()
        diff = differences(stored(root / "ray.duckdb"), stored(root / "local.duckdb"))

    figures = {
        "samples": local.stats.samples_generated,
        "local_seconds": round(local_s, 2),
        "ray_seconds": round(ray_s, 2),
        "ray_cluster_start_seconds": round(start_s, 2),
        "ray_over_local": round(ray_s / local_s, 2),
        "ray_rerun_seconds": round(rerun_s, 3),
        "ray_rerun_cached": rerun.cached,
        "ray_cpus": cpus,
        "same_rows": not diff,
        "differences": diff,
        "ray_work": on_ray.stats.work_done,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        size = f"{args.prompts} prompts x {args.samples} samples x {args.max_new_tokens} tokens"
        print(f"one evaluation: 5 models x {size}")
        print(f"  --engine local (this process)                 {local_s:8.1f} s")
        ratio = f"{ray_s / local_s:.2f}x the local time"
        print(f"  --engine ray (local cluster, {cpus} CPUs)           {ray_s:8.1f} s   {ratio}")
        print(f"  Ray cluster start (apart)                      {start_s:8.1f} s")
        print(f"  rerun on Ray's database (cached: {rerun.cached})       {rerun_s:8.3f} s")
        print(f"  rows: {'identical' if not diff else 'DIFFERENT: ' + '; '.join(diff)}")
    if diff:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
