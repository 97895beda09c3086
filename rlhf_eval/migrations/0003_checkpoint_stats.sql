-- Per-checkpoint aggregates kept by the writer (rlhf_eval/stats.py): refreshed in the same
-- transaction as the rows they summarize, for the checkpoints those rows touch, so that
-- checkpoint_summary reads one row per checkpoint instead of aggregating every sample. The key
-- columns are the checkpoint row's fields they were computed for; the view ignores aggregates
-- whose keys no longer match.
CREATE TABLE checkpoint_stats (
    run VARCHAR,
    checkpoint VARCHAR,
    model_fp VARCHAR,
    ref_fp VARCHAR,
    gen_key VARCHAR,
    suite_fp VARCHAR,
    samples_per_prompt INTEGER,
    proxy_scorer VARCHAR,
    gold_scorer VARCHAR,
    n_prompts BIGINT,
    n_samples BIGINT,
    kl DOUBLE, kl_k1 DOUBLE, kl_k2 DOUBLE, kl_k3 DOUBLE, kl_full DOUBLE,
    proxy_reward DOUBLE,
    gold_reward DOUBLE,
    proxy_null BIGINT,
    gold_null BIGINT,
    mean_length DOUBLE,
    eos_rate DOUBLE,
    seq_rep_1 DOUBLE,
    seq_rep_2 DOUBLE,
    seq_rep_3 DOUBLE,
    seq_rep_4 DOUBLE,
    distinct_1 DOUBLE,
    distinct_2 DOUBLE,
    compression_ratio DOUBLE,
    loop_rate DOUBLE,
    mean_chars DOUBLE,
    mean_words DOUBLE,
    md_headers DOUBLE,
    md_list_items DOUBLE,
    md_bold DOUBLE,
    hedge_rate DOUBLE,
    apology_rate DOUBLE,
    refusal_rate DOUBLE,
    closer_rate DOUBLE,
    kl_half DOUBLE,           -- 1.959964 sd(per-prompt mean KL) / sqrt(prompts)
    proxy_half DOUBLE,
    gold_half DOUBLE,
    refreshed_at TIMESTAMP,
    PRIMARY KEY (run, checkpoint)
);

