"""Read a run's per-prompt data from the database into a ``Curve`` (the analysis's only I/O).

An RL run (any run of ``checkpoints``) is read from ``run_samples(run)`` (``checkpoint_samples``
restricted to the run before the features are pivoted): per checkpoint and
prompt, the mean over the prompt's samples of each KL estimator, the rewards and the detector
features. A best-of-n run (``bon_runs``) is computed from its pool: per prompt, the exact E_n of
every value over the pool (``rlhf_eval.analysis.bon``), with samples that have no proxy score
left out of the pool; prompts whose pools have the same size are computed together. All SQL is
parameterized.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
from numpy.typing import NDArray

from rlhf_eval.analysis.bon import best_of_n_matrix, bon_kl, duplicate_fraction, kl_estimates_differ, pool_kl
from rlhf_eval.analysis.curves import Curve
from rlhf_eval.analysis.length import bucket_edges, bucket_of
from rlhf_eval.detectors import FAMILIES
from rlhf_eval.errors import UserInputError
from rlhf_eval.sample_sums import numbered_checkpoints, per_prompt_sums, prompt_mean, selected_samples_ctes

#: KL estimators a run's d = sqrt(KL) can use: RL runs' checkpoint_samples columns, best-of-n's two.
RL_KL_ESTIMATORS = ("kl_full", "kl_k1", "kl_k2", "kl_k3")
BON_KL_ESTIMATORS = ("analytic", "plugin")
DEFAULT_RL_KL = "kl_full"
DEFAULT_BON_KL = "analytic"

#: Per-sample values averaged per prompt (rewards, length, detectors): checkpoint_samples columns.
SAMPLE_VALUES = (
    "proxy_reward",
    "gold_reward",
    "n_tokens",
    "ended_eos",
    *(name for names in FAMILIES.values() for name in names),
)


@dataclass(frozen=True)
class RunData:
    """A run's curve plus what the length and agreement measures need from the raw samples."""

    curve: Curve
    reference_gold: NDArray[np.float64]  # the reference's per-sample gold
    reference_lengths: NDArray[np.float64]  # its per-sample response tokens
    length_edges: list[float]
    taus: dict[str, float]  # point label -> Kendall tau(proxy, gold) over its samples (RL only)
    bon_kl: dict[str, tuple[float, float, bool, float]]  # label -> (analytic, plug-in, differ, duplicates)
    bon_extra: dict[str, NDArray[np.float64]]  # best-of-n only: (K, P) KLs, duplicate fraction, pool size
    disagreement: dict[str, float] = field(default_factory=dict)  # label -> mean ensemble disagreement


