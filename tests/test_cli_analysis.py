"""The analysis commands end to end through the CLI: ``bon``, ``analyze``, ``compare``, ``rank``
and the analysis that ``eval`` runs at its end, each checked against values recomputed here from
the stored per-sample rows (``checkpoint_samples``), without the library's estimators."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_cli_eval import run_cli

PROMPTS = ["the cat sat", "explain why the sky", "list three good ideas", "a dog runs", "the sun is"]
#: Words of ``VARIANT_A_TEXTS`` (conftest): the gold of the sweep favours the policy tuned on them.
A_WORDS = ("the", "cat", "sat", "on", "a", "mat", "dog", "runs", "fast", "and")
REPLICATES = "200"


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture(scope="module")
def bon_suite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bon_suite") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]))
    return path


@pytest.fixture(scope="module")
def scorer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Callable scorers: two golds, and a coarse proxy whose scores tie often (best-of-n ties)."""
    path = tmp_path_factory.mktemp("scorers") / "scorers.py"
    path.write_text(
        f"A_WORDS = set({list(A_WORDS)!r})\n"
        "def score(prompts, responses):\n"
        "    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n"
        "def a_words(prompts, responses):\n"
        "    return [sum(w in A_WORDS for w in r.split()) + 0.1 * len(set(r.split())) for r in responses]\n"
        "def coarse_length(prompts, responses):\n"
        "    return [float(len(r.split()) // 3) for r in responses]\n"
    )
    return path


def table_rows(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def error_line(err: str) -> str:
    """The single non-empty stderr line of a domain error."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def per_prompt_means(db: Path, run: str, column: str) -> dict[str, dict[str, float]]:
    """checkpoint -> prompt id -> mean of ``column`` over the prompt's samples, from checkpoint_samples."""
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for checkpoint, prompt_id, value in table_rows(
        db, f"SELECT checkpoint, prompt_id, {column} FROM checkpoint_samples WHERE run = ?", [run]
    ):
        assert value is not None
        grouped[checkpoint][prompt_id].append(value)
    return {c: {p: mean(v) for p, v in prompts.items()} for c, prompts in grouped.items()}


def mean_over_prompts(values: dict[str, float]) -> float:
    return mean(list(values.values()))


def ci_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if "_ci_" in k or k in ("prob_best", "best_probability")}


# --------------------------------------------------------------------------- best-of-n


def bon_args(db: Path, policy: Path, suite: Path, proxy: str, gold: str, run: str = "fam") -> list[str]:
    return [
        "bon", "--policy", str(policy), "--suite", str(suite), "--proxy", proxy, "--gold", gold,
        "--pool", "8", "--n", "1,2,4,8", "--run", run, "--db", str(db), "--max-new-tokens", "6",
        "--replicates", REPLICATES, "--no-progress",
    ]  # fmt: skip


def brute_force_best_of_n(pool: list[tuple[float, float]], n: int) -> float:
    """Mean over every n-subset of (proxy, gold) pairs of the gold of the subset's proxy-best
    sample, samples tied at the best proxy sharing it evenly."""
    total, count = 0.0, 0
    for subset in itertools.combinations(pool, n):
        best = max(proxy for proxy, _ in subset)
        tied = [gold for proxy, gold in subset if proxy == best]
        total += sum(tied) / len(tied)
        count += 1
    return total / count


BonFamily = tuple[Path, list[str], dict[str, Any], str]  # db, command line, --json output, stderr


def make_bon_family(db: Path, policy: Path, suite: Path, proxy: str, gold: str) -> BonFamily:
    """A best-of-n family ``fam`` (pool 8, n = 1, 2, 4, 8) of ``policy``, made with ``--json``."""
    args = bon_args(db, policy, suite, proxy, gold)
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    return db, args, json.loads(out), err


@pytest.fixture(scope="module")
def bon_ties(
    tmp_path_factory: pytest.TempPathFactory, bon_suite_file: Path, scorer_file: Path, gpt2_ref: Path
) -> BonFamily:
    """Proxy: a callable that scores words // 3, so best-of-n often meets ties; gold a callable."""
    db = tmp_path_factory.mktemp("bon_ties") / "bon.duckdb"
    return make_bon_family(db, gpt2_ref, bon_suite_file, f"{scorer_file}:coarse_length", f"{scorer_file}:score")


