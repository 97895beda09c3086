-- The per-sample tables (samples, kl, scores, features) and bon_values lose their primary keys:
-- DuckDB holds a table's key index (ART) in memory whole while the table is written, so the
-- writer's memory and each flush's time grew with the database (docs/performance.md). Their keys
-- stay unique through the store instead (rlhf_eval/store.py, module docstring): a ledger of the
-- shards already ingested, committed with their rows, and a check against the stored keys for
-- rows not known to be new. The key columns stay NOT NULL, as the primary keys made them.
--
-- DuckDB cannot drop a primary key, so each table is copied without it, ordered by a
-- clustering key (samples by model, the evaluator's lookups filter on it; the others by their
-- key, which keeps one sample's rows together and compresses the ids), then swapped in. Views
-- and macros are bound when queried, so checkpoint_samples, checkpoint_summary, overoptimization
-- and run_samples read the new tables unchanged. Rows are copied as they are.

CREATE TABLE samples_0004 (
    sample_id VARCHAR NOT NULL,      -- hash(model_fp, prompt_id, gen_key, sample_idx)
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
INSERT INTO samples_0004 BY NAME
SELECT * FROM samples ORDER BY model_fp, gen_key, prompt_id, sample_idx, sample_id;
DROP TABLE samples;
ALTER TABLE samples_0004 RENAME TO samples;

CREATE TABLE kl_0004 (
    sample_id VARCHAR NOT NULL,
    ref_fp VARCHAR NOT NULL,
    logp_policy DOUBLE,
    logp_ref DOUBLE,
    k1 DOUBLE,
    k2 DOUBLE,
    k3 DOUBLE,
    kl_full DOUBLE,
    n_tokens INTEGER
);
INSERT INTO kl_0004 BY NAME SELECT * FROM kl ORDER BY sample_id, ref_fp;
DROP TABLE kl;
ALTER TABLE kl_0004 RENAME TO kl;

CREATE TABLE scores_0004 (
    sample_id VARCHAR NOT NULL,
    scorer_id VARCHAR NOT NULL,
    value DOUBLE                     -- NULL when the scorer returned NaN or infinity
);
INSERT INTO scores_0004 BY NAME SELECT * FROM scores ORDER BY sample_id, scorer_id;
DROP TABLE scores;
ALTER TABLE scores_0004 RENAME TO scores;

CREATE TABLE features_0004 (
    sample_id VARCHAR NOT NULL,
    feature VARCHAR NOT NULL,
    version INTEGER,
    value DOUBLE
);
INSERT INTO features_0004 BY NAME SELECT * FROM features ORDER BY sample_id, feature;
DROP TABLE features;
ALTER TABLE features_0004 RENAME TO features;

CREATE TABLE bon_values_0004 (
    run VARCHAR NOT NULL,
    n INTEGER NOT NULL,
    prompt_id VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE
);
INSERT INTO bon_values_0004 BY NAME SELECT * FROM bon_values ORDER BY run, n, prompt_id, metric;
DROP TABLE bon_values;
ALTER TABLE bon_values_0004 RENAME TO bon_values;

-- The shards whose rows are committed: written in the same transaction as those rows, so a
-- shard still on disk after its COMMIT (the writer killed before deleting it) is skipped, not
-- ingested again. Only the names of shards still on disk are kept (each flush drops the others).
CREATE TABLE ingested_shards (
    name VARCHAR NOT NULL,
    ingested_at TIMESTAMP
);
