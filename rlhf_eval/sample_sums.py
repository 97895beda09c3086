"""Per-prompt sums of checkpoints' per-sample values, in SQL whose memory stays small.

Two readers need the mean over each prompt's samples of a checkpoint's values: the writer's
aggregates (``stats.py``) and the analysis (``analysis/load.py``). Pivoting every sample into
one wide row first (the sample, its KL, both rewards and every detector feature, as
``run_samples`` does) makes DuckDB build a hash table per joined table over all the selected
samples: about 2.4 KB per sample, 237 MB to read a run of 100k samples (docs/performance.md,
"Memory"). Here each per-sample table is joined to the selected samples' narrow rows (the join's
build side) and summed per prompt, so what is held is a hash table over the selected ids and a
row per (checkpoint, prompt). Two choices keep that small:

- The narrow rows carry two integers for their checkpoint and prompt (the selected checkpoints
  numbered, the prompt's index in its suite) instead of the run, checkpoint and prompt id texts;
  the reference and scorers a value must match are looked up from the numbered checkpoints. So
  each hash table and group key holds a sample id and two integers; the texts come back once
  per prompt, at the end.
- Each table's sums are one statement of their own, kept in a temporary table
  (``per_prompt_sums``): DuckDB keeps a statement's hash tables until the statement ends, so
  summing ``kl``, ``scores`` and ``features`` in one statement held three tables over the
  selected ids at once. The sums themselves are a row per checkpoint and prompt, so joining
  them afterwards is cheap.

``per_prompt_sums`` yields the body of a ``WITH`` clause that ends in ``per_prompt``: one row per
(run, checkpoint, prompt_id) with ``n`` (samples) and, for every value, ``<value>_sum`` and
``<value>_n`` (the sum and count of its non-NULL values): ``length`` (response tokens),
``log_length`` (ln(1 + tokens)), ``eos`` (ended with EOS), the KL estimators ``k1``, ``k2``,
``k3``, ``kl_full`` (against the checkpoint's reference), ``proxy`` and ``gold`` (the
checkpoint's scorers) and each detector feature; and ``target``, the selected checkpoints' rows.
A mean over samples is sum(<value>_sum) / sum(<value>_n); a prompt's mean is <value>_sum /
<value>_n. The keys of ``kl`` (sample, reference), ``scores`` (sample, scorer) and ``features``
(sample, feature) are unique, so a sum over joined rows is a sum over samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

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


#: The temporary tables ``per_prompt_sums`` fills: the selected checkpoints, numbered ``ck``, and
#: each table's sums (``b``: the samples' own values, ``k``: KL, ``sc``: scores, ``f``: features).
NUMBERED = "per_prompt_numbered"
PARTS = ("b", "k", "sc", "f")

#: The selected checkpoints' samples as narrow rows: checkpoint number, prompt index, sample id,
#: length and EOS (the first ``samples_per_prompt`` samples of each of the suite's prompts).
_NARROW = f"""ns AS (
    SELECT c.ck, p.idx AS pidx, s.sample_id, s.n_tokens, s.ended_eos
    FROM {NUMBERED} c
    JOIN prompts p ON p.suite_fp = c.suite_fp
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.prompt_id = p.prompt_id
     AND s.sample_idx < c.samples_per_prompt
)"""


def numbered_checkpoints(target: str) -> str:
    """The checkpoints selected by the SQL condition ``target`` (a fixed fragment chosen by the
    code, which may hold ``?`` parameters), each with its number ``ck``: 1, 2, ... in the order
    of run and checkpoint, the same in every statement that selects them."""
    return f"SELECT row_number() OVER (ORDER BY run, checkpoint) AS ck, * FROM checkpoints WHERE {target}"


def part_queries(features: Sequence[str]) -> dict[str, str]:
    """Each part's sums per (``ck``, ``pidx``) as a query over ``ns`` and the numbered
    checkpoints; ``f`` only with ``features`` (fixed detector names)."""
    for name in features:
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"feature {name!r}: not a detector name")
    kl_values = {name: (f"v.{name}", None) for name in KL_VALUES}
    score_values = {name: ("v.value", f"v.scorer_id = c.{column}") for name, column in SCORE_VALUES.items()}
    feature_values = {name: ("v.value::DOUBLE", f"v.feature = '{name}'") for name in features}
    scorer_match = " OR ".join(f"v.scorer_id = c.{column}" for column in SCORE_VALUES.values())
    queries = {
        "b": f"""SELECT ck, pidx, count(*) AS n,
           {sums({name: (expr, None) for name, expr in SAMPLE_TABLE_VALUES.items()})}
    FROM ns
    GROUP BY ck, pidx""",
        "k": f"""SELECT ns.ck, ns.pidx,
           {sums(kl_values)}
    FROM kl v JOIN ns ON v.sample_id = ns.sample_id JOIN {NUMBERED} c ON c.ck = ns.ck AND v.ref_fp = c.ref_fp
    GROUP BY ns.ck, ns.pidx""",
        "sc": f"""SELECT ns.ck, ns.pidx,
           {sums(score_values)}
    FROM scores v JOIN ns ON v.sample_id = ns.sample_id JOIN {NUMBERED} c ON c.ck = ns.ck AND ({scorer_match})
    GROUP BY ns.ck, ns.pidx""",
    }
    if features:
        queries["f"] = f"""SELECT ns.ck, ns.pidx,
           {sums(feature_values)}
    FROM features v JOIN ns ON v.sample_id = ns.sample_id
    GROUP BY ns.ck, ns.pidx"""
    return queries


def _per_prompt(features: Sequence[str]) -> str:
    """The ``WITH`` body over the filled temporary tables: ``target`` and ``per_prompt``."""
    values = {"b": SAMPLE_TABLE_VALUES, "k": KL_VALUES, "sc": SCORE_VALUES, "f": features}
    columns = ["b.n"] + [f"{part}.{name}_{kind}" for part, names in values.items() for name in names
                         for kind in ("sum", "n")]  # fmt: skip
    joins = "".join(
        f"\n    LEFT JOIN {NUMBERED}_{part} {part} ON {part}.ck = b.ck AND {part}.pidx = b.pidx"
        for part in PARTS[1:]
        if part != "f" or features
    )
    return f"""target AS (
    SELECT * FROM {NUMBERED}
), per_prompt AS (
    SELECT c.run, c.checkpoint, p.prompt_id, {", ".join(columns)}
    FROM {NUMBERED}_b b
    JOIN {NUMBERED} c ON c.ck = b.ck
    JOIN prompts p ON p.suite_fp = c.suite_fp AND p.idx = b.pidx{joins}
)"""


@contextmanager
def per_prompt_sums(con: Any, target: str, params: Sequence[Any], features: Sequence[str]) -> Iterator[str]:
    """Fill the temporary tables of the checkpoints selected by the SQL condition ``target`` (a
    fixed fragment chosen by the code, whose ``?`` take ``params``) and of each part's sums, one
    statement at a time, on ``con``; yield the ``WITH`` body (``target``, ``per_prompt``) that
    reads them. They are dropped after the block; on an error they are left to the connection
    (a failed transaction discards them, and each use replaces them)."""
    queries = part_queries(features)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {NUMBERED} AS {numbered_checkpoints(target)}", list(params))
    for part, query in queries.items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE {NUMBERED}_{part} AS WITH {_NARROW} {query}")
    yield _per_prompt(features)
    for name in [NUMBERED, *(f"{NUMBERED}_{part}" for part in queries)]:
        con.execute(f"DROP TABLE temp.{name}")
