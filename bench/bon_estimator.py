"""How fast is the exact best-of-n estimator, and how much resampling would the same accuracy
cost? Three ways to the best-of-n curve E_n[gold] for every n in {1, 2, 4, ...} ≤ N, side by
side in one run on the same synthetic pools:

    .venv/bin/python bench/bon_estimator.py             # 500 prompts x 10,000 samples (about 20 s)
    .venv/bin/python bench/bon_estimator.py --quick     # 50 prompts x 1,000 samples (seconds)
    .venv/bin/python bench/bon_estimator.py --json      # the figures as JSON on stdout

1. ``best_of_n_matrix``: every prompt at once (one argsort along the pools, one gather, one
   product with the (N x len(ns)) weight matrix w_i(n) = C(i − 1, n − 1)/C(N, n); tied proxy
   scores corrected block by block);
2. the per-prompt loop ``best_of_n_table`` (the analysis's path before ``best_of_n_matrix``);
3. Monte-Carlo resampling: for each prompt and n, draw R random n-subsets without replacement
   and average the gold of each subset's proxy argmax.

Accuracy is matched on the quantity the analysis reports, the mean over the P prompts of E_n.
The exact estimator's error is float rounding (~1e-12); Monte-Carlo's standard error of that
mean is sqrt(mean_p σ²_{p,n} / (P R)), where σ²_{p,n} is the variance of the picked sample's
gold. A practical tolerance τ (default 1e-3 of the gold standard deviation) needs
R_n = ceil(mean_p σ²_{p,n} / (P τ²)) draws per prompt and n. The script *measures* σ²_{p,n} and
the seconds per draw on a few prompts with R0 draws each (and checks the error model: the
z-scores of those estimates against the exact values have RMS ≈ 1), then *extrapolates* the time
of R_n draws for all P prompts linearly (draws are independent and vectorized in batches, so
time is linear in draws); it says which numbers are measured and which extrapolated.

Synthetic pools: gold ~ prompt effect + N(0, 1); proxy = 0.6 gold + 0.8 N(0, 1), rounded to
float32 as reward models emit it, which leaves a few tied proxy scores in about half the pools
of 10,000 (the tie path is part of what is timed). Targets (the performance issue): all n for
500 prompts x 10,000 samples in under 1 s, and at least 100x faster than Monte-Carlo at the same
accuracy. Absolute times drift on a shared machine; the ratios are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rlhf_eval.analysis.bon import best_of_n_matrix, best_of_n_table

TARGET_SECONDS = 1.0
TARGET_SPEEDUP = 100.0
TARGET_SHAPE = (500, 10_000)
CHUNK_ELEMENTS = 1 << 22  # random keys per Monte-Carlo batch (32 MB of float64)


def synthetic_pools(prompts: int, size: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(proxy, gold), each (prompts, size); proxy correlates 0.6 with gold and is float32-rounded."""
    rng = np.random.default_rng(seed)
    gold = rng.normal(0.0, 0.5, size=(prompts, 1)) + rng.normal(size=(prompts, size))
    proxy = (0.6 * gold + 0.8 * rng.normal(size=(prompts, size))).astype(np.float32).astype(np.float64)
    return proxy, gold


