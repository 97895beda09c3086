-- Best-of-n families and the stored results of the over-optimization analysis
-- (rlhf_eval.analysis). The analysis is recomputed whole for a run each time it runs, from the
-- per-prompt data, with a seeded bootstrap whose seed and replicate count are stored with it.

-- A best-of-n family: the pool (pool_size samples per prompt of one policy, stored as the
-- reference checkpoint of run pool_run) and the n values that are its "checkpoints".
CREATE TABLE bon_runs (
    run VARCHAR PRIMARY KEY,
    pool_run VARCHAR,
    pool_checkpoint VARCHAR,
    pool_size INTEGER,
    ns INTEGER[],
    path VARCHAR,
    model_fp VARCHAR,
    suite_fp VARCHAR,
    gen_key VARCHAR,
    proxy_scorer VARCHAR,
    gold_scorer VARCHAR,
    eval_id VARCHAR,
    evaluated_at TIMESTAMP
);

-- E_n of each metric over one prompt's pool (the exact order-statistics estimator); the metric
-- names are checkpoint_samples columns, plus kl_analytic, kl_plugin, duplicate_fraction, pool.
CREATE TABLE bon_values (
    run VARCHAR,
    n INTEGER,
    prompt_id VARCHAR,
    metric VARCHAR,
    value DOUBLE,
    PRIMARY KEY (run, n, prompt_id, metric)
);

-- One row per point (checkpoint or n) of an analysed run.
CREATE TABLE analysis_points (
    run VARCHAR,
    checkpoint VARCHAR,
    step BIGINT,
    kl_estimator VARCHAR,
    kl DOUBLE,
    sqrt_kl DOUBLE,
    proxy_norm DOUBLE, proxy_norm_ci_low DOUBLE, proxy_norm_ci_high DOUBLE,
    gold_norm DOUBLE, gold_norm_ci_low DOUBLE, gold_norm_ci_high DOUBLE,
    prob_best DOUBLE,
    gold_drop_from_best DOUBLE, gold_drop_from_best_ci_low DOUBLE, gold_drop_from_best_ci_high DOUBLE,
    past_peak BOOLEAN,
    gold_debiased DOUBLE,
    gold_length_explained DOUBLE,
    gold_length_share DOUBLE,
    proxy_gold_tau DOUBLE,
    proxy_disagreement DOUBLE,
    kl_bon_analytic DOUBLE,
    kl_bon_plugin DOUBLE,
    kl_bon_differ BOOLEAN,
    duplicate_fraction DOUBLE,
    analysed_at TIMESTAMP,
    PRIMARY KEY (run, checkpoint)
);