@pytest.fixture(scope="module")
def bon_rm(
    tmp_path_factory: pytest.TempPathFactory, bon_suite_file: Path, scorer_file: Path, gpt2_ref: Path,
    reward_model_dir: Path,
) -> BonFamily:  # fmt: skip
    """Proxy: the tiny reward model; gold a callable."""
    db = tmp_path_factory.mktemp("bon_rm") / "bon.duckdb"
    return make_bon_family(db, gpt2_ref, bon_suite_file, str(reward_model_dir), f"{scorer_file}:score")


@pytest.mark.parametrize("family", ["bon_ties", "bon_rm"])
def test_bon_values_match_brute_force_over_the_stored_pool(family: str, request: pytest.FixtureRequest) -> None:
    db, _, payload, err = request.getfixturevalue(family)
    assert "generated 24 samples" in err  # 3 prompts x pool 8
    pools: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for prompt_id, proxy, gold in table_rows(
        db,
        "SELECT prompt_id, proxy_reward, gold_reward FROM checkpoint_samples WHERE run = 'fam-pool' AND is_reference",
    ):
        assert proxy is not None and gold is not None
        pools[prompt_id].append((proxy, gold))
    assert sorted(len(pool) for pool in pools.values()) == [8, 8, 8]
    if family == "bon_ties":  # the case the tie rule is for: several samples share a pool's best proxy
        assert any(sum(p == max(q for q, _ in pool) for p, _ in pool) > 1 for pool in pools.values())

    rows = table_rows(
        db,
        "SELECT checkpoint, step, method, kl, gold_reward, n_prompts, n_samples, is_reference "
        "FROM checkpoint_summary WHERE run = 'fam' ORDER BY step",
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [(f"n={n}", n, "bon") for n in (1, 2, 4, 8)]
    expected_gold = {}
    for checkpoint, n, _, kl, gold, n_prompts, n_samples, is_reference in rows:
        expected_gold[checkpoint] = mean([brute_force_best_of_n(pool, n) for pool in pools.values()])
        assert gold == pytest.approx(expected_gold[checkpoint], rel=1e-9, abs=1e-12), checkpoint
        assert kl == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-12)
        assert (n_prompts, n_samples, is_reference) == (3, 24, n == 1)
    # n = 1 is the pool's plain mean
    plain = [g for pool in pools.values() for _, g in pool]
    assert expected_gold["n=1"] == pytest.approx(mean(plain))

    # --json: the same summary rows and the family's verdict
    assert [r["checkpoint"] for r in payload["summary"]] == ["n=1", "n=2", "n=4", "n=8"]
    for row in payload["summary"]:
        assert row["run"] == "fam" and row["gold_reward"] == pytest.approx(expected_gold[row["checkpoint"]])
    (verdict,) = payload["overoptimization"]
    assert verdict["run"] == "fam" and verdict["kind"] == "bon" and verdict["n_points"] == 4
    assert verdict["peak_checkpoint"] == max(expected_gold, key=expected_gold.__getitem__)
    # the view holds the family, not its pool, once
    assert table_rows(db, "SELECT run, peak_checkpoint, stale FROM overoptimization") == [
        ("fam", verdict["peak_checkpoint"], False)
    ]


def test_bon_rerun_samples_nothing_and_keeps_the_values(bon_ties: BonFamily) -> None:
    db, args, _, _ = bon_ties
    values_sql = "SELECT run, n, prompt_id, metric, value FROM bon_values ORDER BY ALL"
    before = table_rows(db, values_sql)
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert "generated 0 samples, 0 KL, 0 scores, 0 feature rows" in err
    assert "n=8" in out and "fam:" in out  # the table and the verdict line
    assert table_rows(db, values_sql) == before
    assert table_rows(db, "SELECT count(*) FROM bon_runs")[0][0] == 1
    assert table_rows(db, "SELECT count(*) FROM overoptimization")[0][0] == 1


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--n", "0,2"], "--n '0,2'"),
        (["--n", "16"], "--n '16'"),
        (["--n", "two"], "--n 'two'"),
        (["--pool", "0"], "--pool 0"),
        (["--run", "fam-pool"], "--run 'fam-pool'"),
    ],
)
def test_bon_bad_input_is_one_line_exit_2(
    extra: list[str], needle: str, tmp_path: Path, bon_suite_file: Path, scorer_file: Path, gpt2_ref: Path
) -> None:
    db = tmp_path / "bad.duckdb"
    gold = f"{scorer_file}:score"
    args = bon_args(db, gpt2_ref, bon_suite_file, f"{scorer_file}:coarse_length", gold)
    # later flags win: --n/--pool/--run given again replace the defaults above
    code, _, err = run_cli(*args, *extra)
    assert code == 2, err
    assert needle in error_line(err)
    assert not db.exists()