def bon_run_rows(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    cursor = con.execute("SELECT * FROM bon_runs")
    names = [d[0] for d in cursor.description or []]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def analysable_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every run of ``checkpoints`` and ``bon_runs``, without the runs that only hold a best-of-n pool."""
    bon = bon_run_rows(con)
    pools = {row["pool_run"] for row in bon.values()}
    rl = [r[0] for r in con.execute("SELECT DISTINCT run FROM checkpoints ORDER BY run").fetchall()]
    return sorted({*(r for r in rl if r not in pools), *bon})


def load_run(
    con: duckdb.DuckDBPyConnection,
    run: str,
    kl_estimator: str | None = None,
    length_buckets: int = 5,
    checkpoints: Sequence[str] | None = None,
) -> RunData:
    """The ``RunData`` of ``run``; an unknown run or KL estimator is a ``UserInputError``. With
    ``checkpoints``, an RL run is read for those checkpoints and its reference only (what a
    comparison of two points needs), so the cost does not grow with the run's length."""
    bon = bon_run_rows(con)
    if run in bon:
        estimator = kl_estimator or DEFAULT_BON_KL
        if estimator not in BON_KL_ESTIMATORS:
            raise UserInputError(
                f"--kl-estimator {estimator!r}: a best-of-n run ({run}) uses one of {', '.join(BON_KL_ESTIMATORS)}"
            )
        return load_bon_run(con, bon[run], estimator, length_buckets)
    estimator = kl_estimator or DEFAULT_RL_KL
    if estimator not in RL_KL_ESTIMATORS:
        raise UserInputError(f"--kl-estimator {estimator!r}: use one of {', '.join(RL_KL_ESTIMATORS)}")
    only = None
    if checkpoints is not None:
        references = fetch(con, "SELECT checkpoint FROM checkpoints WHERE run = ? AND is_reference", [run])
        only = sorted({*checkpoints, *(r["checkpoint"] for r in references)})
    return load_rl_run(con, run, estimator, length_buckets, only)


#: Where the per-prompt sums of ``sample_sums`` keep each per-sample value of SAMPLE_VALUES, and
#: each RL KL estimator.
SUM_NAMES = {"proxy_reward": "proxy", "gold_reward": "gold", "n_tokens": "length", "ended_eos": "eos"}
KL_SUM_NAMES = {"kl_full": "kl_full", "kl_k1": "k1", "kl_k2": "k2", "kl_k3": "k3"}
#: The checkpoints of a run ``load_rl_run`` reads: the run, and its listed checkpoints when the list
#: is not NULL (parameters: run, list, list).
RUN_TARGET = "run = ? AND (?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], checkpoint))"
FEATURE_NAMES = [name for names in FAMILIES.values() for name in names]


def per_prompt_sql(kl_estimator: str, ctes: str) -> str:
    """Per checkpoint and prompt, the mean over the prompt's samples of the KL estimator, the
    log length and every SAMPLE_VALUES column, from the per-prompt sums ``ctes`` defines
    (``sample_sums.per_prompt_sums``)."""
    # kl_estimator and the value names are fixed identifiers from this module, never user text.
    values = ", ".join(f"{prompt_mean(SUM_NAMES.get(name, name))} AS {name}" for name in SAMPLE_VALUES)
    return (
        f"WITH {ctes} "
        f"SELECT t.checkpoint, t.step, t.is_reference, t.method, p.prompt_id, "
        f"{prompt_mean(KL_SUM_NAMES[kl_estimator])} AS kl, {prompt_mean('log_length')} AS log_length, {values} "
        "FROM per_prompt p JOIN target t ON t.run = p.run AND t.checkpoint = p.checkpoint"
    )


#: Each sample of the selected checkpoints with its checkpoint's number ``ck``
#: (``sample_sums.numbered_checkpoints``, as CHECKPOINT_LABELS_SQL lists them), its length and its proxy and
#: gold reward (NULL where missing), ordered by checkpoint, prompt id and sample. The rewards are
#: taken per sample from the scores of the two scorers, joined to the samples' narrow rows; those
#: rows carry integers for the checkpoint and for the prompt's rank by id, not their texts, so the
#: read's hash tables and sort hold a sample id and three integers per sample.
SAMPLE_REWARDS_SQL = f"""
WITH numbered AS MATERIALIZED (
    {numbered_checkpoints(RUN_TARGET)}
), ranked AS (
    SELECT suite_fp, idx, row_number() OVER (PARTITION BY suite_fp ORDER BY prompt_id) AS prank
    FROM prompts WHERE suite_fp IN (SELECT suite_fp FROM numbered)
), ns AS (
    SELECT c.ck, r.prank, s.sample_idx, s.sample_id, s.n_tokens
    FROM numbered c
    JOIN ranked r ON r.suite_fp = c.suite_fp
    JOIN prompts p ON p.suite_fp = r.suite_fp AND p.idx = r.idx
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
     AND s.sample_idx < c.samples_per_prompt
), rewards AS (
    SELECT ns.ck, ns.prank, ns.sample_idx,
           max(v.value) FILTER (WHERE v.scorer_id = c.proxy_scorer) AS proxy_reward,
           max(v.value) FILTER (WHERE v.scorer_id = c.gold_scorer) AS gold_reward
    FROM scores v
    JOIN ns ON v.sample_id = ns.sample_id
    JOIN numbered c ON c.ck = ns.ck AND (v.scorer_id = c.proxy_scorer OR v.scorer_id = c.gold_scorer)
    GROUP BY ns.ck, ns.prank, ns.sample_idx
)
SELECT ns.ck, ns.n_tokens, r.proxy_reward, r.gold_reward
FROM ns LEFT JOIN rewards r ON r.ck = ns.ck AND r.prank = ns.prank AND r.sample_idx = ns.sample_idx
ORDER BY ns.ck, ns.prank, ns.sample_idx
"""
#: The selected checkpoints' labels, in the order of their numbers in SAMPLE_REWARDS_SQL.
CHECKPOINT_LABELS_SQL = f"SELECT checkpoint, is_reference FROM ({numbered_checkpoints(RUN_TARGET)}) ORDER BY ck"


@dataclass(frozen=True)
class SampleRewards:
    """The selected checkpoints' samples, one entry per sample in SAMPLE_REWARDS_SQL's order."""

    checkpoint: NDArray[Any]  # labels (object)
    is_reference: NDArray[np.bool_]
    n_tokens: NDArray[np.float64]
    proxy: NDArray[np.float64]  # NaN where missing
    gold: NDArray[np.float64]


def sample_rewards(con: duckdb.DuckDBPyConnection, params: Sequence[Any]) -> SampleRewards:
    columns = con.execute(SAMPLE_REWARDS_SQL, list(params)).fetchnumpy()
    listed = con.execute(CHECKPOINT_LABELS_SQL, list(params)).fetchall()
    labels = np.array([label for label, _ in listed], dtype=object)
    references = np.array([bool(is_reference) for _, is_reference in listed], dtype=bool)
    index = np.asarray(columns["ck"], dtype=np.int64) - 1

    def floats(name: str) -> NDArray[np.float64]:
        return np.ma.filled(np.ma.asarray(columns[name]).astype(np.float64), np.nan)

    return SampleRewards(
        checkpoint=labels[index],
        is_reference=references[index],
        n_tokens=floats("n_tokens"),
        proxy=floats("proxy_reward"),
        gold=floats("gold_reward"),
    )


def load_rl_run(
    con: duckdb.DuckDBPyConnection, run: str, kl_estimator: str, length_buckets: int, only: list[str] | None = None
) -> RunData:
    """A run's curve and per-sample data. The per-prompt means are summed per prompt in SQL as
    each per-sample table is joined (``sample_sums``), and the per-sample values the measures
    need (every sample's proxy and gold reward and length) are read as narrow arrays: the reads
    hold no wide row per sample, so their memory does not grow with the run the way a read of
    ``run_samples`` did (docs/performance.md, "Memory")."""
    params = [run, only, only]
    with per_prompt_sums(con, RUN_TARGET, params, FEATURE_NAMES) as ctes:
        rows = fetch(con, per_prompt_sql(kl_estimator, ctes), [])
    if not rows:
        raise UserInputError(f"run {run!r}: no evaluated samples in the database; evaluate it with `rlhf-eval eval`")
    points = sorted(
        {(not r["is_reference"], r["step"], r["checkpoint"]) for r in rows},
    )
    if points[0][0]:
        raise UserInputError(f"run {run!r}: no reference checkpoint stored; re-run `rlhf-eval eval` with --ref")
    labels = [label for _, _, label in points]
    position = {label: i for i, label in enumerate(labels)}
    prompt_ids = sorted({r["prompt_id"] for r in rows})
    column = {pid: j for j, pid in enumerate(prompt_ids)}
    names = ("kl", "log_length", *SAMPLE_VALUES)
    matrices = {name: np.full((len(labels), len(prompt_ids)), np.nan) for name in names}
    methods: dict[str, str] = {}
    for row in rows:
        i, j = position[row["checkpoint"]], column[row["prompt_id"]]
        methods[row["checkpoint"]] = row["method"]
        for name in names:
            value = row[name]
            matrices[name][i, j] = np.nan if value is None else value
    samples = sample_rewards(con, params)
    reference = samples.is_reference
    ref_gold, ref_proxy, ref_lengths = samples.gold[reference], samples.proxy[reference], samples.n_tokens[reference]
    edges = bucket_edges(ref_lengths, length_buckets)
    shares = bucket_shares(con, params, edges, labels, prompt_ids)
    metrics = {
        "proxy": matrices["proxy_reward"],
        "gold": matrices["gold_reward"],
        "log_length": matrices["log_length"],
        **{name: matrices[name] for name in SAMPLE_VALUES},
        **shares,
    }
    method = next((m for label, m in methods.items() if label != labels[0]), methods[labels[0]]) or "unknown"
    curve = Curve(
        run=run,
        method=method,
        kind="rl",
        labels=tuple(labels),
        steps=tuple(int(step) for _, step, _ in points),
        kl=matrices["kl"],
        metrics=metrics,
        reference_sd={"proxy": nan_sd(ref_proxy), "gold": nan_sd(ref_gold)},
        kl_estimator=kl_estimator,
        prompt_ids=tuple(prompt_ids),
    )
    disagreement = ensemble_disagreements(con, run, params)
    return RunData(curve, ref_gold, ref_lengths, edges, rl_taus(samples), {}, {}, disagreement)


def bucket_shares(
    con: duckdb.DuckDBPyConnection,
    params: Sequence[Any],
    edges: Sequence[float],
    labels: Sequence[str],
    prompt_ids: Sequence[str],
) -> dict[str, NDArray[np.float64]]:
    """``length_bucket_<b>`` -> (K, P) share of each point's samples on each prompt in bucket b."""
    rows = fetch(
        con,
        f"WITH {selected_samples_ctes(RUN_TARGET)} "
        "SELECT checkpoint, prompt_id, len(list_filter(?::DOUBLE[], lambda e: e <= n_tokens)) AS bucket, count(*) AS n "
        "FROM cs GROUP BY checkpoint, prompt_id, bucket",
        [*params, list(edges)],
    )
    position = {label: i for i, label in enumerate(labels)}
    column = {pid: j for j, pid in enumerate(prompt_ids)}
    counts = np.zeros((len(edges) + 1, len(labels), len(prompt_ids)))
    for row in rows:
        counts[row["bucket"], position[row["checkpoint"]], column[row["prompt_id"]]] += row["n"]
    totals = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)
    return {f"length_bucket_{b}": shares[b] for b in range(len(edges) + 1)}