-- One row per analysed run: the peak, the verdict and its evidence, the divergence and
-- early-warning signals, and the Gao et al. fit.
CREATE TABLE analysis_runs (
    run VARCHAR PRIMARY KEY,
    method VARCHAR,
    kind VARCHAR,
    kl_estimator VARCHAR,
    n_points INTEGER,
    n_prompts INTEGER,
    replicates INTEGER,
    seed BIGINT,
    peak_checkpoint VARCHAR,
    peak_step BIGINT,
    peak_kl DOUBLE,
    peak_sqrt_kl DOUBLE,
    gold_at_peak DOUBLE,
    gold_at_last DOUBLE,
    gold_norm_at_peak DOUBLE,
    gold_norm_at_last DOUBLE,
    last_checkpoint VARCHAR,
    last_step BIGINT,
    gold_drop DOUBLE, gold_drop_ci_low DOUBLE, gold_drop_ci_high DOUBLE,
    proxy_gain_after_peak DOUBLE, proxy_gain_after_peak_ci_low DOUBLE, proxy_gain_after_peak_ci_high DOUBLE,
    overoptimized BOOLEAN,
    best_checkpoint VARCHAR,
    best_probability DOUBLE,
    proxy_slope_after_peak DOUBLE, proxy_slope_after_peak_ci_low DOUBLE, proxy_slope_after_peak_ci_high DOUBLE,
    gold_slope_after_peak DOUBLE, gold_slope_after_peak_ci_low DOUBLE, gold_slope_after_peak_ci_high DOUBLE,
    diverging BOOLEAN,
    early_warning BOOLEAN,
    early_warning_points INTEGER,
    gold_slope_recent DOUBLE, gold_slope_recent_ci_low DOUBLE, gold_slope_recent_ci_high DOUBLE,
    gold_falling BOOLEAN,
    fit_form VARCHAR,
    fit_alpha DOUBLE, fit_alpha_ci_low DOUBLE, fit_alpha_ci_high DOUBLE,
    fit_beta DOUBLE, fit_beta_ci_low DOUBLE, fit_beta_ci_high DOUBLE,
    fit_d_star DOUBLE, fit_d_star_ci_low DOUBLE, fit_d_star_ci_high DOUBLE,
    fit_kl_star DOUBLE, fit_kl_star_ci_low DOUBLE, fit_kl_star_ci_high DOUBLE,
    fit_r_star DOUBLE, fit_r_star_ci_low DOUBLE, fit_r_star_ci_high DOUBLE,
    fit_peak_resolved BOOLEAN,
    fit_note VARCHAR,
    evidence VARCHAR,
    notes VARCHAR,
    analysed_at TIMESTAMP
);