# --------------------------------------------------------------------------- a small RL sweep


@pytest.fixture(scope="module")
def sweep(
    tmp_path_factory: pytest.TempPathFactory, suite_file: Path, scorer_file: Path, gpt2_ref: Path,
    gpt2_variant_a: Path, gpt2_variant_b: Path, reward_model_dir: Path,
) -> tuple[Path, str]:  # fmt: skip
    """Run ``sweep``: the reference and two checkpoints (steps 1, 2), 5 prompts x 2 samples,
    gold favouring the words variant A was tuned on. ``eval`` analysed it (returned: its stderr)."""
    db = tmp_path_factory.mktemp("sweep") / "sweep.duckdb"
    code, _, err = run_cli(
        "eval", str(gpt2_variant_a), str(gpt2_variant_b), "--run", "sweep", "--ref", str(gpt2_ref),
        "--suite", str(suite_file), "--proxy", str(reward_model_dir), "--gold", f"{scorer_file}:a_words",
        "--db", str(db), "--samples", "2", "--max-new-tokens", "8", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    return db, err


@pytest.fixture
def sweep_db(tmp_path: Path, sweep: tuple[Path, str]) -> Path:
    """A private copy of the sweep's database (tests that write do not disturb the others)."""
    return Path(shutil.copy(sweep[0], tmp_path / "sweep.duckdb"))


def test_eval_analysed_the_sweep_it_evaluated(sweep: tuple[Path, str]) -> None:
    db, err = sweep
    assert table_rows(db, "SELECT run, n_points, stale FROM overoptimization") == [("sweep", 3, False)]
    assert "sweep: gold peaks at" in err
    assert table_rows(db, "SELECT count(*) FROM analysis_points WHERE run = 'sweep'")[0][0] == 3


def test_analyze_matches_an_independent_peak_and_normalization(
    sweep_db: Path, gpt2_variant_a: Path, gpt2_variant_b: Path
) -> None:
    code, out, err = run_cli("analyze", "--db", str(sweep_db), "--json", "--replicates", REPLICATES, "--seed", "7")
    assert code == 0, err
    payload = json.loads(out)
    (row,) = payload["overoptimization"]
    assert row["run"] == "sweep"

    gold = {c: mean_over_prompts(v) for c, v in per_prompt_means(sweep_db, "sweep", "gold_reward").items()}
    assert len(gold) == 3
    reference_gold = [g for (g,) in table_rows(
        sweep_db, "SELECT gold_reward FROM checkpoint_samples WHERE run = 'sweep' AND is_reference"
    )]  # fmt: skip
    assert len(reference_gold) == 10
    sd = statistics.stdev(reference_gold)
    normalized = {c: (g - gold["reference"]) / sd for c, g in gold.items()}
    peak = max(normalized, key=normalized.__getitem__)

    view = dict(
        zip(
            ["run", "peak_checkpoint", "last_checkpoint", "gold_norm_at_peak", "gold_norm_at_last", "seed", "reps"],
            table_rows(
                sweep_db,
                "SELECT run, peak_checkpoint, last_checkpoint, gold_norm_at_peak, gold_norm_at_last, seed, replicates "
                "FROM overoptimization",
            )[0],
            strict=True,
        )
    )
    assert table_rows(sweep_db, "SELECT count(*) FROM overoptimization")[0][0] == 1
    assert view["peak_checkpoint"] == row["peak_checkpoint"] == peak
    assert view["last_checkpoint"] == gpt2_variant_b.name
    assert view["gold_norm_at_last"] == pytest.approx(normalized[gpt2_variant_b.name], rel=1e-9, abs=1e-12)
    assert row["gold_norm_at_last"] == pytest.approx(normalized[gpt2_variant_b.name], rel=1e-9, abs=1e-12)
    assert view["gold_norm_at_peak"] == pytest.approx(normalized[peak], rel=1e-9, abs=1e-12)
    assert (view["seed"], view["reps"]) == (7, 200)
    # every point's normalized gold, as checkpoint_summary shows it
    for checkpoint, value in table_rows(
        sweep_db, "SELECT checkpoint, gold_reward_norm FROM checkpoint_summary WHERE run = 'sweep'"
    ):
        assert value == pytest.approx(normalized[checkpoint], rel=1e-9, abs=1e-12), checkpoint
    assert [p["checkpoint"] for p in payload["points"]] == ["reference", gpt2_variant_a.name, gpt2_variant_b.name]

    # the same seed: the same intervals
    code, again, err = run_cli("analyze", "--db", str(sweep_db), "--json", "--replicates", REPLICATES, "--seed", "7")
    assert code == 0, err
    repeat = json.loads(again)
    assert ci_fields(repeat["overoptimization"][0]) == ci_fields(row)
    assert [ci_fields(p) for p in repeat["points"]] == [ci_fields(p) for p in payload["points"]]
    assert any(v is not None for v in ci_fields(row).values())


def test_analyze_with_another_kl_estimator_uses_it(sweep_db: Path) -> None:
    code, out, err = run_cli(
        "analyze", "--db", str(sweep_db), "--json", "--replicates", REPLICATES, "--kl-estimator", "kl_k1"
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["overoptimization"][0]["kl_estimator"] == "kl_k1"
    kl_k1 = {c: mean_over_prompts(v) for c, v in per_prompt_means(sweep_db, "sweep", "kl_k1").items()}
    for point in payload["points"]:
        assert point["kl"] == pytest.approx(kl_k1[point["checkpoint"]], rel=1e-9, abs=1e-12)
    assert table_rows(sweep_db, "SELECT kl_estimator FROM overoptimization") == [("kl_k1",)]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--run", "swep"], ["--run 'swep'", "Did you mean 'sweep'?"]),
        (["--run", "zzzzzz"], ["--run 'zzzzzz'"]),
        (["--kl-estimator", "nope"], ["--kl-estimator 'nope'", "kl_full"]),
        (["--kl-estimator", "analytic"], ["--kl-estimator 'analytic'"]),
        (["--replicates", "50"], ["--replicates 50"]),
    ],
)
def test_analyze_bad_input_is_one_line_exit_2(extra: list[str], needles: list[str], sweep_db: Path) -> None:
    before = table_rows(sweep_db, "SELECT * FROM analysis_runs")
    code, _, err = run_cli("analyze", "--db", str(sweep_db), *extra)
    assert code == 2, err
    line = error_line(err)
    for needle in needles:
        assert needle in line
    if extra[1] == "zzzzzz":
        assert "Did you mean" not in line
    assert table_rows(sweep_db, "SELECT * FROM analysis_runs") == before


