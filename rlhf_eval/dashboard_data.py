"""The dashboard's query layer: pure read functions over a database, no Streamlit.

Every function takes the database path first and reads through ``rlhf_eval.query`` (read-only, one
connection per query, retried while the writer flushes). Every value that comes from a user
(a run name, a search string, a page offset) is a ``?`` parameter; the only SQL text chosen at run
time comes from fixed tables in this module (``SAMPLE_ORDERS``, ``SYMPTOMS``). Each function fetches
only what a page shows, aggregated in SQL. The dashboard computes no metric itself: curves, fits,
verdicts and comparisons come from the views and from ``rlhf_eval.analysis``.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhf_eval.detectors.phrases import (
    APOLOGY_PHRASES,
    CLOSER_PHRASES,
    HEDGE_PHRASES,
    REFUSAL_PHRASES,
    compile_phrases,
)
from rlhf_eval.errors import StoreError
from rlhf_eval.query import fetch_dicts, read_connection

#: Environment variable holding the database path, and its default.
DB_ENV = "RLHF_EVAL_DB"
DEFAULT_DB = "rlhf_eval.duckdb"

#: KL estimators the Over-optimization page can switch between (see rlhf_eval.analysis.load).
RL_KL_ESTIMATORS = ("kl_full", "kl_k1", "kl_k2", "kl_k3")
BON_KL_ESTIMATORS = ("analytic", "plugin")

#: Symptom columns of ``checkpoint_summary`` -> label shown on the Symptoms page.
SYMPTOMS: dict[str, str] = {
    "mean_length": "mean length (tokens)",
    "gold_reward_debiased": "length-debiased gold",
    "seq_rep_1": "seq-rep-1",
    "seq_rep_2": "seq-rep-2",
    "seq_rep_3": "seq-rep-3",
    "seq_rep_4": "seq-rep-4",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "compression_ratio": "compression ratio",
    "loop_rate": "loop rate",
    "hedge_rate": "hedge rate",
    "apology_rate": "apology rate",
    "refusal_rate": "refusal rate",
    "closer_rate": "closer rate",
    "md_headers": "markdown headers",
    "md_list_items": "markdown list items",
    "md_bold": "markdown bold",
}

#: Detector values shown next to each sample (``checkpoint_samples`` columns).
SAMPLE_DETECTORS = (
    "seq_rep_4",
    "distinct_2",
    "compression_ratio",
    "tail_loop",
    "hedge",
    "apology",
    "refusal",
    "closer",
    "md_headers",
    "md_list_items",
    "md_bold",
)

#: Sample orders of the Samples page -> ORDER BY text (fixed; the user picks a key, never SQL).
#: ``hack``: rank of proxy minus rank of gold (ascending ranks, ties share the lowest rank), largest
#: first: responses the proxy likes much more than the gold scorer does, i.e. reward-hack candidates.
SAMPLE_ORDERS: dict[str, str] = {
    "hack": "hack_score DESC NULLS LAST, prompt_idx, sample_idx",
    "proxy": "proxy_reward DESC NULLS LAST, prompt_idx, sample_idx",
    "gold": "gold_reward ASC NULLS LAST, prompt_idx, sample_idx",
    "kl": "kl_full DESC NULLS LAST, prompt_idx, sample_idx",
    "length": "n_tokens DESC NULLS LAST, prompt_idx, sample_idx",
    "prompt": "prompt_idx, sample_idx",
}

#: Scales of trainer metrics (docs/trl-metrics.md); anything else is shown "as logged".
METRIC_SCALES: dict[str, str] = {
    "objective/kl": "per-sequence sum, batch mean (nats): the scale of checkpoint_summary.kl",
    "kl": "per-token mean (GRPO/RLOO): multiply by the mean length for a sequence KL",
    "objective/scores": "reward-model score",
    "objective/rlhf_reward": "score − β·KL",
    "objective/non_score_reward": "−β·KL",
    "policy/approxkl_avg": "per-token approximate KL between successive policies, not from the reference",
    "reward": "mean reward of the batch",
    "reward_std": "spread of the batch's rewards",
    "completions/mean_length": "mean completion tokens",
    "rewards/chosen": "β·(log π − log π_ref) on the dataset's chosen responses: not a KL",
    "rewards/rejected": "β·(log π − log π_ref) on the dataset's rejected responses: not a KL",
    "rewards/margins": "chosen − rejected implicit reward: not a KL",
}


# -- the database ----------------------------------------------------------------------------


def database_path(environ: Mapping[str, str] | None = None) -> Path:
    """The database the dashboard reads: ``$RLHF_EVAL_DB``, else ``rlhf_eval.duckdb``.

    >>> database_path({"RLHF_EVAL_DB": "/data/x.duckdb"}), database_path({})
    (PosixPath('/data/x.duckdb'), PosixPath('rlhf_eval.duckdb'))
    """
    env = os.environ if environ is None else environ
    return Path(env.get(DB_ENV) or DEFAULT_DB)


def fill_command(db: str | Path) -> str:
    """The commands that fill a database.

    >>> print(fill_command("x.duckdb"))
    rlhf-eval eval PATH --ref REF --suite SUITE --proxy RM --gold RM --db x.duckdb
    rlhf-eval demo
    """
    return f"rlhf-eval eval PATH --ref REF --suite SUITE --proxy RM --gold RM --db {db}\nrlhf-eval demo"


def database_version(db: str | Path) -> tuple[int, int]:
    """(mtime in ns, size) of the file, (0, 0) when missing: a cache key that changes on every flush."""
    try:
        stat = Path(db).stat()
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


def database_problem(db: str | Path) -> str | None:
    """Why the dashboard cannot show ``db`` (missing, not an rlhf-eval database, empty), or None."""
    try:
        with read_connection(db) as con:
            tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            if "checkpoints" not in tables:
                return f"{db} is not an rlhf-eval database (no checkpoints table)."
            if "checkpoint_stats" not in tables:
                return f"{db} was written by an older rlhf-eval; run any `rlhf-eval eval` on it once to upgrade it."
            row = con.execute("SELECT count(*) FROM checkpoints").fetchone()
            if not row or not row[0]:
                return f"{db} holds no evaluated checkpoint yet."
    except StoreError as exc:
        return str(exc).split(";")[0] + "."
    except Exception as exc:  # a corrupt or foreign file: say what DuckDB said, in one line
        return f"{db} cannot be read: {str(exc).splitlines()[0]}"
    return None


def pool_runs(db: str | Path) -> list[str]:
    """Runs that only hold a best-of-n pool (raw material of a family, not a family)."""
    return [r["pool_run"] for r in fetch_dicts(db, "SELECT DISTINCT pool_run FROM bon_runs ORDER BY pool_run")]


# -- overview --------------------------------------------------------------------------------

_RUNS_SQL = """
WITH points AS (
    SELECT c.run, c.method, c.is_reference, c.evaluated_at, s.name AS suite
    FROM checkpoints c LEFT JOIN suites s USING (suite_fp)
    WHERE c.run NOT IN (SELECT pool_run FROM bon_runs WHERE pool_run IS NOT NULL)
), rl AS (
    SELECT run,
           coalesce(min(method) FILTER (WHERE NOT is_reference), min(method)) AS method,
           'rl' AS kind,
           count(*) FILTER (WHERE NOT is_reference) AS n_checkpoints,
           bool_or(is_reference) AS has_reference,
           string_agg(DISTINCT suite, ', ' ORDER BY suite) AS suite,
           max(evaluated_at) AS last_evaluated
    FROM points GROUP BY run
), bon AS (
    SELECT b.run, 'bon' AS method, 'bon' AS kind,
           len(b.ns) - list_contains(b.ns, 1)::INTEGER AS n_checkpoints,
           list_contains(b.ns, 1) AS has_reference,
           s.name AS suite, b.evaluated_at AS last_evaluated
    FROM bon_runs b LEFT JOIN suites s USING (suite_fp)
), runs AS (
    SELECT * FROM rl UNION ALL BY NAME SELECT * FROM bon
)
SELECT r.run, r.method, r.kind, r.n_checkpoints, r.has_reference, r.suite,
       CASE WHEN o.run IS NULL THEN 'not analysed'
            WHEN o.overoptimized THEN 'over-optimized'
            WHEN o.early_warning THEN 'not over-optimized (early warning: gold no longer rising)'
            ELSE 'not over-optimized' END AS verdict,
       o.overoptimized, o.best_checkpoint, o.best_probability, o.peak_checkpoint, o.gold_drop,
       o.gold_drop_ci_low, o.gold_drop_ci_high, o.evidence, o.kl_estimator, o.stale, o.analysed_at,
       r.last_evaluated