def rl_taus(samples: SampleRewards) -> dict[str, float]:
    """Kendall tau-b between proxy and gold over each checkpoint's samples that have both."""
    from rlhf_eval.analysis.agreement import kendall_tau

    both = np.isfinite(samples.proxy) & np.isfinite(samples.gold)
    labels, proxy, gold = samples.checkpoint[both], samples.proxy[both], samples.gold[both]
    return {str(label): kendall_tau(proxy[labels == label], gold[labels == label]) for label in dict.fromkeys(labels)}


def ensemble_disagreements(con: duckdb.DuckDBPyConnection, run: str, params: Sequence[Any]) -> dict[str, float]:
    """Mean disagreement of the proxy ensemble over each checkpoint's samples (empty when the
    run's proxy is a single scorer): members standardized on the reference's samples."""
    import json

    from rlhf_eval.analysis.agreement import ensemble_disagreement

    spec_rows = fetch(
        con,
        "SELECT DISTINCT s.spec FROM checkpoints c JOIN scorers s ON s.scorer_id = c.proxy_scorer "
        "WHERE c.run = ? AND s.kind = 'ensemble'",
        [run],
    )
    if len(spec_rows) != 1:
        return {}
    members = list(json.loads(spec_rows[0]["spec"])["members"])
    rows = fetch(
        con,
        f"WITH {selected_samples_ctes(RUN_TARGET)} "
        "SELECT cs.checkpoint, cs.is_reference, cs.sample_id, sc.scorer_id, sc.value "
        "FROM cs JOIN scores sc ON sc.sample_id = cs.sample_id "
        "WHERE list_contains(?, sc.scorer_id) AND sc.value IS NOT NULL "
        "ORDER BY cs.checkpoint, cs.sample_id, sc.scorer_id",
        [*params, members],
    )
    by_sample: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    reference: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_sample[(row["checkpoint"], row["sample_id"])][row["scorer_id"]] = row["value"]
        if row["is_reference"]:
            reference[row["scorer_id"]].append(row["value"])
    means = [float(np.mean(reference[m])) if reference[m] else float("nan") for m in members]
    sds = [float(np.std(reference[m])) if len(reference[m]) > 1 else float("nan") for m in members]
    if not all(np.isfinite(sd) and sd > 0 for sd in sds):
        return {}
    per_checkpoint: dict[str, list[list[float]]] = defaultdict(list)
    for (checkpoint, _), values in by_sample.items():
        if len(values) == len(members):
            per_checkpoint[checkpoint].append([values[m] for m in members])
    return {
        checkpoint: float(ensemble_disagreement(np.array(samples).T, means, sds).mean())
        for checkpoint, samples in per_checkpoint.items()
    }