def test_compare_delta_is_the_paired_mean_difference(sweep_db: Path, gpt2_variant_a: Path) -> None:
    name = gpt2_variant_a.name
    code, out, err = run_cli(
        "compare", "sweep/reference", f"sweep/{name}", "--db", str(sweep_db), "--json", "--replicates", REPLICATES
    )
    assert code == 0, err
    payload = json.loads(out)
    assert (payload["a"], payload["b"], payload["shared_prompts"]) == ("sweep/reference", f"sweep/{name}", 5)
    metrics = {m["metric"]: m for m in payload["metrics"]}
    assert {"gold_reward", "proxy_reward", "kl", "n_tokens"} <= set(metrics)
    for column, metric in (("gold_reward", "gold_reward"), ("proxy_reward", "proxy_reward"), ("n_tokens", "n_tokens")):
        means = per_prompt_means(sweep_db, "sweep", column)
        shared = sorted(set(means["reference"]) & set(means[name]))
        expected = mean([means[name][p] - means["reference"][p] for p in shared])
        assert metrics[metric]["delta"] == pytest.approx(expected, rel=1e-9, abs=1e-12), metric
        assert metrics[metric]["n_prompts"] == len(shared) == 5
    # p-values: two-sided from the one-sided ones, Holm over the listed metrics
    rows = payload["metrics"]
    for m in rows:
        assert m["p_value"] == pytest.approx(min(1.0, 2 * min(m["p_greater"], m["p_less"])))
        assert m["p_adjusted"] >= m["p_value"] - 1e-15
    ordered = sorted(rows, key=lambda m: m["p_value"])
    running = 0.0
    for j, m in enumerate(ordered):
        running = max(running, min(1.0, (len(rows) - j) * m["p_value"]))
        assert m["p_adjusted"] == pytest.approx(running), m["metric"]

    # RUN/STEP names the same points; --metric keeps only the metric asked for
    code, out, err = run_cli(
        "compare", "sweep/0", "sweep/1", "--db", str(sweep_db), "--json", "--replicates", REPLICATES,
        "--metric", "gold_reward",
    )  # fmt: skip
    assert code == 0, err
    by_step = json.loads(out)
    assert (by_step["a"], by_step["b"]) == ("sweep/reference", f"sweep/{name}")
    (only,) = by_step["metrics"]
    assert only["metric"] == "gold_reward" and only["delta"] == pytest.approx(metrics["gold_reward"]["delta"])
    assert only["p_adjusted"] == pytest.approx(only["p_value"])  # a family of one


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sweep/reference", "sweep/checkpoint-9"], ["sweep/checkpoint-9: no such checkpoint"]),
        (["sweep/reference", "sweep/7"], ["sweep/7: no such checkpoint"]),
        (["nonsense", "sweep/reference"], ["'nonsense'", "RUN/CHECKPOINT"]),
        (["swep/reference", "sweep/reference"], ["'swep': no such run", "Did you mean 'sweep'?"]),
        (["sweep/reference", "sweep/1", "--metric", "gold_rewrd"], ["'gold_rewrd'", "Did you mean 'gold_reward'?"]),
    ],
)
def test_compare_bad_input_is_one_line_exit_2(
    args: list[str], needles: list[str], sweep_db: Path, gpt2_variant_a: Path, gpt2_variant_b: Path
) -> None:
    code, _, err = run_cli("compare", *args, "--db", str(sweep_db))
    assert code == 2, err
    line = error_line(err)
    for needle in needles:
        assert needle in line
    if "no such checkpoint" in line:  # the known checkpoints are listed
        assert gpt2_variant_a.name in line and gpt2_variant_b.name in line and "reference" in line