FROM runs r LEFT JOIN overoptimization o USING (run)
"""


def overview(
    db: str | Path,
    runs: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    suites: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per run shown as a family (best-of-n pools left out): method, kind (rl or bon),
    number of checkpoints (the reference not counted), suite, the verdict of ``overoptimization``
    with the best checkpoint, and the last evaluation time; filtered by run, method and suite
    name when given (an empty filter list keeps everything)."""
    where, params = [], []
    for column, values in (("run", runs), ("method", methods), ("suite", suites)):
        if values:
            # suite may list several suites ("a, b"): match any of them
            if column == "suite":
                where.append("list_has_any(string_split(suite, ', '), ?::VARCHAR[])")
            else:
                where.append(f"list_contains(?::VARCHAR[], {column})")
            params.append(list(values))
    sql = f"SELECT * FROM ({_RUNS_SQL}) t"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return fetch_dicts(db, sql + " ORDER BY kind DESC, run", params)


def filter_options(db: str | Path) -> dict[str, list[str]]:
    """The values the Overview filters offer: runs, methods and suite names."""
    rows = fetch_dicts(db, f"SELECT run, method, suite FROM ({_RUNS_SQL}) t")
    suites = {name for r in rows if r["suite"] for name in str(r["suite"]).split(", ")}
    return {
        "runs": sorted(r["run"] for r in rows),
        "methods": sorted({r["method"] for r in rows if r["method"]}),
        "suites": sorted(suites),
    }


