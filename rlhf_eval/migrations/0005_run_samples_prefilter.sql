-- run_samples reads a run's samples with their KL, scores and detector features. Its joins to
-- kl and scores now go through those tables' rows of the selected samples only: a LEFT JOIN to
-- a whole table builds its hash table over every row of it (two million score rows at one
-- million samples, twice), while a semi-join to the few thousand selected ids needs one scan.
-- Same columns, same rows (docs/performance.md, "Dashboard pages").
CREATE OR REPLACE MACRO run_samples(run_name, checkpoint_names := NULL) AS TABLE
WITH cs AS (
    SELECT c.run, c.checkpoint, c.step, c.method, c.is_reference, c.ref_fp, c.proxy_scorer, c.gold_scorer,
           s.sample_id, s.prompt_id, p.idx AS prompt_idx, s.sample_idx, s.response, s.n_tokens, s.ended_eos
    FROM checkpoints c
    JOIN prompts p ON p.suite_fp = c.suite_fp
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
     AND s.sample_idx < c.samples_per_prompt
    WHERE c.run = run_name AND (checkpoint_names IS NULL OR list_contains(checkpoint_names, c.checkpoint))
), ids AS (
    SELECT DISTINCT sample_id FROM cs
), k AS (
    SELECT * FROM kl WHERE sample_id IN (SELECT sample_id FROM ids)
), sc AS (
    SELECT sample_id, scorer_id, value FROM scores WHERE sample_id IN (SELECT sample_id FROM ids)
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
    WHERE f.sample_id IN (SELECT sample_id FROM ids)
    GROUP BY f.sample_id
)
SELECT
    cs.run, cs.checkpoint, cs.step, cs.method, cs.is_reference,
    cs.sample_id, cs.prompt_id, cs.prompt_idx, cs.sample_idx, cs.response, cs.n_tokens, cs.ended_eos,
    k.k1 AS kl_k1, k.k2 AS kl_k2, k.k3 AS kl_k3, k.kl_full, k.logp_policy, k.logp_ref,
    px.value AS proxy_reward, gd.value AS gold_reward,
    feats.* EXCLUDE (sample_id)
FROM cs
LEFT JOIN k ON k.sample_id = cs.sample_id AND k.ref_fp = cs.ref_fp
LEFT JOIN sc px ON px.sample_id = cs.sample_id AND px.scorer_id = cs.proxy_scorer
LEFT JOIN sc gd ON gd.sample_id = cs.sample_id AND gd.scorer_id = cs.gold_scorer
LEFT JOIN feats ON feats.sample_id = cs.sample_id;