def rank_json(db: Path, *extra: str) -> dict[str, Any]:
    code, out, err = run_cli("rank", "--db", str(db), "--json", "--replicates", REPLICATES, *extra)
    assert code == 0, err
    return json.loads(out)


def test_rank_anchors_at_the_reference_and_follows_gold(sweep_db: Path) -> None:
    payload = rank_json(sweep_db)
    labels = [r["checkpoint"] for r in payload["ranking"]]
    gold = per_prompt_means(sweep_db, "sweep", "gold_reward")
    assert payload["anchor"] == "sweep/reference"
    assert sorted(labels) == sorted(f"sweep/{c}" for c in gold) and len(labels) == len(set(labels)) == 3
    rows = {r["checkpoint"]: r for r in payload["ranking"]}
    assert rows["sweep/reference"]["theta"] == 0.0
    assert [r["rank"] for r in payload["ranking"]] == [1, 2, 3]
    assert [r["theta"] for r in payload["ranking"]] == sorted((r["theta"] for r in payload["ranking"]), reverse=True)
    # every pair on every prompt: 3 pairs x 5 prompts
    assert (payload["n_comparisons"], payload["n_prompts"], payload["external_labels"]) == (15, 5, 0)
    # a complete, balanced design: strengths follow the pairwise win totals (ties half)
    checkpoints = sorted(gold)
    wins = dict.fromkeys(checkpoints, 0.0)
    for x, y in itertools.combinations(checkpoints, 2):
        for p in gold[x]:
            gx, gy = gold[x][p], gold[y][p]
            wins[x] += 1.0 if gx > gy else 0.5 if gx == gy else 0.0
            wins[y] += 1.0 if gy > gx else 0.5 if gx == gy else 0.0
    for x, y in itertools.permutations(checkpoints, 2):
        if wins[x] > wins[y]:
            assert rows[f"sweep/{x}"]["theta"] > rows[f"sweep/{y}"]["theta"], (x, y, wins)