def family_runs(db: str | Path) -> list[dict[str, Any]]:
    """(run, method, kind) of every run shown as a family, RL runs first."""
    return [{k: r[k] for k in ("run", "method", "kind")} for r in overview(db)]


# -- over-optimization -----------------------------------------------------------------------

_POINT_COLUMNS = (
    "run, checkpoint, step, kl_estimator, kl, sqrt_kl, proxy_norm, proxy_norm_ci_low, proxy_norm_ci_high, "
    "gold_norm, gold_norm_ci_low, gold_norm_ci_high, prob_best, past_peak, gold_debiased"
)


def analysis_points(db: str | Path, runs: Sequence[str]) -> list[dict[str, Any]]:
    """The stored analysis points of ``runs`` (normalized proxy and gold with CIs against sqrt KL),
    with each run's method and kind, ordered by run and step."""
    return fetch_dicts(
        db,
        f"SELECT p.{_POINT_COLUMNS.replace(', ', ', p.')}, r.method, r.kind "
        "FROM analysis_points p JOIN analysis_runs r USING (run) "
        "WHERE list_contains(?::VARCHAR[], p.run) ORDER BY p.run, p.step, p.checkpoint",
        [list(runs)],
    )


def run_analyses(db: str | Path, runs: Sequence[str]) -> list[dict[str, Any]]:
    """The ``overoptimization`` rows of ``runs`` (verdict, peak, Gao fit with its CIs)."""
    return fetch_dicts(
        db, "SELECT * FROM overoptimization WHERE list_contains(?::VARCHAR[], run) ORDER BY run", [list(runs)]
    )


