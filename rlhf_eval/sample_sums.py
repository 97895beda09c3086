"""Per-prompt sums of checkpoints' per-sample values, in SQL whose memory stays small.

Two readers need the mean over each prompt's samples of a checkpoint's values: the writer's
aggregates (``stats.py``) and the analysis (``analysis/load.py``). Pivoting every sample into
one wide row first (the sample, its KL, both rewards and every detector feature, as
``run_samples`` does) makes DuckDB build a hash table per joined table over all the selected
samples: about 2.4 KB per sample, 237 MB to read a run of 100k samples (docs/performance.md,
"Memory"). Here each per-sample table is joined to the selected samples' narrow rows (id,
prompt, checkpoint: the join's build side) and summed per prompt at once, so what a statement
holds is one hash table over the selected ids and a row per (checkpoint, prompt).

The CTEs end in ``per_prompt``: one row per (run, checkpoint, prompt_id) with ``n`` (samples)
and, for every value, ``<value>_sum`` and ``<value>_n`` (the sum and count of its non-NULL
values): ``length`` (response tokens), ``log_length`` (ln(1 + tokens)), ``eos`` (ended with
EOS), the KL estimators ``k1``, ``k2``, ``k3``, ``kl_full`` (against the checkpoint's
reference), ``proxy`` and ``gold`` (the checkpoint's scorers) and each detector feature. A mean
over samples is sum(<value>_sum) / sum(<value>_n); a prompt's mean is <value>_sum / <value>_n.
The keys of ``kl`` (sample, reference), ``scores`` (sample, scorer) and ``features`` (sample,
feature) are unique, so a sum over joined rows is a sum over samples.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

#: The KL estimators summed: ``kl`` table column -> the name of its sums.
KL_VALUES = ("k1", "k2", "k3", "kl_full")
#: Values of the samples themselves: name -> expression over ``samples``.
SAMPLE_TABLE_VALUES = {"length": "n_tokens::DOUBLE", "log_length": "ln(1 + n_tokens)", "eos": "ended_eos::DOUBLE"}
#: The scorers' values: name -> the checkpoint column naming its scorer.
SCORE_VALUES = {"proxy": "proxy_scorer", "gold": "gold_scorer"}

_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")


def sums(values: Mapping[str, tuple[str, str | None]]) -> str:
    """``sum(expr) AS name_sum, count(expr) AS name_n`` for each name -> (expression, filter).

    >>> print(sums({"x": ("v.x", None), "y": ("v.y", "v.k = 1")}))
    sum(v.x) AS x_sum, count(v.x) AS x_n,
               sum(v.y) FILTER (WHERE v.k = 1) AS y_sum, count(v.y) FILTER (WHERE v.k = 1) AS y_n
    """
    parts = []
    for name, (expr, condition) in values.items():
        only = f" FILTER (WHERE {condition})" if condition else ""
        parts.append(f"sum({expr}){only} AS {name}_sum, count({expr}){only} AS {name}_n")
    return ",\n           ".join(parts)


def mean(name: str, alias: str = "p") -> str:
    """The mean over samples of a value, from its per-prompt sums and counts (NULL without any)."""
    return f"sum({alias}.{name}_sum) / nullif(sum({alias}.{name}_n), 0)"


def prompt_mean(name: str, alias: str = "p") -> str:
    """A prompt's mean of a value (NULL where none of its samples has one)."""
    return f"{alias}.{name}_sum / nullif({alias}.{name}_n, 0)"


def selected_samples_ctes(target: str) -> str:
    """``target`` (the ``checkpoints`` rows selected by the SQL condition ``target``, a fixed
    fragment chosen by the code, which may hold ``?`` parameters) and ``cs``: their samples
    (the first ``samples_per_prompt`` of each of their suite's prompts), narrow rows."""
    return f"""target AS (
    SELECT * FROM checkpoints WHERE {target}
), cs AS (
    SELECT c.run, c.checkpoint, c.is_reference, c.ref_fp, c.proxy_scorer, c.gold_scorer,
           s.sample_id, s.prompt_id, s.sample_idx, s.n_tokens, s.ended_eos
    FROM target c
    JOIN prompts p ON p.suite_fp = c.suite_fp
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
     AND s.sample_idx < c.samples_per_prompt
)"""


def per_prompt_ctes(target: str, features: Sequence[str]) -> str:
    """The body of a ``WITH`` clause: ``target`` and ``cs`` (``selected_samples_ctes``), then
    ``per_prompt`` (the sums above, with the sums of each feature in ``features``, fixed
    detector names)."""
    for name in features:
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"feature {name!r}: not a detector name")
    kl_values = {name: (f"v.{name}", None) for name in KL_VALUES}
    score_values = {name: ("v.value", f"v.scorer_id = cs.{column}") for name, column in SCORE_VALUES.items()}
    feature_values = {name: ("v.value::DOUBLE", f"v.feature = '{name}'") for name in features}
    scorer_match = " OR ".join(f"v.scorer_id = cs.{column}" for column in SCORE_VALUES.values())
    feature_join = " LEFT JOIN f USING (run, checkpoint, prompt_id)" if features else ""
    feature_part = (
        f"""), f AS (
    SELECT cs.run, cs.checkpoint, cs.prompt_id,
           {sums(feature_values)}
    FROM features v JOIN cs ON v.sample_id = cs.sample_id
    GROUP BY cs.run, cs.checkpoint, cs.prompt_id
"""
        if features
        else ""
    )
    return f"""{selected_samples_ctes(target)}, base AS (
    SELECT run, checkpoint, prompt_id, count(*) AS n,
           {sums({name: (expr, None) for name, expr in SAMPLE_TABLE_VALUES.items()})}
    FROM cs
    GROUP BY run, checkpoint, prompt_id
), k AS (
    SELECT cs.run, cs.checkpoint, cs.prompt_id,
           {sums(kl_values)}
    FROM kl v JOIN cs ON v.sample_id = cs.sample_id AND v.ref_fp = cs.ref_fp
    GROUP BY cs.run, cs.checkpoint, cs.prompt_id
), sc AS (
    SELECT cs.run, cs.checkpoint, cs.prompt_id,
           {sums(score_values)}
    FROM scores v JOIN cs ON v.sample_id = cs.sample_id AND ({scorer_match})
    GROUP BY cs.run, cs.checkpoint, cs.prompt_id
{feature_part}), per_prompt AS (
    SELECT *
    FROM base
    LEFT JOIN k USING (run, checkpoint, prompt_id)
    LEFT JOIN sc USING (run, checkpoint, prompt_id){feature_join}
)"""