POOL_SQL = (
    "SELECT prompt_id, sample_idx, hash(response) AS response_key, "
    + ", ".join(f"{name}::DOUBLE AS {name}" for name in SAMPLE_VALUES)
    + " FROM run_samples(?, checkpoint_names := [?]) ORDER BY prompt_id, sample_idx"
)


def load_bon_run(
    con: duckdb.DuckDBPyConnection, spec: dict[str, Any], kl_estimator: str, length_buckets: int
) -> RunData:
    rows = fetch(con, POOL_SQL, [spec["pool_run"], spec["pool_checkpoint"]])
    run = spec["run"]
    if not rows:
        raise UserInputError(f"run {run!r}: its pool ({spec['pool_run']}) has no samples; run `rlhf-eval bon` again")
    ns = sorted(int(n) for n in spec["ns"])
    pools: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["proxy_reward"] is not None and np.isfinite(row["proxy_reward"]):
            pools[row["prompt_id"]].append(row)
    prompt_ids = sorted(pools)
    if not prompt_ids:
        raise UserInputError(f"run {run!r}: no sample of its pool has a finite proxy score; check the --proxy scorer")
    every = [row for pid in prompt_ids for row in pools[pid]]
    ref_gold = np.array([nan_if_none(r["gold_reward"]) for r in every])
    ref_proxy = np.array([r["proxy_reward"] for r in every], dtype=float)
    ref_lengths = np.array([nan_if_none(r["n_tokens"]) for r in every])
    edges = bucket_edges(ref_lengths, length_buckets)
    names = [*SAMPLE_VALUES, "log_length", *(f"length_bucket_{b}" for b in range(len(edges) + 1))]
    table = {name: np.full((len(ns), len(prompt_ids)), np.nan) for name in names}
    kl_analytic = np.array([bon_kl(n) for n in ns])
    kl_plugin = np.full((len(ns), len(prompt_ids)), np.nan)
    duplicates = np.full(len(prompt_ids), np.nan)
    by_size: dict[int, list[int]] = defaultdict(list)
    for j, pid in enumerate(prompt_ids):
        by_size[len(pools[pid])].append(j)
    for size, same_size in by_size.items():
        # Pools of one size share the weights: all their E_n in one product (best_of_n_matrix),
        # in chunks of prompts that keep the stacked values near 32 MB.
        usable = [n for n in ns if n <= size]
        chunk = max(1, 4_000_000 // (size * len(names)))
        for start in range(0, len(same_size), chunk):
            members = same_size[start : start + chunk]
            group = [pools[prompt_ids[j]] for j in members]
            proxy = np.array([[r["proxy_reward"] for r in pool] for pool in group], dtype=float)
            values = {name: np.array([[nan_if_none(r[name]) for r in p] for p in group]) for name in SAMPLE_VALUES}
            values["log_length"] = np.log1p(values["n_tokens"])
            buckets = bucket_of(values["n_tokens"], edges)
            for b in range(len(edges) + 1):
                values[f"length_bucket_{b}"] = (buckets == b).astype(float)
            expectations = best_of_n_matrix(proxy, np.stack([values[name] for name in names]), usable)
            for v, name in enumerate(names):
                table[name][: len(usable), members] = expectations[v].T
    for j, pid in enumerate(prompt_ids):
        pool = pools[pid]
        proxy = np.array([r["proxy_reward"] for r in pool], dtype=float)
        keys = [r["response_key"] for r in pool]
        duplicates[j] = duplicate_fraction(keys)
        for i, n in enumerate(n for n in ns if n <= len(pool)):
            kl_plugin[i, j] = pool_kl(proxy, n, keys)
    analytic_matrix = np.repeat(kl_analytic[:, None], len(prompt_ids), axis=1)
    analytic_matrix[np.isnan(kl_plugin)] = np.nan
    kl = analytic_matrix if kl_estimator == "analytic" else kl_plugin
    labels = tuple(f"n={n}" for n in ns)
    metrics = {"proxy": table["proxy_reward"], "gold": table["gold_reward"], **table}
    curve = Curve(
        run=run,
        method="bon",
        kind="bon",
        labels=labels,
        steps=tuple(ns),
        kl=kl,
        metrics=metrics,
        reference_sd={"proxy": nan_sd(ref_proxy), "gold": nan_sd(ref_gold)},
        kl_estimator=kl_estimator,
        prompt_ids=tuple(prompt_ids),
    )
    bon_info = {}
    for i, label in enumerate(labels):
        analytic = float(kl_analytic[i])
        plugin = float(np.nanmean(kl_plugin[i])) if np.isfinite(kl_plugin[i]).any() else float("nan")
        bon_info[label] = (analytic, plugin, kl_estimates_differ(analytic, plugin), float(np.nanmean(duplicates)))
    extra = {
        "kl_analytic": analytic_matrix,
        "kl_plugin": kl_plugin,
        "duplicate_fraction": np.tile(duplicates, (len(ns), 1)),
    }
    pool_sizes = np.array([len(pools[pid]) for pid in prompt_ids], dtype=float)
    extra["pool"] = np.tile(pool_sizes, (len(ns), 1))
    return RunData(curve, ref_gold, ref_lengths, edges, {}, bon_info, extra)


def bon_value_rows(data: RunData) -> list[dict[str, Any]]:
    """``bon_values`` rows of a best-of-n run: E_n of every stored metric per prompt."""
    curve = data.curve
    stored = {name: curve.metrics[name] for name in SAMPLE_VALUES} | data.bon_extra
    rows = []
    for i, n in enumerate(curve.steps):
        for j, pid in enumerate(curve.prompt_ids):
            for name, matrix in stored.items():
                value = float(matrix[i, j])
                if np.isfinite(value) or name in ("proxy_reward", "gold_reward"):
                    rows.append(
                        {
                            "run": curve.run,
                            "n": int(n),
                            "prompt_id": pid,
                            "metric": name,
                            "value": value if np.isfinite(value) else None,
                        }
                    )
    return rows


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def nan_if_none(value: Any) -> float:
    return float("nan") if value is None else float(value)


def nan_sd(values: NDArray[np.float64]) -> float:
    """Sample standard deviation of the finite values (NaN with fewer than 2)."""
    finite = values[np.isfinite(values)]
    return float(finite.std(ddof=1)) if finite.size >= 2 else float("nan")