-- checkpoint_summary reads the aggregates; its columns are unchanged. Store.migrate fills
-- checkpoint_stats for the checkpoints already stored right after this migration.
CREATE OR REPLACE VIEW checkpoint_summary AS
WITH rl AS (
    SELECT
        c.run, c.method, c.step, c.checkpoint,
        a.n_prompts, a.n_samples,
        a.kl, sqrt(greatest(a.kl, 0)) AS sqrt_kl,
        a.proxy_reward, a.gold_reward,
        a.mean_length, a.seq_rep_4, a.distinct_2, a.compression_ratio, a.hedge_rate,
        a.kl - a.kl_half AS kl_ci_low, a.kl + a.kl_half AS kl_ci_high,
        a.proxy_reward - a.proxy_half AS proxy_reward_ci_low, a.proxy_reward + a.proxy_half AS proxy_reward_ci_high,
        a.gold_reward - a.gold_half AS gold_reward_ci_low, a.gold_reward + a.gold_half AS gold_reward_ci_high,
        a.kl_k1, a.kl_k2, a.kl_k3, a.kl_full,
        a.proxy_null, a.gold_null, a.eos_rate,
        a.seq_rep_1, a.seq_rep_2, a.seq_rep_3, a.distinct_1, a.loop_rate, a.mean_chars, a.mean_words,
        a.md_headers, a.md_list_items, a.md_bold, a.apology_rate, a.refusal_rate, a.closer_rate,
        c.is_reference, c.kind, c.path, c.model_fp, c.ref_fp, c.suite_fp, c.gen_key,
        c.proxy_scorer, c.gold_scorer, c.eval_id, c.evaluated_at
    FROM checkpoints c
    JOIN checkpoint_stats a
      ON a.run = c.run AND a.checkpoint = c.checkpoint
     AND a.model_fp = c.model_fp AND a.ref_fp IS NOT DISTINCT FROM c.ref_fp AND a.gen_key = c.gen_key
     AND a.suite_fp = c.suite_fp AND a.samples_per_prompt = c.samples_per_prompt
     AND a.proxy_scorer IS NOT DISTINCT FROM c.proxy_scorer AND a.gold_scorer IS NOT DISTINCT FROM c.gold_scorer
), bon_wide AS (
    SELECT
        run, n, prompt_id,
        max(value) FILTER (WHERE metric = 'pool') AS pool,
        max(value) FILTER (WHERE metric = 'kl_analytic') AS kl_analytic,
        max(value) FILTER (WHERE metric = 'kl_plugin') AS kl_plugin,
        max(value) FILTER (WHERE metric = 'duplicate_fraction') AS duplicate_fraction,
        max(value) FILTER (WHERE metric = 'proxy_reward') AS proxy_reward,
        max(value) FILTER (WHERE metric = 'gold_reward') AS gold_reward,
        max(value) FILTER (WHERE metric = 'n_tokens') AS n_tokens,
        max(value) FILTER (WHERE metric = 'ended_eos') AS ended_eos,
        max(value) FILTER (WHERE metric = 'seq_rep_1') AS seq_rep_1,
        max(value) FILTER (WHERE metric = 'seq_rep_2') AS seq_rep_2,
        max(value) FILTER (WHERE metric = 'seq_rep_3') AS seq_rep_3,
        max(value) FILTER (WHERE metric = 'seq_rep_4') AS seq_rep_4,
        max(value) FILTER (WHERE metric = 'distinct_1') AS distinct_1,
        max(value) FILTER (WHERE metric = 'distinct_2') AS distinct_2,
        max(value) FILTER (WHERE metric = 'compression_ratio') AS compression_ratio,
        max(value) FILTER (WHERE metric = 'tail_loop') AS tail_loop,
        max(value) FILTER (WHERE metric = 'length_chars') AS length_chars,
        max(value) FILTER (WHERE metric = 'length_words') AS length_words,
        max(value) FILTER (WHERE metric = 'md_headers') AS md_headers,
        max(value) FILTER (WHERE metric = 'md_list_items') AS md_list_items,
        max(value) FILTER (WHERE metric = 'md_bold') AS md_bold,
        max(value) FILTER (WHERE metric = 'hedge') AS hedge,
        max(value) FILTER (WHERE metric = 'apology') AS apology,
        max(value) FILTER (WHERE metric = 'refusal') AS refusal,
        max(value) FILTER (WHERE metric = 'closer') AS closer
    FROM bon_values
    GROUP BY run, n, prompt_id
), bon_agg AS (
    SELECT
        w.run, w.n,
        count(*) AS n_prompts,
        sum(w.pool)::BIGINT AS n_samples,
        avg(w.kl_analytic) AS kl_analytic, avg(w.kl_plugin) AS kl_plugin,
        avg(w.duplicate_fraction) AS duplicate_fraction,
        avg(w.proxy_reward) AS proxy_reward, avg(w.gold_reward) AS gold_reward,
        1.959964 * stddev_samp(w.proxy_reward) / sqrt(count(w.proxy_reward)) AS proxy_half,
        1.959964 * stddev_samp(w.gold_reward) / sqrt(count(w.gold_reward)) AS gold_half,
        count(*) - count(w.gold_reward) AS gold_null,
        avg(w.n_tokens) AS mean_length, avg(w.ended_eos) AS eos_rate,
        avg(w.seq_rep_1) AS seq_rep_1, avg(w.seq_rep_2) AS seq_rep_2,
        avg(w.seq_rep_3) AS seq_rep_3, avg(w.seq_rep_4) AS seq_rep_4,
        avg(w.distinct_1) AS distinct_1, avg(w.distinct_2) AS distinct_2,
        avg(w.compression_ratio) AS compression_ratio, avg(w.tail_loop) AS loop_rate,
        avg(w.length_chars) AS mean_chars, avg(w.length_words) AS mean_words,
        avg(w.md_headers) AS md_headers, avg(w.md_list_items) AS md_list_items, avg(w.md_bold) AS md_bold,
        avg(w.hedge) AS hedge_rate, avg(w.apology) AS apology_rate,
        avg(w.refusal) AS refusal_rate, avg(w.closer) AS closer_rate
    FROM bon_wide w
    JOIN bon_runs b ON b.run = w.run AND list_contains(b.ns, w.n)
    GROUP BY w.run, w.n
), bon AS (
    SELECT
        b.run, 'bon' AS method, a.n::BIGINT AS step, 'n=' || a.n AS checkpoint,
        a.n_prompts, a.n_samples,
        a.kl_analytic AS kl, sqrt(greatest(a.kl_analytic, 0)) AS sqrt_kl,
        a.proxy_reward, a.gold_reward,
        a.mean_length, a.seq_rep_4, a.distinct_2, a.compression_ratio, a.hedge_rate,
        a.kl_analytic AS kl_ci_low, a.kl_analytic AS kl_ci_high,
        a.proxy_reward - a.proxy_half AS proxy_reward_ci_low, a.proxy_reward + a.proxy_half AS proxy_reward_ci_high,
        a.gold_reward - a.gold_half AS gold_reward_ci_low, a.gold_reward + a.gold_half AS gold_reward_ci_high,
        NULL::DOUBLE AS kl_k1, NULL::DOUBLE AS kl_k2, NULL::DOUBLE AS kl_k3, NULL::DOUBLE AS kl_full,
        0::BIGINT AS proxy_null, a.gold_null, a.eos_rate,
        a.seq_rep_1, a.seq_rep_2, a.seq_rep_3, a.distinct_1, a.loop_rate, a.mean_chars, a.mean_words,
        a.md_headers, a.md_list_items, a.md_bold, a.apology_rate, a.refusal_rate, a.closer_rate,
        a.n = 1 AS is_reference, 'bon' AS kind, b.path, b.model_fp, b.model_fp AS ref_fp, b.suite_fp, b.gen_key,
        b.proxy_scorer, b.gold_scorer, b.eval_id, b.evaluated_at,
        a.kl_analytic AS kl_bon_analytic, a.kl_plugin AS kl_bon_plugin, a.duplicate_fraction
    FROM bon_runs b
    JOIN bon_agg a USING (run)
), points AS (
    SELECT * FROM rl
    UNION ALL BY NAME
    SELECT * FROM bon
)
SELECT
    p.*,
    ap.proxy_norm AS proxy_reward_norm,
    ap.proxy_norm_ci_low AS proxy_reward_norm_ci_low, ap.proxy_norm_ci_high AS proxy_reward_norm_ci_high,
    ap.gold_norm AS gold_reward_norm,
    ap.gold_norm_ci_low AS gold_reward_norm_ci_low, ap.gold_norm_ci_high AS gold_reward_norm_ci_high,
    ap.gold_debiased AS gold_reward_debiased, ap.gold_length_share,
    ap.prob_best, ap.past_peak, ap.kl_bon_differ, ap.proxy_gold_tau, ap.proxy_disagreement
