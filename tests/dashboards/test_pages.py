"""Every dashboard page through Streamlit's AppTest, on the fixture database and on a missing one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"
PAGES = ["overview", "overoptimization", "symptoms", "samples", "compare"]


def start(db: Path, monkeypatch: pytest.MonkeyPatch, page: str = "overview") -> AppTest:
    monkeypatch.setenv("RLHF_EVAL_DB", str(db))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page != "overview":
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def test_overview_lists_runs_and_filters(dashboard_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(dashboard_db, monkeypatch)
    assert at.title[0].value == "Overview"
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["bon", "dpo", "ppo"]
    assert {"method", "n_checkpoints", "verdict", "best_checkpoint", "last_evaluated"} <= set(table.columns)
    assert at.get("download_button")
    at.multiselect(key="ov_methods").set_value(["dpo"]).run()
    assert list(at.dataframe[0].value["run"]) == ["dpo"]
    at.multiselect(key="ov_methods").set_value([]).run()
    at.multiselect(key="ov_suites").set_value(["alpha"]).run()
    assert sorted(at.dataframe[0].value["run"]) == ["bon", "ppo"]
    at.button(key="refresh").click().run()
    at.selectbox(key="auto_refresh").set_value("10 s").run()
    assert not at.exception and sorted(at.dataframe[0].value["run"]) == ["bon", "ppo"]


def test_overoptimization_plots_curves_fits_and_logs(dashboard_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(dashboard_db, monkeypatch, "overoptimization")
    assert at.title[0].value == "Over-optimization"
    assert any("not a fair yardstick" in info.value for info in at.info)
    assert len(charts(at)) >= 1 + 3 + 1  # all runs, one per run, the trainer's KL
    verdicts = at.dataframe[0].value
    assert set(verdicts["kl_estimator"]) == {"kl_full", "analytic"}
    assert any("objective/kl" in json.dumps(spec) and "nats" in json.dumps(spec) for spec in charts(at))
    at.selectbox(key="oo_rl_kl").set_value("kl_k1").run()
    assert not at.exception
    assert set(at.dataframe[0].value["kl_estimator"]) == {"kl_k1", "analytic"}
    at.multiselect(key="oo_runs").set_value(["bon"]).run()
    at.selectbox(key="oo_bon_kl").set_value("plugin").run()
    assert list(at.dataframe[0].value["kl_estimator"]) == ["plugin"]
    assert any("best-of-n" in json.dumps(spec) for spec in charts(at))


def test_symptoms_plots_against_kl_or_step(dashboard_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(dashboard_db, monkeypatch, "symptoms")
    assert at.title[0].value == "Symptoms"
    assert len(charts(at)) == 4
    assert "sqrt_kl" in json.dumps(charts(at)[0])
    at.radio(key="sy_axis").set_value("step").run()
    assert '"field": "step"' in json.dumps(charts(at)[0]).replace('"field":"step"', '"field": "step"')
    at.multiselect(key="sy_metrics").set_value(["loop_rate"]).run()
    assert len(charts(at)) == 1 and not at.exception


def test_samples_shows_pages_side_by_side_with_highlights(dashboard_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(dashboard_db, monkeypatch, "samples")
    assert at.title[0].value == "Samples"
    assert at.selectbox(key="sa_run").value == "dpo"  # families first, the best-of-n pool last
    at.selectbox(key="sa_run").set_value("ppo").run()
    assert at.selectbox(key="sa_checkpoint").value == at.selectbox(key="sa_checkpoint").options[-1]  # the last
    at.selectbox(key="sa_checkpoint").set_value("checkpoint-10").run()
    html = [h.proto.body for h in at.get("html")]
    responses = [h for h in html if "class='response'" in h]
    assert len(responses) == 2 * 10  # policy and reference, 10 per page
    assert any('<mark class="phrase">' in h for h in responses)
    first_page = responses
    at.number_input(key="sa_page").set_value(2).run()
    second = [h.proto.body for h in at.get("html") if "class='response'" in h.proto.body]
    assert second and second != first_page
    at.selectbox(key="sa_checkpoint").set_value("checkpoint-30").run()
    third = [h.proto.body for h in at.get("html") if "class='response'" in h.proto.body]
    assert any('<mark class="rep">' in h for h in third)  # the looping samples of the last checkpoint
    at.text_input(key="sa_search").set_value("'; DROP TABLE checkpoints; --").run()
    assert not at.exception and any("No sample matches" in i.value for i in at.info)


def test_samples_opens_the_checkpoint_named_in_the_url(dashboard_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_EVAL_DB", str(dashboard_db))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"run": "ppo", "checkpoint": "checkpoint-10"})
    at.run()
    at.switch_page("pages/samples.py").run()
    assert not at.exception
    assert (at.selectbox(key="sa_run").value, at.selectbox(key="sa_checkpoint").value) == ("ppo", "checkpoint-10")
    responses = [h.proto.body for h in at.get("html") if "class='response'" in h.proto.body]
    assert responses and "checkpoint-10" in " ".join(c.value for c in at.caption)
    # a run or checkpoint that does not exist falls back to the defaults instead of failing
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update({"run": "'; DROP TABLE runs; --", "checkpoint": "nope"})
    at.run()
    at.switch_page("pages/samples.py").run()
    assert not at.exception and at.selectbox(key="sa_run").value == "dpo"


def test_compare_shows_paired_deltas(dashboard_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(dashboard_db, monkeypatch, "compare")
    assert at.title[0].value == "Compare"
    table = at.dataframe[0].value
    assert {"gold_reward", "proxy_reward", "kl"} <= set(table["metric"])
    assert {"delta", "ci_low", "ci_high", "p_adjusted", "verdict"} <= set(table.columns)
    before = table.set_index("metric")["delta"]["gold_reward"]
    at.selectbox(key="cmp_b").set_value("bon/n=8").run()
    assert not at.exception
    assert at.dataframe[0].value.set_index("metric")["delta"]["gold_reward"] != before
    assert at.get("vega_lite_chart") and at.get("download_button")


@pytest.mark.parametrize("page", PAGES)
def test_missing_database_shows_the_fill_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    db = tmp_path / "nothing.duckdb"
    at = start(db, monkeypatch, page)
    assert any("no database yet" in w.value for w in at.warning)
    code = at.code[0].value
    assert f"rlhf-eval eval PATH --ref REF --suite SUITE --proxy RM --gold RM --db {db}" in code
    assert "rlhf-eval demo" in code
    assert not db.exists()  # reading never creates the file
