"""Per-checkpoint aggregates, kept by the writer so that reading ``checkpoint_summary`` costs
nothing like a scan of every sample.

``checkpoint_summary`` is the view every reader starts from (the CLI table, the gate, the
dashboard's overview, the report). Aggregating it from the per-sample rows on each read costs a
join of samples, KL, two scores and a pivot of every detector feature: seconds at a million
samples. Instead the single writer keeps ``checkpoint_stats`` (one row per checkpoint).

When: a checkpoint's aggregates are computed once its rows are complete. The evaluator stages a
refresh request for the checkpoints of a model once that model's samples, KL, scores and features
are staged (``Store.stage_refresh``); the flush that ingests those rows refreshes the requested
checkpoints in the same transaction, so a reader never sees rows without their aggregates or the
reverse. Refreshing on every flush instead would rescan the per-sample tables each few seconds
of an evaluation: sample ids are content hashes, so DuckDB cannot skip row groups, and one
refresh reads whole tables (30 s at 10M sample rows, docs/performance.md). A request is a staged
shard like any rows, so a run killed before its flush still gets its aggregates on the next start.

The view joins the aggregates to ``checkpoints`` on the keys they were computed for (model,
reference, generation, suite, samples per prompt, scorers): a checkpoint whose row changed (a
re-evaluation with more samples or another scorer) is left out until its aggregates are
refreshed, rather than shown with stale numbers.

The aggregates: means over samples (NULL scores left out of a mean and counted in
``proxy_null``/``gold_null``) and 95% normal-approximation half-widths over per-prompt means
(prompts are the unit): 1.959964 · sd(per-prompt means) / sqrt(number of prompts).
"""

from __future__ import annotations

from typing import Any

from rlhf_eval.sample_sums import mean, per_prompt_sums, prompt_mean

#: Detector features pivoted into the aggregates: feature name -> aggregate column.
FEATURE_COLUMNS = {
    "seq_rep_1": "seq_rep_1",
    "seq_rep_2": "seq_rep_2",
    "seq_rep_3": "seq_rep_3",
    "seq_rep_4": "seq_rep_4",
    "distinct_1": "distinct_1",
    "distinct_2": "distinct_2",
    "compression_ratio": "compression_ratio",
    "tail_loop": "loop_rate",
    "length_chars": "mean_chars",
    "length_words": "mean_words",
    "md_headers": "md_headers",
    "md_list_items": "md_list_items",
    "md_bold": "md_bold",
    "hedge": "hedge_rate",
    "apology": "apology_rate",
    "refusal": "refusal_rate",
    "closer": "closer_rate",
}

#: The checkpoint row's fields the aggregates depend on (they are stored with them).
KEY_COLUMNS = ("model_fp", "ref_fp", "gen_key", "suite_fp", "samples_per_prompt", "proxy_scorer", "gold_scorer")


def _half(name: str) -> str:
    """1.959964 · sd(per-prompt means) / sqrt(prompts with a mean)."""
    return f"1.959964 * stddev_samp({prompt_mean(name)}) / sqrt(count({prompt_mean(name)}))"


#: KL estimators averaged into the aggregates: ``kl`` column -> aggregate column.
KL_COLUMNS = {"k1": "kl_k1", "k2": "kl_k2", "k3": "kl_k3", "kl_full": "kl_full"}

#: Aggregates of the checkpoints of ``target``, from the per-prompt sums of ``per_prompt``
#: (``sample_sums.py``: each per-sample table joined to the selected samples' narrow rows and
#: summed per prompt, a statement per table, so the memory does not follow a checkpoint's samples
#: the way a pivot of every sample did); ``{ctes}`` is the ``WITH`` body that defines both. Means
#: over samples are sums over counts; the half-widths are over the per-prompt means.
_REFRESH = f"""
INSERT INTO checkpoint_stats BY NAME
WITH {{ctes}}
SELECT
    p.run, p.checkpoint, {", ".join(f"any_value(t.{k}) AS {k}" for k in KEY_COLUMNS)},
    count(*) AS n_prompts,
    sum(p.n) AS n_samples,
    {mean("kl_full")} AS kl,
    {", ".join(f"{mean(name)} AS {column}" for name, column in KL_COLUMNS.items())},
    {mean("proxy")} AS proxy_reward,
    {mean("gold")} AS gold_reward,
    sum(p.n) - coalesce(sum(p.proxy_n), 0) AS proxy_null,
    sum(p.n) - coalesce(sum(p.gold_n), 0) AS gold_null,
    {mean("length")} AS mean_length,
    {mean("eos")} AS eos_rate,
    {", ".join(f"{mean(name)} AS {column}" for name, column in FEATURE_COLUMNS.items())},
    {_half("kl_full")} AS kl_half, {_half("proxy")} AS proxy_half, {_half("gold")} AS gold_half,
    now() AS refreshed_at
FROM per_prompt p
JOIN target t ON t.run = p.run AND t.checkpoint = p.checkpoint
GROUP BY p.run, p.checkpoint
"""

_TOUCHED = "(run, checkpoint) IN (SELECT run, checkpoint FROM stats_touched)"

#: At most this many samples are aggregated by one statement of ``refresh_all`` (memory: its
#: joins hold a hash table over the selected samples' ids).
REFRESH_BATCH_SAMPLES = 1_000_000


def refresh_all(con: Any) -> None:
    """Recompute the aggregates of every checkpoint (after the migration that adds them), in
    statements of at most ``REFRESH_BATCH_SAMPLES`` samples each: one statement over a database
    of 10M samples runs out of memory under a 12 GB cap."""
    con.execute("DELETE FROM checkpoint_stats")
    sizes = con.execute(
        "SELECT c.run, c.checkpoint, coalesce(c.samples_per_prompt * s.n_prompts, 0) "
        "FROM checkpoints c LEFT JOIN suites s USING (suite_fp) ORDER BY c.model_fp, c.run, c.checkpoint"
    ).fetchall()
    for batch in batches_by_size([((run, ckpt), int(n)) for run, ckpt, n in sizes], REFRESH_BATCH_SAMPLES):
        refresh_checkpoints(con, batch)


def batches_by_size(items: list[tuple[tuple[str, str], int]], budget: int) -> list[list[tuple[str, str]]]:
    """Consecutive groups of keys whose sizes add up to at most ``budget`` (an item larger than
    the budget is a group of its own).

    >>> batches_by_size([(("a", "1"), 3), (("a", "2"), 3), (("b", "1"), 5)], 6)
    [[('a', '1'), ('a', '2')], [('b', '1')]]
    """
    groups: list[list[tuple[str, str]]] = []
    used = budget + 1
    for key, size in items:
        if used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size
    return groups


def refresh_checkpoints(con: Any, keys: list[tuple[str, str]]) -> None:
    """Recompute the aggregates of the (run, checkpoint) pairs in ``keys``, inside the caller's
    transaction. The pairs reach SQL as a registered Arrow table, never as text."""
    if not keys:
        return
    import pyarrow as pa

    runs, checkpoints = zip(*sorted(set(keys)), strict=True)
    con.register("stats_touched", pa.table({"run": list(runs), "checkpoint": list(checkpoints)}))
    try:
        con.execute(f"DELETE FROM checkpoint_stats WHERE {_TOUCHED}")
        with per_prompt_sums(con, _TOUCHED, [], list(FEATURE_COLUMNS)) as ctes:
            con.execute(_REFRESH.format(ctes=ctes))
    finally:
        con.unregister("stats_touched")