def median_seconds(call: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def per_prompt_loop(proxy: NDArray[np.float64], gold: NDArray[np.float64], ns: list[int]) -> NDArray[np.float64]:
    return np.stack([best_of_n_table(proxy[p], {"gold": gold[p]}, ns)["gold"] for p in range(len(proxy))])


def random_subsets(rng: np.random.Generator, size: int, n: int, draws: int) -> NDArray[np.int64]:
    """``draws`` uniform n-subsets of range(size), one per row. Small n (n² ≤ size): draw with
    replacement and redraw the rows that repeat an index (rare); larger n: the n smallest of
    ``size`` uniform keys (argpartition), which is uniform without replacement."""
    if n * n <= size:
        subsets = rng.integers(0, size, size=(draws, n))
        while True:
            ordered = np.sort(subsets, axis=1)
            repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
            if repeated.size == 0:
                return subsets
            subsets[repeated] = rng.integers(0, size, size=(repeated.size, n))
    return np.argpartition(rng.random((draws, size)), n - 1, axis=1)[:, :n]


def monte_carlo(
    proxy: NDArray[np.float64], gold: NDArray[np.float64], n: int, draws: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Mean and variance over ``draws`` random n-subsets of the gold of the subset's proxy argmax."""
    size = proxy.size
    chunk = max(1, CHUNK_ELEMENTS // max(size if n * n > size else n, 1))
    picked = []
    for start in range(0, draws, chunk):
        subsets = random_subsets(rng, size, n, min(chunk, draws - start))
        best = np.take_along_axis(subsets, proxy[subsets].argmax(axis=1)[:, None], axis=1)[:, 0]
        picked.append(gold[best])
    values = np.concatenate(picked)
    return float(values.mean()), float(values.var(ddof=1))


def measure_monte_carlo(
    proxy: NDArray[np.float64],
    gold: NDArray[np.float64],
    ns: list[int],
    exact: NDArray[np.float64],
    subset: int,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """Seconds per draw and the picked gold's variance for each n, measured on ``subset`` prompts;
    the z-scores of the estimates against the exact values."""
    rng = np.random.default_rng(seed + 1)
    seconds = np.zeros(len(ns))
    variance = np.zeros(len(ns))
    z = []
    for k, n in enumerate(ns):
        started = time.perf_counter()
        results = [monte_carlo(proxy[p], gold[p], n, draws, rng) for p in range(subset)]
        seconds[k] = (time.perf_counter() - started) / (subset * draws)
        variance[k] = float(np.mean([var for _, var in results]))
        for p, (mean, var) in enumerate(results):
            if var > 0:
                z.append((mean - exact[p, k]) / math.sqrt(var / draws))
    return {"seconds_per_draw": seconds, "variance": variance, "rms_z": float(np.sqrt(np.mean(np.square(z))))}


def matched_cost(measured: dict[str, Any], prompts: int, tolerance: float) -> tuple[NDArray[np.int64], float]:
    """Draws R_n per prompt and n for a standard error ``tolerance`` of the mean over prompts, and
    the extrapolated seconds for all prompts: Σ_n R_n · P · seconds per draw."""
    draws = np.ceil(measured["variance"] / (prompts * tolerance**2)).astype(np.int64)
    draws = np.maximum(draws, 1)
    return draws, float(np.sum(draws * prompts * measured["seconds_per_draw"]))


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=TARGET_SHAPE[0])
    parser.add_argument("--pool", type=int, default=TARGET_SHAPE[1], help="samples per prompt (N)")
    parser.add_argument("--quick", action="store_true", help="50 prompts x 1,000 samples")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="Monte-Carlo standard error, in gold sd")
    parser.add_argument("--mc-prompts", type=int, default=4, help="prompts on which Monte-Carlo is measured")
    parser.add_argument("--mc-draws", type=int, default=1024, help="draws per prompt and n measured (R0)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of the exact estimator (median shown)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.pool, args.mc_draws = 50, 1_000, 512
    prompts, size = args.prompts, args.pool
    ns = [2**k for k in range(int(math.log2(size)) + 1)]
    proxy, gold = synthetic_pools(prompts, size, args.seed)
    ranked = np.sort(proxy, axis=1)
    tied_share = float((ranked[:, 1:] == ranked[:, :-1]).any(axis=1).mean())
    gold_sd = float(gold.std(ddof=1))
    print(f"{prompts} prompts x {size} samples, n in {ns[0]}..{ns[-1]} ({len(ns)} values); "
          f"{tied_share:.0%} of pools have tied proxy scores", file=sys.stderr)  # fmt: skip

    exact_s, exact = median_seconds(lambda: best_of_n_matrix(proxy, gold, ns), args.repeats)
    loop_s, looped = median_seconds(lambda: per_prompt_loop(proxy, gold, ns), 1)
    agreement = float(np.max(np.abs(exact - looped)))
    print(f"exact {exact_s:.3f} s, per-prompt loop {loop_s:.2f} s; measuring Monte-Carlo ...", file=sys.stderr)
    subset = min(args.mc_prompts, prompts)
    measured = measure_monte_carlo(proxy, gold, ns, exact, subset, args.mc_draws, args.seed)
    tolerances = sorted({args.tolerance, 1e-2}, reverse=True)
    mc = {}
    for tol in tolerances:
        draws, seconds = matched_cost(measured, prompts, tol * gold_sd)
        mc[tol] = {"draws_per_prompt_and_n": draws.tolist(), "seconds": seconds, "ratio_to_exact": seconds / exact_s}
    at_target = mc[args.tolerance]
    full_size = (prompts, size) == TARGET_SHAPE
    result = {
        "shape": {"prompts": prompts, "pool": size, "ns": ns, "tied_pools": tied_share, "gold_sd": gold_sd},
        "measured": {
            "exact_s": exact_s,
            "per_prompt_loop_s": loop_s,
            "loop_over_exact": loop_s / exact_s,
            "max_abs_difference_exact_vs_loop": agreement,
            "monte_carlo_prompts": subset,
            "monte_carlo_draws": args.mc_draws,
            "monte_carlo_seconds_per_draw": measured["seconds_per_draw"].tolist(),
            "monte_carlo_picked_gold_variance": measured["variance"].tolist(),
            "monte_carlo_rms_z": measured["rms_z"],
        },
        "extrapolated_monte_carlo": {f"{tol:g} sd": value for tol, value in mc.items()},
        "targets": {
            "exact_under_1s": {
                "value": exact_s,
                "target": TARGET_SECONDS,
                "met": exact_s < TARGET_SECONDS,
                "applies": full_size,
            },
            "speedup_over_monte_carlo": {
                "value": at_target["ratio_to_exact"],
                "target": TARGET_SPEEDUP,
                "tolerance_sd": args.tolerance,
                "met": at_target["ratio_to_exact"] >= TARGET_SPEEDUP,
            },
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"best-of-n for {prompts} prompts x {size} samples, {len(ns)} values of n ({tied_share:.0%} of pools tied)")
    print(f"  exact, all prompts at once (best_of_n_matrix)  {exact_s:10.3f} s   measured, median of {args.repeats}")
    print(f"  exact, per-prompt loop (best_of_n_table)       {loop_s:10.3f} s   measured; "
          f"{loop_s / exact_s:.0f}x the matrix; max |difference| {agreement:.1e}")  # fmt: skip
    for tol, value in mc.items():
        print(f"  Monte-Carlo, SE {tol:g} gold sd{'':<18}{value['seconds']:10.1f} s   extrapolated; "
              f"R_n = {min(value['draws_per_prompt_and_n'])}..{max(value['draws_per_prompt_and_n'])} draws; "
              f"{value['ratio_to_exact']:.0f}x the matrix")  # fmt: skip
    print(
        f"  (Monte-Carlo measured on {subset} prompts x {args.mc_draws} draws per n; "
        f"RMS z of its estimates vs exact {measured['rms_z']:.2f}, 1 if its error model holds)"
    )
    note = "" if full_size else f" (the target is for {TARGET_SHAPE[0]} x {TARGET_SHAPE[1]}; this size is indicative)"
    print(f"target: exact under {TARGET_SECONDS:g} s: {exact_s:.3f} s, {verdict(exact_s < TARGET_SECONDS)}{note}")
    ratio = at_target["ratio_to_exact"]
    print(f"target: >= {TARGET_SPEEDUP:g}x faster than Monte-Carlo at SE {args.tolerance:g} gold sd: "
          f"{ratio:.0f}x, {verdict(ratio >= TARGET_SPEEDUP)}")  # fmt: skip


if __name__ == "__main__":
    main()