FROM points p
LEFT JOIN analysis_points ap ON ap.run = p.run AND ap.checkpoint = p.checkpoint;

-- checkpoint_samples restricted to one run (and to the checkpoints in the list checkpoint_names
-- when it is given), with the filter applied before the detector features are pivoted (the view pivots
-- every feature of the database first): what the analysis and the dashboard read. Same columns
-- as checkpoint_samples.
CREATE MACRO run_samples(run_name, checkpoint_names := NULL) AS TABLE
WITH cs AS (
    SELECT c.run, c.checkpoint, c.step, c.method, c.is_reference, c.ref_fp, c.proxy_scorer, c.gold_scorer,
           s.sample_id, s.prompt_id, p.idx AS prompt_idx, s.sample_idx, s.response, s.n_tokens, s.ended_eos
    FROM checkpoints c
    JOIN prompts p ON p.suite_fp = c.suite_fp
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
     AND s.sample_idx < c.samples_per_prompt
    WHERE c.run = run_name AND (checkpoint_names IS NULL OR list_contains(checkpoint_names, c.checkpoint))
), feats AS (
    SELECT f.sample_id,
        max(f.value) FILTER (WHERE f.feature = 'seq_rep_1') AS seq_rep_1,
        max(f.value) FILTER (WHERE f.feature = 'seq_rep_2') AS seq_rep_2,
        max(f.value) FILTER (WHERE f.feature = 'seq_rep_3') AS seq_rep_3,
        max(f.value) FILTER (WHERE f.feature = 'seq_rep_4') AS seq_rep_4,
        max(f.value) FILTER (WHERE f.feature = 'distinct_1') AS distinct_1,
        max(f.value) FILTER (WHERE f.feature = 'distinct_2') AS distinct_2,
        max(f.value) FILTER (WHERE f.feature = 'compression_ratio') AS compression_ratio,
        max(f.value) FILTER (WHERE f.feature = 'tail_loop') AS tail_loop,
        max(f.value) FILTER (WHERE f.feature = 'length_chars') AS length_chars,
        max(f.value) FILTER (WHERE f.feature = 'length_words') AS length_words,
        max(f.value) FILTER (WHERE f.feature = 'md_headers') AS md_headers,
        max(f.value) FILTER (WHERE f.feature = 'md_list_items') AS md_list_items,
        max(f.value) FILTER (WHERE f.feature = 'md_bold') AS md_bold,
        max(f.value) FILTER (WHERE f.feature = 'hedge') AS hedge,
        max(f.value) FILTER (WHERE f.feature = 'apology') AS apology,
        max(f.value) FILTER (WHERE f.feature = 'refusal') AS refusal,
        max(f.value) FILTER (WHERE f.feature = 'closer') AS closer
    FROM features f
    WHERE f.sample_id IN (SELECT sample_id FROM cs)
    GROUP BY f.sample_id
)
SELECT
    cs.run, cs.checkpoint, cs.step, cs.method, cs.is_reference,
    cs.sample_id, cs.prompt_id, cs.prompt_idx, cs.sample_idx, cs.response, cs.n_tokens, cs.ended_eos,
    k.k1 AS kl_k1, k.k2 AS kl_k2, k.k3 AS kl_k3, k.kl_full, k.logp_policy, k.logp_ref,
    px.value AS proxy_reward, gd.value AS gold_reward,
    feats.* EXCLUDE (sample_id)
FROM cs
LEFT JOIN kl k ON k.sample_id = cs.sample_id AND k.ref_fp = cs.ref_fp
LEFT JOIN scores px ON px.sample_id = cs.sample_id AND px.scorer_id = cs.proxy_scorer
LEFT JOIN scores gd ON gd.sample_id = cs.sample_id AND gd.scorer_id = cs.gold_scorer
LEFT JOIN feats ON feats.sample_id = cs.sample_id;
