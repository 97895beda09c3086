"""The dashboard's query layer against independent computations on the fixture database."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb
import pytest

from rlhf_eval import dashboard_data as data
from rlhf_eval.analysis.checkpoints import compare_checkpoints
from rlhf_eval.store import Store

EVIL = "'; DROP TABLE checkpoints; --"


def rows(db: Path, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cursor = con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def test_overview_matches_the_tables_and_the_verdicts(dashboard_db: Path) -> None:
    shown = {r["run"]: r for r in data.overview(dashboard_db)}
    assert set(shown) == {"ppo", "dpo", "bon"}  # the pool is not a family
    for run in ("ppo", "dpo"):
        points = rows(dashboard_db, "SELECT * FROM checkpoints WHERE run = ?", [run])
        assert shown[run]["n_checkpoints"] == sum(not p["is_reference"] for p in points)
        assert shown[run]["method"] == next(p["method"] for p in points if not p["is_reference"])
        assert shown[run]["last_evaluated"] == max(p["evaluated_at"] for p in points)
        assert shown[run]["kind"] == "rl"
    assert shown["bon"]["n_checkpoints"] == 3 and shown["bon"]["kind"] == "bon"
    verdicts = {r["run"]: r for r in rows(dashboard_db, "SELECT * FROM overoptimization")}
    for run, row in shown.items():
        assert row["overoptimized"] == verdicts[run]["overoptimized"]
        assert row["best_checkpoint"] == verdicts[run]["best_checkpoint"]
        assert row["verdict"].startswith("over-optimized" if verdicts[run]["overoptimized"] else "not over-optimized")
    assert shown["ppo"]["suite"] == "alpha" and shown["dpo"]["suite"] == "beta"


def test_overview_filters(dashboard_db: Path) -> None:
    assert [r["run"] for r in data.overview(dashboard_db, methods=["dpo"])] == ["dpo"]
    assert sorted(r["run"] for r in data.overview(dashboard_db, suites=["alpha"])) == ["bon", "ppo"]
    assert [r["run"] for r in data.overview(dashboard_db, runs=["ppo"], suites=["alpha"])] == ["ppo"]
    assert data.overview(dashboard_db, runs=["ppo"], suites=["beta"]) == []
    options = data.filter_options(dashboard_db)
    assert options == {"runs": ["bon", "dpo", "ppo"], "methods": ["bon", "dpo", "ppo"], "suites": ["alpha", "beta"]}


def test_sql_metacharacters_in_user_input_match_nothing_and_break_nothing(dashboard_db: Path) -> None:
    before = rows(dashboard_db, "SELECT count(*) AS n FROM checkpoints")[0]["n"]
    assert data.overview(dashboard_db, runs=[EVIL], methods=[EVIL], suites=[EVIL]) == []
    assert data.count_samples(dashboard_db, "ppo", "checkpoint-30", EVIL) == 0
    assert data.count_samples(dashboard_db, EVIL, EVIL) == 0
    assert data.sample_page(dashboard_db, EVIL, EVIL) == []
    assert data.symptom_points(dashboard_db, [EVIL]) == []
    assert data.training_series(dashboard_db, EVIL, [EVIL]) == []
    assert data.analysis_points(dashboard_db, [EVIL]) == []
    assert rows(dashboard_db, "SELECT count(*) AS n FROM checkpoints")[0]["n"] == before > 0
    with pytest.raises(ValueError):
        data.sample_page(dashboard_db, "ppo", "checkpoint-30", order=EVIL)
    with pytest.raises(ValueError):
        data.symptom_points(dashboard_db, ["ppo"], [EVIL])


def min_ranks(values: list[float]) -> list[int]:
    """1 + the number of values strictly below each value (ties share the lowest rank)."""
    return [1 + sum(other < v for other in values) for v in values]


def test_proxy_high_gold_low_order_matches_a_python_sort(dashboard_db: Path) -> None:
    raw = rows(
        dashboard_db,
        "SELECT sample_id, prompt_idx, sample_idx, proxy_reward, gold_reward FROM checkpoint_samples "
        "WHERE run = 'ppo' AND checkpoint = 'checkpoint-30'",
    )
    proxy_ranks = min_ranks([r["proxy_reward"] for r in raw])
    gold_ranks = min_ranks([r["gold_reward"] for r in raw])
    expected = sorted(
        zip(raw, proxy_ranks, gold_ranks, strict=True),
        key=lambda t: (-(t[1] - t[2]), t[0]["prompt_idx"], t[0]["sample_idx"]),
    )
    page = data.sample_page(dashboard_db, "ppo", "checkpoint-30", order="hack", limit=1000)
    assert [r["sample_id"] for r in page] == [t[0]["sample_id"] for t in expected]
    assert [r["hack_score"] for r in page] == [t[1] - t[2] for t in expected]
    top = page[0]
    assert top["proxy_rank"] > top["gold_rank"]


@pytest.mark.parametrize("order", ["hack", "prompt", "gold"])
def test_pages_are_disjoint_and_cover_every_sample(dashboard_db: Path, order: str) -> None:
    total = data.count_samples(dashboard_db, "dpo", "checkpoint-20")
    assert total == 12 * 2
    seen: list[str] = []
    for offset in range(0, total + 5, 5):
        page = data.sample_page(dashboard_db, "dpo", "checkpoint-20", order=order, limit=5, offset=offset)
        assert len(page) == min(5, max(0, total - offset))
        assert [r["position"] for r in page] == list(range(offset + 1, offset + 1 + len(page)))
        seen += [r["sample_id"] for r in page]
    assert len(seen) == len(set(seen)) == total
    every = rows(
        dashboard_db, "SELECT sample_id FROM checkpoint_samples WHERE run = 'dpo' AND checkpoint = 'checkpoint-20'"
    )
    assert set(seen) == {r["sample_id"] for r in every}


def test_samples_carry_the_reference_response_and_the_prompt(dashboard_db: Path) -> None:
    reference = {
        (r["prompt_id"], r["sample_idx"]): r
        for r in rows(dashboard_db, "SELECT * FROM checkpoint_samples WHERE run = 'ppo' AND is_reference")
    }
    prompts = {
        r["prompt_id"]: r["text"] for r in rows(dashboard_db, "SELECT * FROM prompts WHERE suite_fp = 'fp-alpha'")
    }
    for row in data.sample_page(dashboard_db, "ppo", "checkpoint-10", order="prompt", limit=50):
        ref = reference[(row["prompt_id"], row["sample_idx"])]
        assert row["ref_response"] == ref["response"]
        assert row["ref_gold_reward"] == ref["gold_reward"]
        assert row["prompt"] == prompts[row["prompt_id"]]


def test_search_filters_prompt_and_response_text(dashboard_db: Path) -> None:
    raw = rows(
        dashboard_db,
        "SELECT s.response, p.text FROM checkpoint_samples s JOIN prompts p ON p.prompt_id = s.prompt_id "
        "AND p.suite_fp = 'fp-alpha' WHERE s.run = 'ppo' AND s.checkpoint = 'checkpoint-30'",
    )
    for needle in ("SORRY", "question 3 ", "<sky> &", "100%_x"):
        expected = sum(needle.lower() in r["response"].lower() or needle.lower() in r["text"].lower() for r in raw)
        assert data.count_samples(dashboard_db, "ppo", "checkpoint-30", needle) == expected
        page = data.sample_page(dashboard_db, "ppo", "checkpoint-30", search=needle, limit=100)
        assert len(page) == expected
    assert data.count_samples(dashboard_db, "ppo", "checkpoint-30", "") == len(raw)


def test_highlight_helper_on_hand_examples() -> None:
    text = "I'm sorry, but the cat sat on the mat. the cat sat on the mat."
    out = data.highlight_html(text)
    assert '<mark class="phrase">I&#x27;m sorry</mark>' in out
    assert out.count('<mark class="rep">') == 1 and "the cat sat on the mat. the cat sat on the mat.</mark>" in out
    assert data.highlight_html('<script>alert("x")</script>') == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    # markup is only ever added around escaped text
    evil = "<img src=x onerror=alert(1)> <img src=x onerror=alert(1)> <img src=x onerror=alert(1)>"
    assert "<img" not in data.highlight_html(evil, n=2)
    assert data.highlight_html("As an AI language model") == '<mark class="phrase">As an AI language model</mark>'
    assert data.highlight_html("as an aid") == "as an aid"
    assert data.repeated_ngram_spans("a b c d x a b c d", 4) == [(0, 7), (10, 17)]
    assert data.highlight_html(None) == ""


def test_symptom_points_match_the_summary_view(dashboard_db: Path) -> None:
    got = data.symptom_points(dashboard_db, ["ppo", "bon"], ["mean_length", "hedge_rate", "gold_reward_debiased"])
    view = {
        (r["run"], r["checkpoint"]): r
        for r in rows(dashboard_db, "SELECT * FROM checkpoint_summary WHERE run IN ('ppo', 'bon')")
    }
    assert len(got) == len(view) == 4 + 4
    for row in got:
        expected = view[(row["run"], row["checkpoint"])]
        for name in ("mean_length", "hedge_rate", "gold_reward_debiased", "sqrt_kl", "step"):
            assert row[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12)
    hedges = rows(dashboard_db, "SELECT avg(hedge) AS h FROM checkpoint_samples WHERE run = 'ppo' AND is_reference")
    assert next(r for r in got if r["run"] == "ppo" and r["is_reference"])["hedge_rate"] == pytest.approx(
        hedges[0]["h"]
    )


def test_analysis_points_and_the_estimator_toggle(dashboard_db: Path) -> None:
    stored = data.analysis_points(dashboard_db, ["ppo"])
    view = {r["checkpoint"]: r for r in rows(dashboard_db, "SELECT * FROM checkpoint_summary WHERE run = 'ppo'")}
    assert [p["checkpoint"] for p in stored] == ["reference", "checkpoint-10", "checkpoint-20", "checkpoint-30"]
    for point in stored:
        assert point["gold_norm"] == pytest.approx(view[point["checkpoint"]]["gold_reward_norm"])
        assert point["kl_estimator"] == "kl_full" and point["kind"] == "rl"
    points, runs, skipped = data.recompute_analysis(dashboard_db, ["ppo"], "kl_k1", replicates=200)
    assert not skipped and runs[0]["kl_estimator"] == "kl_k1"
    # the fixture's k1 is 1.1 x kl_full for every sample, so every point's KL scales by 1.1
    for new, old in zip(points, stored, strict=True):
        assert new["checkpoint"] == old["checkpoint"] and new["kl_estimator"] == "kl_k1"
        assert new["kl"] == pytest.approx(1.1 * old["kl"])
    bon_points, bon_runs, _ = data.recompute_analysis(dashboard_db, ["bon"], "plugin", replicates=200)
    assert bon_runs[0]["kl_estimator"] == "plugin" and {p["kind"] for p in bon_points} == {"bon"}
    after = rows(dashboard_db, "SELECT DISTINCT kl_estimator FROM analysis_runs ORDER BY 1")
    assert [r["kl_estimator"] for r in after] == ["analytic", "kl_full"]  # nothing was written


def test_fit_curve_follows_the_gao_forms() -> None:
    for form, expected in (("bon", lambda d: d * (0.8 - 0.3 * d)), ("rl", lambda d: d * (0.8 - 0.3 * math.log(d)))):
        for point in data.fit_curve(form, 0.8, 0.3, 3.0, n=7)[1:]:
            assert point["reward"] == pytest.approx(expected(point["d"]))
    assert data.fit_curve("rl", 0.8, 0.3, 0.0) == []


def test_training_logs_and_their_scales(dashboard_db: Path) -> None:
    assert data.training_metric_names(dashboard_db, "ppo") == ["objective/kl", "objective/scores"]
    series = data.training_series(dashboard_db, "ppo", ["objective/kl"])
    assert [r["step"] for r in series] == list(range(1, 31))
    assert series[2]["value"] == pytest.approx(1.0)
    assert "nats" in data.metric_scale("objective/kl") and "per-token" in data.metric_scale("kl")


def test_compare_points_is_compare_checkpoints(dashboard_db: Path) -> None:
    result = data.compare_points(dashboard_db, "ppo/reference", "ppo/checkpoint-30", replicates=200)
    direct = compare_checkpoints(dashboard_db, "ppo/reference", "ppo/checkpoint-30", replicates=200)
    assert [r["metric"] for r in result["rows"]] == [m.metric for m in direct.metrics]
    gold = next(r for r in result["rows"] if r["metric"] == "gold_reward")
    per_prompt = rows(
        dashboard_db,
        "SELECT prompt_id, checkpoint, avg(gold_reward) AS g FROM checkpoint_samples WHERE run = 'ppo' "
        "AND checkpoint IN ('reference', 'checkpoint-30') GROUP BY ALL",
    )
    by = {(r["prompt_id"], r["checkpoint"]): r["g"] for r in per_prompt}
    pids = {pid for pid, _ in by}
    expected = sum(by[(p, "checkpoint-30")] - by[(p, "reference")] for p in pids) / len(pids)
    assert gold["delta"] == pytest.approx(expected)
    assert gold["ci_low"] <= gold["delta"] <= gold["ci_high"]
    assert result["n_shared_prompts"] == 12
    assert "bon-pool/reference" not in data.point_labels(dashboard_db)
    assert {"ppo/reference", "bon/n=8", "dpo/checkpoint-30"} <= set(data.point_labels(dashboard_db))


def test_database_problems_say_how_to_fill_it(tmp_path: Path) -> None:
    missing = tmp_path / "none.duckdb"
    assert "no database yet" in (data.database_problem(missing) or "")
    assert f"--db {missing}" in data.fill_command(missing)
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE x (a INT)")
    con.close()
    assert "not an rlhf-eval database" in (data.database_problem(foreign) or "")
    empty = tmp_path / "empty.duckdb"
    Store(empty).migrate()
    assert "no evaluated checkpoint" in (data.database_problem(empty) or "")
    assert data.database_version(missing) == (0, 0)


def test_database_path_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_EVAL_DB", "/somewhere/x.duckdb")
    assert data.database_path() == Path("/somewhere/x.duckdb")
    monkeypatch.delenv("RLHF_EVAL_DB")
    assert data.database_path() == Path("rlhf_eval.duckdb")