def recompute_analysis(
    db: str | Path, runs: Sequence[str], kl_estimator: str, replicates: int = 1000
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The analysis of ``runs`` with another KL estimator, computed in memory and never written:
    (points shaped like :func:`analysis_points`, runs shaped like :func:`run_analyses`, skipped
    runs with why). All ``runs`` must be of one kind (RL estimators or best-of-n ones)."""
    from rlhf_eval.analysis.runner import AnalysisOptions, analyze_database

    if not runs:
        return [], [], []
    reports, skipped = analyze_database(
        db, list(runs), AnalysisOptions(kl_estimator=kl_estimator, replicates=replicates), write=False
    )
    names = [c.strip() for c in _POINT_COLUMNS.split(",")]
    points, run_rows = [], []
    for report in reports:
        meta = {"method": report.run_row["method"], "kind": report.run_row["kind"]}
        points += [{**{k: row.get(k) for k in names}, **meta} for row in report.point_rows]
        run_rows.append({**report.run_row, "stale": False})
    return points, run_rows, skipped


def fit_curve(form: str, alpha: float | None, beta: float | None, d_max: float, n: int = 80) -> list[dict[str, float]]:
    """Points (d, reward) of the fitted Gao et al. curve on [0, d_max]: best-of-n R = d(α − βd),
    RL R = d(α − β log d) (``rlhf_eval.analysis.fits.gao_reward``); [] without a fit.

    >>> [p["reward"] for p in fit_curve("bon", 2.0, 0.5, 2.0, n=3)]
    [0.0, 1.5, 2.0]
    >>> fit_curve("rl", None, 1.0, 2.0)
    []
    """
    from rlhf_eval.analysis.fits import gao_reward

    if alpha is None or beta is None or form not in ("bon", "rl") or not (d_max > 0 and math.isfinite(d_max)):
        return []
    ds = [d_max * i / (n - 1) for i in range(n)]
    values = gao_reward(ds, alpha, beta, form)  # type: ignore[arg-type]
    return [{"d": d, "reward": float(r)} for d, r in zip(ds, values, strict=True)]


def training_metric_names(db: str | Path, run: str) -> list[str]:
    """Metrics the trainer logged for ``run`` (``training_logs``), by name."""
    rows = fetch_dicts(db, "SELECT DISTINCT metric FROM training_logs WHERE run = ? ORDER BY metric", [run])
    return [r["metric"] for r in rows]


def training_series(db: str | Path, run: str, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """(step, metric, value) of the chosen trainer metrics of ``run``, as logged, ordered by step."""
    return fetch_dicts(
        db,
        "SELECT step, metric, value FROM training_logs WHERE run = ? AND list_contains(?::VARCHAR[], metric) "
        "ORDER BY metric, step",
        [run, list(metrics)],
    )


def metric_scale(metric: str) -> str:
    """What a trainer metric's numbers mean (docs/trl-metrics.md).

    >>> metric_scale("objective/kl")
    'per-sequence sum, batch mean (nats): the scale of checkpoint_summary.kl'
    >>> metric_scale("loss")
    'as logged by the trainer'
    """
    return METRIC_SCALES.get(metric, "as logged by the trainer")


# -- symptoms --------------------------------------------------------------------------------


def symptom_points(db: str | Path, runs: Sequence[str], symptoms: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per point of ``runs``: run, checkpoint, step, kl, sqrt_kl, is_reference and the symptom columns
    (default every one of ``SYMPTOMS``), from ``checkpoint_summary``; the reference row of each run is
    the baseline. Unknown symptom names are a ValueError."""
    chosen = list(symptoms) if symptoms else list(SYMPTOMS)
    unknown = [name for name in chosen if name not in SYMPTOMS]
    if unknown:
        raise ValueError(f"unknown symptom(s) {unknown}; use {list(SYMPTOMS)}")
    columns = ", ".join(chosen)  # names from SYMPTOMS only
    return fetch_dicts(
        db,
        f"SELECT run, method, checkpoint, step, kl, sqrt_kl, is_reference, {columns} FROM checkpoint_summary "
        "WHERE list_contains(?::VARCHAR[], run) ORDER BY run, step, checkpoint",
        [list(runs)],
    )


# -- samples ---------------------------------------------------------------------------------


def sample_runs(db: str | Path) -> list[str]:
    """Runs with stored samples (every run of ``checkpoints``), best-of-n pools last."""
    rows = fetch_dicts(
        db,
        "SELECT DISTINCT run, run IN (SELECT pool_run FROM bon_runs WHERE pool_run IS NOT NULL) AS is_pool "
        "FROM checkpoints ORDER BY is_pool, run",
    )
    return [r["run"] for r in rows]


def run_checkpoints(db: str | Path, run: str) -> list[dict[str, Any]]:
    """(checkpoint, step, is_reference, samples_per_prompt) of ``run``, the reference first."""
    return fetch_dicts(
        db,
        "SELECT checkpoint, step, is_reference, samples_per_prompt FROM checkpoints WHERE run = ? "
        "ORDER BY NOT is_reference, step, checkpoint",
        [run],
    )


_SAMPLE_BASE = """
WITH cur AS (
    SELECT s.*, p.text AS prompt
    FROM run_samples(?, checkpoint_names := [?]) s
    JOIN checkpoints c ON c.run = s.run AND c.checkpoint = s.checkpoint
    LEFT JOIN prompts p ON p.suite_fp = c.suite_fp AND p.prompt_id = s.prompt_id
    WHERE (? IS NULL OR contains(lower(s.response), lower(?)) OR contains(lower(p.text), lower(?)))
)
"""


def _search_params(search: str | None) -> list[Any]:
    text = search if search else None
    return [text, text, text]


def count_samples(db: str | Path, run: str, checkpoint: str, search: str | None = None) -> int:
    """Samples of one checkpoint, those whose response or prompt contains ``search`` (case-insensitive)."""
    rows = fetch_dicts(db, _SAMPLE_BASE + "SELECT count(*) AS n FROM cur", [run, checkpoint, *_search_params(search)])
    return int(rows[0]["n"]) if rows else 0


def sample_page(
    db: str | Path,
    run: str,
    checkpoint: str,
    *,
    order: str = "hack",
    search: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """One page of a checkpoint's samples in ``order`` (a key of ``SAMPLE_ORDERS``), each with its
    prompt, proxy, gold, KL, detector values, ``proxy_rank``/``gold_rank`` (rank among the
    checkpoint's samples that have both scores, ascending, ties sharing the lowest rank),
    ``hack_score`` = proxy_rank − gold_rank, and the reference's response to the same prompt and
    sample index (``ref_response``, ``ref_proxy_reward``, ``ref_gold_reward``). Only ``limit`` rows
    starting at ``offset`` are read (LIMIT/OFFSET parameters); ``search`` filters as in
    :func:`count_samples`."""
    if order not in SAMPLE_ORDERS:
        raise ValueError(f"order {order!r}: use one of {list(SAMPLE_ORDERS)}")
    if limit < 1 or offset < 0:
        raise ValueError(f"limit {limit} / offset {offset}: use limit >= 1 and offset >= 0")
    detectors = ", ".join(f"r.{name}" for name in SAMPLE_DETECTORS)
    sql = (
        _SAMPLE_BASE
        + """
, scored AS (
    SELECT *, proxy_reward IS NOT NULL AND gold_reward IS NOT NULL AS both_scored FROM cur
), ranked AS (
    SELECT *,
           CASE WHEN both_scored THEN rank() OVER (PARTITION BY both_scored ORDER BY proxy_reward) END AS proxy_rank,
           CASE WHEN both_scored THEN rank() OVER (PARTITION BY both_scored ORDER BY gold_reward) END AS gold_rank
    FROM scored
), scored_ranks AS (
    SELECT *, proxy_rank - gold_rank AS hack_score FROM ranked
), ordered AS (
    SELECT *, row_number() OVER (ORDER BY """
        + SAMPLE_ORDERS[order]
        + """) AS position FROM scored_ranks
), page AS (
    SELECT * FROM ordered ORDER BY position LIMIT ? OFFSET ?
), ref_samples AS (  -- the reference's samples of the page's prompts only (no detector features needed)
    SELECT s.sample_id, s.prompt_id, s.sample_idx, s.response, s.n_tokens, c.proxy_scorer, c.gold_scorer
    FROM checkpoints c
    JOIN samples s
      ON s.model_fp = c.model_fp AND s.gen_key = c.gen_key AND s.sample_idx < c.samples_per_prompt
    WHERE c.run = ? AND c.is_reference AND s.prompt_id IN (SELECT prompt_id FROM page)
), ref_scores AS (
    SELECT sample_id, scorer_id, value FROM scores WHERE sample_id IN (SELECT sample_id FROM ref_samples)
), ref AS (
    SELECT r.prompt_id, r.sample_idx, r.response, px.value AS proxy_reward, gd.value AS gold_reward, r.n_tokens
    FROM ref_samples r
    LEFT JOIN ref_scores px ON px.sample_id = r.sample_id AND px.scorer_id = r.proxy_scorer
    LEFT JOIN ref_scores gd ON gd.sample_id = r.sample_id AND gd.scorer_id = r.gold_scorer
)
SELECT r.position, r.run, r.checkpoint, r.step, r.sample_id, r.prompt_id, r.prompt_idx, r.sample_idx, r.prompt,
       r.response, r.n_tokens, r.ended_eos, r.proxy_reward, r.gold_reward, r.kl_full, r.kl_k1, r.kl_k3,
       r.proxy_rank, r.gold_rank, r.hack_score, """
        + detectors
        + """,
       f.response AS ref_response, f.proxy_reward AS ref_proxy_reward, f.gold_reward AS ref_gold_reward,
       f.n_tokens AS ref_n_tokens
FROM page r
LEFT JOIN ref f ON f.prompt_id = r.prompt_id AND f.sample_idx = r.sample_idx
ORDER BY r.position"""
    )
    return fetch_dicts(db, sql, [run, checkpoint, *_search_params(search), int(limit), int(offset), run])


def repeated_ngram_spans(text: str, n: int = 4) -> list[tuple[int, int]]:
    """Character spans of every occurrence of a word n-gram that occurs more than once in ``text``
    (words as in ``rlhf_eval.detectors.repetition``: ``text.split()``); spans that overlap or are apart
    by whitespace only are merged.

    >>> text = "I think so. I think so. I think so."
    >>> [text[a:b] for a, b in repeated_ngram_spans(text, 3)]
    ['I think so. I think so. I think so.']
    >>> repeated_ngram_spans("a b c d e", 2)
    []
    >>> t = "go go now"
    >>> [t[a:b] for a, b in repeated_ngram_spans(t, 1)]
    ['go go']
    """
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    grams = [tuple(w for _, _, w in words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    spans = [(words[i][0], words[i + n - 1][1]) for i, gram in enumerate(grams) if counts[gram] > 1]
    joined: list[tuple[int, int]] = []
    for start, end in merge_spans(spans):  # spans apart by whitespace only read as one
        if joined and text[joined[-1][1] : start].isspace():
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return joined


def merge_spans(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans merged, sorted.

    >>> merge_spans([(5, 8), (0, 2), (1, 3), (8, 9)])
    [(0, 3), (5, 9)]
    """
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


_BOILERPLATE = compile_phrases([*HEDGE_PHRASES, *APOLOGY_PHRASES, *REFUSAL_PHRASES, *CLOSER_PHRASES])


def phrase_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the boilerplate phrases of ``rlhf_eval.detectors.phrases`` (hedges,
    apologies, refusals, closers) in ``text``.

    >>> t = "As an AI language model, I'm sorry. Hope this helps!"
    >>> [t[a:b] for a, b in phrase_spans(t)]
    ['As an AI language model', "I'm sorry", 'Hope this helps']
    """
    return [m.span() for m in _BOILERPLATE.finditer(text)]


def highlight_html(text: str | None, n: int = 4) -> str:
    """``text`` escaped for HTML, with repeated word n-grams in ``<mark class="rep">`` and boilerplate
    phrases in ``<mark class="phrase">`` (both: ``class="rep phrase"``). The text is escaped piece by
    piece before any markup is added, so a response cannot inject HTML.

    >>> highlight_html("<b>hi</b> hi")
    '&lt;b&gt;hi&lt;/b&gt; hi'
    >>> highlight_html("x y x y", n=2)
    '<mark class="rep">x y x y</mark>'
    >>> highlight_html("Sure, I'm sorry <3")
    'Sure, <mark class="phrase">I&#x27;m sorry</mark> &lt;3'
    """
    if not text:
        return ""
    marks = [0] * len(text)
    for bit, spans in ((1, repeated_ngram_spans(text, n)), (2, phrase_spans(text))):
        for start, end in spans:
            for i in range(start, end):
                marks[i] |= bit
    classes = {1: "rep", 2: "phrase", 3: "rep phrase"}
    out, i = [], 0
    while i < len(text):
        j = i
        while j < len(text) and marks[j] == marks[i]:
            j += 1
        piece = html.escape(text[i:j])
        out.append(f'<mark class="{classes[marks[i]]}">{piece}</mark>' if marks[i] else piece)
        i = j
    return "".join(out)


# -- compare ---------------------------------------------------------------------------------


def point_labels(db: str | Path) -> list[str]:
    """``RUN/CHECKPOINT`` of every point a comparison can name (pools left out), in run and step order."""
    rows = fetch_dicts(  # from the small tables: the aggregating views would pivot every feature row
        db,
        "SELECT run, checkpoint FROM ("
        "  SELECT run, checkpoint, is_reference, step FROM checkpoints"
        "  WHERE run NOT IN (SELECT pool_run FROM bon_runs WHERE pool_run IS NOT NULL)"
        "  UNION ALL"
        "  SELECT run, 'n=' || n AS checkpoint, n = 1 AS is_reference, n AS step FROM bon_runs, unnest(ns) AS t(n)"
        ") ORDER BY run, NOT is_reference, step, checkpoint",
    )
    return [f"{r['run']}/{r['checkpoint']}" for r in rows]


def compare_points(db: str | Path, a: str, b: str, replicates: int = 2000) -> dict[str, Any]:
    """B − A for every metric, paired on shared prompts (``compare_checkpoints``): a dict with
    ``a``, ``b``, ``n_shared_prompts`` and ``rows`` (metric, delta, ci_low, ci_high, p_value,
    p_adjusted, significant, higher_is_better, verdict, n_prompts)."""
    from rlhf_eval.analysis.checkpoints import compare_checkpoints

    result = compare_checkpoints(db, a, b, replicates=replicates)
    rows = [
        {
            "metric": m.metric,
            "delta": m.paired.delta,
            "ci_low": m.paired.ci[0],
            "ci_high": m.paired.ci[1],
            "p_value": m.p_value,
            "p_adjusted": m.p_adjusted,
            "significant": m.significant,
            "higher_is_better": m.higher_is_better,
            "verdict": m.verdict,
            "n_prompts": m.paired.n_prompts,
        }
        for m in result.metrics
    ]
    return {
        "a": f"{result.a.run}/{result.a.checkpoint}",
        "b": f"{result.b.run}/{result.b.checkpoint}",
        "n_shared_prompts": result.n_shared_prompts,
        "rows": rows,
    }


__all__ = [
    "BON_KL_ESTIMATORS",
    "DB_ENV",
    "DEFAULT_DB",
    "RL_KL_ESTIMATORS",
    "SAMPLE_ORDERS",
    "SYMPTOMS",
    "analysis_points",
    "compare_points",
    "count_samples",
    "database_path",
    "database_problem",
    "database_version",
    "family_runs",
    "fill_command",
    "filter_options",
    "fit_curve",
    "highlight_html",
    "merge_spans",
    "metric_scale",
    "overview",
    "phrase_spans",
    "point_labels",
    "pool_runs",
    "recompute_analysis",
    "repeated_ngram_spans",
    "run_analyses",
    "run_checkpoints",
    "sample_page",
    "sample_runs",
    "symptom_points",
    "training_metric_names",
    "training_series",
]