def test_rank_external_labels_move_the_fit(tmp_path: Path, sweep_db: Path) -> None:
    before = {r["checkpoint"]: r["theta"] for r in rank_json(sweep_db)["ranking"]}
    loser = min((c for c in before if c != "sweep/reference"), key=before.__getitem__)
    prompt_ids = [p for (p,) in table_rows(sweep_db, "SELECT DISTINCT prompt_id FROM checkpoint_samples")]
    labels = tmp_path / "labels.jsonl"
    lines = []
    for i in range(40):  # the weakest checkpoint beats the reference on every external label
        pid = prompt_ids[i % len(prompt_ids)] if i < 20 else f"judge-{i}"
        if i % 2:
            lines.append({"prompt_id": pid, "a": loser, "b": "sweep/reference", "winner": "a"})
        else:
            lines.append({"prompt_id": pid, "a": "sweep/reference", "b": loser, "winner": loser})
    labels.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    payload = rank_json(sweep_db, "--labels", str(labels))
    after = {r["checkpoint"]: r["theta"] for r in payload["ranking"]}
    assert payload["external_labels"] == 40
    assert payload["n_comparisons"] == 15 + 40
    assert after["sweep/reference"] == 0.0
    assert after[loser] > before[loser] and after[loser] > 0

    # the other way round: the reference wins every label, the loser sinks further
    labels.write_text(
        "".join(
            json.dumps({"prompt_id": f"q{i}", "a": loser, "b": "sweep/reference", "winner": "b"}) + "\n"
            for i in range(40)
        )
    )
    assert {r["checkpoint"]: r["theta"] for r in rank_json(sweep_db, "--labels", str(labels))["ranking"]}[
        loser
    ] < before[loser]


@pytest.mark.parametrize(
    ("second_line", "needle"),
    [
        ("{not json", "not valid JSON"),
        ('{"prompt_id": "p", "a": "sweep/reference", "b": "sweep/nowhere", "winner": "a"}', "unknown checkpoint"),
        ('{"prompt_id": "p", "a": "sweep/reference", "winner": "a"}', "missing key 'b'"),
        ('{"prompt_id": "p", "a": "sweep/reference", "b": "sweep/x", "winner": "both"}', "winner 'both'"),
    ],
)
def test_rank_bad_label_line_names_file_and_line(
    second_line: str, needle: str, tmp_path: Path, sweep_db: Path, gpt2_variant_a: Path
) -> None:
    labels = tmp_path / "labels.jsonl"
    good = {"prompt_id": "p", "a": f"sweep/{gpt2_variant_a.name}", "b": "sweep/reference", "winner": "tie"}
    labels.write_text(json.dumps(good) + "\n" + second_line + "\n")
    code, _, err = run_cli("rank", "--db", str(sweep_db), "--labels", str(labels), "--replicates", REPLICATES)
    assert code == 2, err
    line = error_line(err)
    assert f"{labels}:2" in line and needle in line


# --------------------------------------------------------------------------- eval's analysis, empty databases


def test_eval_analyses_every_run_it_evaluated_unless_told_not_to(
    tmp_path: Path, suite_file: Path, scorer_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, gpt2_variant_b: Path
) -> None:
    db = tmp_path / "runs.duckdb"
    args = [
        "eval", str(gpt2_variant_a), str(gpt2_variant_b), "--ref", str(gpt2_ref), "--suite", str(suite_file),
        "--proxy", f"{scorer_file}:a_words", "--gold", f"{scorer_file}:score", "--db", str(db),
        "--samples", "2", "--max-new-tokens", "6", "--limit", "3", "--no-progress",
    ]  # fmt: skip
    code, _, err = run_cli(*args, "--no-analysis")
    assert code == 0, err
    runs = sorted(r for (r,) in table_rows(db, "SELECT DISTINCT run FROM checkpoints"))
    assert runs == sorted([gpt2_variant_a.name, gpt2_variant_b.name])
    counts_sql = "SELECT (SELECT count(*) FROM overoptimization), (SELECT count(*) FROM analysis_points)"
    assert table_rows(db, counts_sql) == [(0, 0)]
    assert "gold peaks" not in err

    code, _, err = run_cli(*args)  # cached: only the analysis is new
    assert code == 0, err
    assert "generated 0 samples" in err
    assert sorted(r for (r,) in table_rows(db, "SELECT run FROM overoptimization")) == runs
    assert table_rows(db, counts_sql) == [(len(runs), 2 * len(runs))]  # reference + one checkpoint each
    for run in runs:
        assert f"{run}: gold peaks at" in err