-- checkpoint_summary gains the best-of-n points (step = n, checkpoint = 'n=<n>', method 'bon',
-- kl = the analytic log n - (n - 1)/n) and the analysis's normalized rewards with bootstrap CIs.
CREATE OR REPLACE VIEW checkpoint_summary AS
WITH per_prompt AS (
    SELECT run, checkpoint, prompt_id,
           avg(kl_full) AS kl, avg(proxy_reward) AS proxy, avg(gold_reward) AS gold
    FROM checkpoint_samples
    GROUP BY run, checkpoint, prompt_id
), spread AS (
    SELECT run, checkpoint,
           1.959964 * stddev_samp(kl) / sqrt(count(kl)) AS kl_half,
           1.959964 * stddev_samp(proxy) / sqrt(count(proxy)) AS proxy_half,
           1.959964 * stddev_samp(gold) / sqrt(count(gold)) AS gold_half
    FROM per_prompt
    GROUP BY run, checkpoint
), agg AS (
    SELECT
        run, checkpoint,
        count(DISTINCT prompt_id) AS n_prompts,
        count(*) AS n_samples,
        avg(kl_full) AS kl,
        avg(kl_k1) AS kl_k1, avg(kl_k2) AS kl_k2, avg(kl_k3) AS kl_k3, avg(kl_full) AS kl_full,
        avg(proxy_reward) AS proxy_reward,
        avg(gold_reward) AS gold_reward,
        count(*) - count(proxy_reward) AS proxy_null,
        count(*) - count(gold_reward) AS gold_null,
        avg(n_tokens) AS mean_length,
        avg(ended_eos::DOUBLE) AS eos_rate,
        avg(seq_rep_1) AS seq_rep_1, avg(seq_rep_2) AS seq_rep_2,
        avg(seq_rep_3) AS seq_rep_3, avg(seq_rep_4) AS seq_rep_4,
        avg(distinct_1) AS distinct_1, avg(distinct_2) AS distinct_2,
        avg(compression_ratio) AS compression_ratio,
        avg(tail_loop) AS loop_rate,
        avg(length_chars) AS mean_chars, avg(length_words) AS mean_words,
        avg(md_headers) AS md_headers, avg(md_list_items) AS md_list_items, avg(md_bold) AS md_bold,
        avg(hedge) AS hedge_rate, avg(apology) AS apology_rate,
        avg(refusal) AS refusal_rate, avg(closer) AS closer_rate
    FROM checkpoint_samples
    GROUP BY run, checkpoint
), rl AS (
    SELECT
        c.run, c.method, c.step, c.checkpoint,
        a.n_prompts, a.n_samples,
        a.kl, sqrt(greatest(a.kl, 0)) AS sqrt_kl,
        a.proxy_reward, a.gold_reward,
        a.mean_length, a.seq_rep_4, a.distinct_2, a.compression_ratio, a.hedge_rate,
        a.kl - s.kl_half AS kl_ci_low, a.kl + s.kl_half AS kl_ci_high,
        a.proxy_reward - s.proxy_half AS proxy_reward_ci_low, a.proxy_reward + s.proxy_half AS proxy_reward_ci_high,
        a.gold_reward - s.gold_half AS gold_reward_ci_low, a.gold_reward + s.gold_half AS gold_reward_ci_high,
        a.kl_k1, a.kl_k2, a.kl_k3, a.kl_full,
        a.proxy_null, a.gold_null, a.eos_rate,
        a.seq_rep_1, a.seq_rep_2, a.seq_rep_3, a.distinct_1, a.loop_rate, a.mean_chars, a.mean_words,
        a.md_headers, a.md_list_items, a.md_bold, a.apology_rate, a.refusal_rate, a.closer_rate,
        c.is_reference, c.kind, c.path, c.model_fp, c.ref_fp, c.suite_fp, c.gen_key,
        c.proxy_scorer, c.gold_scorer, c.eval_id, c.evaluated_at
    FROM checkpoints c
    JOIN agg a USING (run, checkpoint)
    JOIN spread s USING (run, checkpoint)
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

-- One row per analysed run (DESIGN.md contract): where gold peaked, gold at the peak and at the
-- last point (raw and normalized), the proxy gain after the peak, and the verdict with its
-- evidence. stale: points were stored after the analysis ran (run `rlhf-eval analyze`).
CREATE VIEW overoptimization AS
SELECT
    r.run, r.method, r.kind,
    r.peak_checkpoint, r.peak_step, r.peak_kl, r.peak_sqrt_kl,
    r.gold_at_peak, r.gold_at_last, r.gold_norm_at_peak, r.gold_norm_at_last,
    r.last_checkpoint, r.last_step,
    r.proxy_gain_after_peak, r.proxy_gain_after_peak_ci_low, r.proxy_gain_after_peak_ci_high,
    r.overoptimized,
    r.gold_drop, r.gold_drop_ci_low, r.gold_drop_ci_high,
    r.evidence,
    r.best_checkpoint, r.best_probability,
    r.diverging,
    r.proxy_slope_after_peak, r.proxy_slope_after_peak_ci_low, r.proxy_slope_after_peak_ci_high,
    r.gold_slope_after_peak, r.gold_slope_after_peak_ci_low, r.gold_slope_after_peak_ci_high,
    r.early_warning, r.early_warning_points,
    r.gold_slope_recent, r.gold_slope_recent_ci_low, r.gold_slope_recent_ci_high, r.gold_falling,
    r.fit_form, r.fit_alpha, r.fit_alpha_ci_low, r.fit_alpha_ci_high,
    r.fit_beta, r.fit_beta_ci_low, r.fit_beta_ci_high,
    r.fit_d_star, r.fit_d_star_ci_low, r.fit_d_star_ci_high,
    r.fit_kl_star, r.fit_kl_star_ci_low, r.fit_kl_star_ci_high,
    r.fit_r_star, r.fit_r_star_ci_low, r.fit_r_star_ci_high,
    r.fit_peak_resolved, r.fit_note,
    r.kl_estimator, r.n_points, r.n_prompts, r.replicates, r.seed, r.notes, r.analysed_at,
    coalesce(n.n_now, 0) <> r.n_points AS stale
FROM analysis_runs r
LEFT JOIN (
    -- points now stored per run, counted from the small tables (not the aggregating views)
    SELECT run, count(*) AS n_now FROM checkpoints GROUP BY run
    UNION ALL
    SELECT run, len(ns) AS n_now FROM bon_runs
) n USING (run);
