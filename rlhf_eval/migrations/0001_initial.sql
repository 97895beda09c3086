-- Initial schema. Content-addressed tables (samples, kl, scores, features, prompts) are keyed by
-- hashes of what produced them, so writing a row twice is a no-op; descriptive tables
-- (checkpoints, evaluations, training_logs) keep the latest version of a row.

CREATE TABLE evaluations (
    eval_id VARCHAR PRIMARY KEY,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    status VARCHAR,              -- running | completed
    command VARCHAR,
    config JSON,                 -- the full resolved configuration
    provenance JSON,             -- package versions, git commit, python, platform
    seed BIGINT,
    schema_version INTEGER
);

CREATE TABLE suites (
    suite_fp VARCHAR PRIMARY KEY,
    name VARCHAR,
    version VARCHAR,
    source VARCHAR,
    n_prompts INTEGER
);

CREATE TABLE prompts (
    suite_fp VARCHAR,
    idx INTEGER,
    prompt_id VARCHAR,
    text VARCHAR,
    messages JSON,
    category VARCHAR,
    PRIMARY KEY (suite_fp, idx)
);

CREATE TABLE generation_configs (
    gen_key VARCHAR PRIMARY KEY,
    config JSON                  -- temperature, top_p, top_k, max_new_tokens, seed, backend
);

CREATE TABLE checkpoints (
    run VARCHAR,
    checkpoint VARCHAR,
    step BIGINT,
    method VARCHAR,
    is_reference BOOLEAN,
    path VARCHAR,
    kind VARCHAR,                -- model | adapter
    base_model VARCHAR,
    model_fp VARCHAR,
    ref_fp VARCHAR,
    suite_fp VARCHAR,
    gen_key VARCHAR,
    samples_per_prompt INTEGER,
    proxy_scorer VARCHAR,
    gold_scorer VARCHAR,
    eval_id VARCHAR,
    evaluated_at TIMESTAMP,
    PRIMARY KEY (run, checkpoint)
);

CREATE TABLE samples (
    sample_id VARCHAR PRIMARY KEY,   -- hash(model_fp, prompt_id, gen_key, sample_idx)
    model_fp VARCHAR,
    prompt_id VARCHAR,
    gen_key VARCHAR,
    sample_idx INTEGER,
    prompt_token_ids INTEGER[],
    token_ids INTEGER[],             -- response ids up to and including the first EOS
    response VARCHAR,
    n_tokens INTEGER,
    ended_eos BOOLEAN,
    prompt_truncated BOOLEAN,
    eval_id VARCHAR
);

CREATE TABLE kl (
    sample_id VARCHAR,
    ref_fp VARCHAR,
    logp_policy DOUBLE,
    logp_ref DOUBLE,
    k1 DOUBLE,
    k2 DOUBLE,
    k3 DOUBLE,
    kl_full DOUBLE,
    n_tokens INTEGER,
    PRIMARY KEY (sample_id, ref_fp)
);

CREATE TABLE scorers (
    scorer_id VARCHAR PRIMARY KEY,
    name VARCHAR,
    kind VARCHAR,                    -- reward_model | callable | ensemble
    spec JSON,
    higher_is_better BOOLEAN
);

CREATE TABLE scores (
    sample_id VARCHAR,
    scorer_id VARCHAR,
    value DOUBLE,                    -- NULL when the scorer returned NaN or infinity
    PRIMARY KEY (sample_id, scorer_id)
);

CREATE TABLE features (
    sample_id VARCHAR,
    feature VARCHAR,
    version INTEGER,
    value DOUBLE,
    PRIMARY KEY (sample_id, feature)
);

CREATE TABLE training_logs (
    run VARCHAR,
    step BIGINT,
    metric VARCHAR,                  -- as the trainer logged it; see docs/trl-metrics.md for scales
    value DOUBLE,
    PRIMARY KEY (run, step, metric)
);

CREATE TABLE file_hashes (
    path VARCHAR PRIMARY KEY,
    size BIGINT,
    mtime_ns BIGINT,
    sha256 VARCHAR
);

-- One row per (checkpoint, sample) of the latest evaluation of each checkpoint, with its KL,
-- proxy and gold scores and its detector features side by side.
CREATE VIEW checkpoint_samples AS
WITH wide_features AS (
    SELECT
        sample_id,
        max(value) FILTER (WHERE feature = 'seq_rep_1') AS seq_rep_1,
        max(value) FILTER (WHERE feature = 'seq_rep_2') AS seq_rep_2,
        max(value) FILTER (WHERE feature = 'seq_rep_3') AS seq_rep_3,
        max(value) FILTER (WHERE feature = 'seq_rep_4') AS seq_rep_4,
        max(value) FILTER (WHERE feature = 'distinct_1') AS distinct_1,
        max(value) FILTER (WHERE feature = 'distinct_2') AS distinct_2,
        max(value) FILTER (WHERE feature = 'compression_ratio') AS compression_ratio,
        max(value) FILTER (WHERE feature = 'tail_loop') AS tail_loop,
        max(value) FILTER (WHERE feature = 'length_chars') AS length_chars,
        max(value) FILTER (WHERE feature = 'length_words') AS length_words,
        max(value) FILTER (WHERE feature = 'md_headers') AS md_headers,
        max(value) FILTER (WHERE feature = 'md_list_items') AS md_list_items,
        max(value) FILTER (WHERE feature = 'md_bold') AS md_bold,
        max(value) FILTER (WHERE feature = 'hedge') AS hedge,
        max(value) FILTER (WHERE feature = 'apology') AS apology,
        max(value) FILTER (WHERE feature = 'refusal') AS refusal,
        max(value) FILTER (WHERE feature = 'closer') AS closer
    FROM features
    GROUP BY sample_id
)
SELECT
    c.run, c.checkpoint, c.step, c.method, c.is_reference,
    s.sample_id, s.prompt_id, p.idx AS prompt_idx, s.sample_idx, s.response, s.n_tokens, s.ended_eos,
    k.k1 AS kl_k1, k.k2 AS kl_k2, k.k3 AS kl_k3, k.kl_full, k.logp_policy, k.logp_ref,
    px.value AS proxy_reward, gd.value AS gold_reward,
    f.* EXCLUDE (sample_id)
FROM checkpoints c
JOIN prompts p ON p.suite_fp = c.suite_fp
JOIN samples s
  ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
 AND s.sample_idx < c.samples_per_prompt
LEFT JOIN kl k ON k.sample_id = s.sample_id AND k.ref_fp = c.ref_fp
LEFT JOIN scores px ON px.sample_id = s.sample_id AND px.scorer_id = c.proxy_scorer
LEFT JOIN scores gd ON gd.sample_id = s.sample_id AND gd.scorer_id = c.gold_scorer
LEFT JOIN wide_features f ON f.sample_id = s.sample_id;

-- One row per evaluated checkpoint (DESIGN.md contract). kl is the mean sequence KL in nats
-- from the full-vocabulary estimator; *_ci_low/_high are 95% normal-approximation intervals
-- over prompts (prompts are the unit: per-prompt means, their standard error).
CREATE VIEW checkpoint_summary AS
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
)
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
JOIN spread s USING (run, checkpoint);