def test_eval_smoke_run_with_one_reference_sample_still_succeeds(
    tmp_path: Path, suite_file: Path, scorer_file: Path, gpt2_ref: Path, gpt2_variant_a: Path
) -> None:
    db = tmp_path / "smoke.duckdb"
    code, _, err = run_cli(
        "eval", str(gpt2_variant_a), "--ref", str(gpt2_ref), "--suite", str(suite_file),
        "--proxy", f"{scorer_file}:a_words", "--gold", f"{scorer_file}:score", "--db", str(db),
        "--samples", "1", "--limit", "1", "--max-new-tokens", "6", "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert table_rows(db, "SELECT count(*) FROM checkpoints") == [(2,)]
    assert "not analysed" in err and "no spread" in err


@pytest.mark.parametrize("command", ["analyze", "rank", "compare"])
def test_missing_database_is_one_line_naming_the_file_and_the_fix(command: str, tmp_path: Path) -> None:
    db = tmp_path / "missing.duckdb"
    extra = ["a/reference", "a/1"] if command == "compare" else []
    code, _, err = run_cli(command, *extra, "--db", str(db))
    assert code == 2, err
    line = error_line(err)
    assert str(db) in line and "rlhf-eval eval" in line
    assert not db.exists()


def schema_only_db(path: Path) -> Path:
    """A database with the current schema and no evaluation in it."""
    from rlhf_eval.store import Store

    store = Store(path)
    with store.writer():
        pass
    assert table_rows(path, "SELECT count(*) FROM checkpoints") == [(0,)]
    return path


def test_analyze_database_without_schema_is_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "bare.duckdb"
    duckdb.connect(str(db)).close()
    code, _, err = run_cli("analyze", "--db", str(db))
    assert code == 2, err
    assert str(db) in error_line(err)


def test_rank_empty_database_is_exit_2(tmp_path: Path) -> None:
    db = schema_only_db(tmp_path / "empty.duckdb")
    code, _, err = run_cli("rank", "--db", str(db))
    assert code == 2, err
    line = error_line(err)
    assert str(db) in line and "rlhf-eval eval" in line


def test_analyze_empty_database_is_exit_2(tmp_path: Path) -> None:
    db = schema_only_db(tmp_path / "empty.duckdb")
    code, _, err = run_cli("analyze", "--db", str(db))
    assert code == 2, err
    line = error_line(err)
    assert str(db) in line and "rlhf-eval eval" in line


def test_an_ensemble_proxy_records_its_disagreement_per_checkpoint(
    tmp_path: Path, suite_file: Path, scorer_file: Path, gpt2_ref: Path, gpt2_variant_a: Path, reward_model_dir: Path
) -> None:
    db = tmp_path / "ensemble.duckdb"
    code, _, err = run_cli(
        "eval", str(gpt2_variant_a), "--ref", str(gpt2_ref), "--suite", str(suite_file),
        "--proxy", str(reward_model_dir), "--proxy", f"{scorer_file}:score", "--gold", f"{scorer_file}:a_words",
        "--db", str(db), "--samples", "2", "--max-new-tokens", "8", "--no-progress", "--run", "ens",
    )  # fmt: skip
    assert code == 0, err
    members = [
        spec_id
        for (spec,) in table_rows(db, "SELECT spec FROM scorers WHERE kind = 'ensemble'")
        for spec_id in json.loads(spec)["members"]
    ]
    assert len(members) == 2
    rows = table_rows(
        db,
        "SELECT cs.checkpoint, cs.is_reference, cs.sample_id, sc.scorer_id, sc.value FROM checkpoint_samples cs "
        "JOIN scores sc USING (sample_id) WHERE cs.run = 'ens' AND list_contains(?, sc.scorer_id)",
        [members],
    )
    # independent: standardize each member on the reference's samples (population sd), then the
    # population sd across the two members per sample, averaged per checkpoint
    ref = {m: [v for c, is_ref, _, s, v in rows if is_ref and s == m] for m in members}
    stats = {m: (statistics.fmean(ref[m]), statistics.pstdev(ref[m])) for m in members}
    per_sample: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for checkpoint, _, sample_id, scorer, value in rows:
        per_sample[(checkpoint, sample_id)][scorer] = (value - stats[scorer][0]) / stats[scorer][1]
    expected: dict[str, list[float]] = defaultdict(list)
    for (checkpoint, _), z in per_sample.items():
        expected[checkpoint].append(statistics.pstdev(z.values()))
    stored = dict(table_rows(db, "SELECT checkpoint, proxy_disagreement FROM analysis_points WHERE run = 'ens'"))
    assert set(stored) == set(expected) == {"reference", gpt2_variant_a.name}
    for checkpoint, values in expected.items():
        assert stored[checkpoint] == pytest.approx(statistics.fmean(values), rel=1e-9)
