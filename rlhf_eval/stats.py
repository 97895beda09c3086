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

_PIVOT = ",\n        ".join(f"max(f.value) FILTER (WHERE f.feature = '{name}') AS {name}" for name in FEATURE_COLUMNS)
_MEANS = ",\n    ".join(f"avg(r.{name}) AS {column}" for name, column in FEATURE_COLUMNS.items())

#: Aggregates of the checkpoints selected by ``{target}`` (a fixed SQL fragment chosen by the code,
#: never user text). Features are pivoted only for the selected checkpoints' samples.
_REFRESH = f"""
INSERT INTO checkpoint_stats BY NAME
WITH target AS (
    SELECT * FROM checkpoints WHERE {{target}}
), cs AS (
    SELECT c.run, c.checkpoint, {", ".join(f"c.{k}" for k in KEY_COLUMNS)},
           s.sample_id, s.prompt_id, s.n_tokens, s.ended_eos
    FROM target c
    JOIN prompts p ON p.suite_fp = c.suite_fp
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
     AND s.sample_idx < c.samples_per_prompt
), ids AS (
    SELECT DISTINCT sample_id FROM cs
), feats AS (
    SELECT f.sample_id,
        {_PIVOT}
    FROM features f
    WHERE f.sample_id IN (SELECT sample_id FROM ids)
    GROUP BY f.sample_id
), k AS (  -- the selected samples' rows only: a LEFT JOIN to a whole table hashes all of it
    SELECT * FROM kl WHERE sample_id IN (SELECT sample_id FROM ids)
), sc AS (
    SELECT sample_id, scorer_id, value FROM scores WHERE sample_id IN (SELECT sample_id FROM ids)
), r AS (
    SELECT cs.*, k.k1, k.k2, k.k3, k.kl_full, px.value AS proxy_reward, gd.value AS gold_reward,
           feats.* EXCLUDE (sample_id)
    FROM cs
    LEFT JOIN k ON k.sample_id = cs.sample_id AND k.ref_fp = cs.ref_fp
    LEFT JOIN sc px ON px.sample_id = cs.sample_id AND px.scorer_id = cs.proxy_scorer
    LEFT JOIN sc gd ON gd.sample_id = cs.sample_id AND gd.scorer_id = cs.gold_scorer
    LEFT JOIN feats ON feats.sample_id = cs.sample_id
), per_prompt AS (
    SELECT run, checkpoint, prompt_id,
           avg(kl_full) AS kl, avg(proxy_reward) AS proxy, avg(gold_reward) AS gold
    FROM r
    GROUP BY run, checkpoint, prompt_id
), spread AS (
    SELECT run, checkpoint,
           1.959964 * stddev_samp(kl) / sqrt(count(kl)) AS kl_half,
           1.959964 * stddev_samp(proxy) / sqrt(count(proxy)) AS proxy_half,
           1.959964 * stddev_samp(gold) / sqrt(count(gold)) AS gold_half
    FROM per_prompt
    GROUP BY run, checkpoint
)
SELECT
    r.run, r.checkpoint, {", ".join(f"any_value(r.{k}) AS {k}" for k in KEY_COLUMNS)},
    count(DISTINCT r.prompt_id) AS n_prompts,
    count(*) AS n_samples,
    avg(r.kl_full) AS kl,
    avg(r.k1) AS kl_k1, avg(r.k2) AS kl_k2, avg(r.k3) AS kl_k3, avg(r.kl_full) AS kl_full,
    avg(r.proxy_reward) AS proxy_reward,
    avg(r.gold_reward) AS gold_reward,
    count(*) - count(r.proxy_reward) AS proxy_null,
    count(*) - count(r.gold_reward) AS gold_null,
    avg(r.n_tokens) AS mean_length,
    avg(r.ended_eos::DOUBLE) AS eos_rate,
    {_MEANS},
    any_value(s.kl_half) AS kl_half, any_value(s.proxy_half) AS proxy_half, any_value(s.gold_half) AS gold_half,
    now() AS refreshed_at
FROM r
JOIN spread s USING (run, checkpoint)
GROUP BY r.run, r.checkpoint
"""

_TOUCHED = "(run, checkpoint) IN (SELECT run, checkpoint FROM stats_touched)"

#: At most this many samples are aggregated by one statement of ``refresh_all`` (memory: the
#: feature pivot holds a hash table over the selected samples).
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
        con.execute(_REFRESH.format(target=_TOUCHED))
    finally:
        con.unregister("stats_touched")
