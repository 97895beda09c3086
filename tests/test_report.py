"""``rlhf-eval report``: the HTML file over the tiny sandbox demo's database (``tiny_demo`` in
conftest.py: runs dpo, dpo-lora, grpo, ppo and the best-of-n family bon, all analysed).

The verdict table is checked cell by cell against the ``overoptimization`` view read here with its
own SQL; text from the database is checked escaped (a response, a prompt and run names carrying
markup); the page is opened in Chromium with every request to anything but the file refused and
recorded (none may happen), no console error, no uncaught error, no dialog, and every figure drawn
with a non-zero size. The browser test follows tests/dashboards/test_browser.py: skipped without
Debian's Chromium unless ``RLHF_EVAL_REQUIRE_BROWSER`` is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from rlhf_eval.cli import app
from rlhf_eval.dashboard_data import sample_page
from rlhf_eval.errors import StoreError, UserInputError
from rlhf_eval.gate.records import GateReport, RuleResult
from rlhf_eval.query import fetch_dicts
from rlhf_eval.report import build_report, collect_report, render_report, write_report
from rlhf_eval.store import Store

RUNS = ["dpo", "dpo-lora", "grpo", "ppo", "bon"]  # RL runs by name, then the best-of-n family
SCRIPT = "<script>alert(1)</script>"
PROMPT = 'what is </div><img src=x onerror="alert(2)">'
VERDICT_HEADERS = [
    "run", "method", "gold peak (checkpoint, step, KL)", "gold at peak → last", "gold drop [95% CI]",
    "over-optimized", "early warning", "Gao fit peak", "evidence",
]  # fmt: skip


# -- reading the page ------------------------------------------------------------------------


class Page(HTMLParser):
    """The cells of every table (text, whitespace collapsed) by the id of the enclosing section,
    and every element's tag and attributes."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.section: str | None = None
        self.tables: dict[str | None, list[list[str]]] = {}
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "section":
            self.section = dict(attrs).get("id")
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables.setdefault(self.section, []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def table(self, section: str) -> list[dict[str, str]]:
        header, *rows = self.tables[section]
        return [dict(zip(header, row, strict=True)) for row in rows]


def signed(value: float) -> str:
    return f"{value:+.2f}"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(tiny_demo: tuple[Path, Path, object]) -> Path:
    return tiny_demo[1]


@pytest.fixture(scope="module")
def report_html(demo_db: Path) -> str:
    return build_report(demo_db)


@pytest.fixture(scope="module")
def altered_db(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A copy of the demo database where ppo's top "proxy high, gold low" sample says ``SCRIPT``
    and its prompt carries markup, ppo's analysis is stale (it saw one point more than stored),
    and grpo is not analysed. Returns (path, the altered sample's row before the change)."""
    path = tmp_path_factory.mktemp("altered") / "altered.duckdb"
    shutil.copyfile(demo_db, path)
    last = fetch_dicts(path, "SELECT last_checkpoint FROM overoptimization WHERE run = 'ppo'")[0]["last_checkpoint"]
    (top,) = sample_page(path, "ppo", last, order="hack", limit=1)
    con = duckdb.connect(str(path))
    try:
        con.execute("UPDATE samples SET response = ? WHERE sample_id = ?", [f"{SCRIPT} tail", top["sample_id"]])
        con.execute("UPDATE prompts SET text = ? WHERE prompt_id = ?", [PROMPT, top["prompt_id"]])
        con.execute("UPDATE analysis_runs SET n_points = n_points + 1 WHERE run = 'ppo'")
        con.execute("DELETE FROM analysis_runs WHERE run = 'grpo'")
        con.execute("DELETE FROM analysis_points WHERE run = 'grpo'")
    finally:
        con.close()
    return path, top


def hand_built_gate(db: str) -> GateReport:
    def rule(name: str, status: str, value: float | bool | None, message: str, **more: Any) -> RuleResult:
        fields: dict[str, Any] = dict(
            rule=name, metric="kl", severity="critical", status=status, kind="absolute", value=value,
            ci_low=None, ci_high=None, compared="value", actual=value, op="<=", threshold=10.0,
            threshold_text="kl <= 10", baseline=None, baseline_label=None, message=message,
        )  # fmt: skip
        return RuleResult(**(fields | more))

    return GateReport(
        policy_path="gates/<release>.yaml",
        policy_name="release <v2>",
        policy_version=1,
        db=db,
        candidate="ppo/checkpoint-30",
        candidate_step=30,
        baseline="ppo/reference",
        results=[
            rule("kl-budget", "pass", 6.1234, "kl 6.123 <= 10: PASS", ci_low=4.5, ci_high=7.25, compared="ci_high"),
            rule(
                "length",
                "warn",
                22.0,
                "mean_length 22 > 18.5: WARN",
                metric="mean_length",
                severity="warning",
                baseline=15.44,
                baseline_label="ppo/reference",
                threshold_text="mean_length <= reference + 20%",
            ),
            rule(
                "not-past-peak",
                "fail",
                True,
                "past_peak is true <b>!= false</b>: FAIL",
                metric="past_peak",
                kind="boolean",
                op="==",
                threshold=False,
                threshold_text="past_peak == false",
            ),
            rule("missing", "error", None, "no value for kl_k9: ERROR", metric="kl_k9"),
        ],  # fmt: skip
    )


# -- content ---------------------------------------------------------------------------------


def test_one_verdict_row_per_analysed_run_with_the_values_of_the_view(demo_db: Path, report_html: str) -> None:
    view = {row["run"]: row for row in fetch_dicts(demo_db, "SELECT * FROM overoptimization")}
    rows = Page(report_html).table("verdicts")
    assert list(rows[0]) == VERDICT_HEADERS
    assert [row["run"] for row in rows] == RUNS
    assert set(view) == set(RUNS)
    for row in rows:
        v = view[row["run"]]
        assert row["method"] == f"{v['method']} {'best-of-n' if v['kind'] == 'bon' else 'RL'}"
        step = "" if v["kind"] == "bon" else f"step {v['peak_step']}, "
        assert row["gold peak (checkpoint, step, KL)"] == f"{v['peak_checkpoint']} {step}KL {v['peak_kl']:.2f}"
        assert row["gold at peak → last"] == f"{signed(v['gold_norm_at_peak'])} → {signed(v['gold_norm_at_last'])}"
        drop = f"{signed(v['gold_drop'])} [{signed(v['gold_drop_ci_low'])}, {signed(v['gold_drop_ci_high'])}]"
        assert row["gold drop [95% CI]"] == drop
        assert row["over-optimized"] == ("yes" if v["overoptimized"] else "no")
        assert row["early warning"].split()[0] == ("yes" if v["early_warning"] else "no")
        if v["fit_peak_resolved"]:
            assert row["Gao fit peak"].startswith(f"KL* {v['fit_kl_star']:.2f}")
        else:
            assert row["Gao fit peak"] == " ".join((v["fit_note"] or "no fit").split())
        assert row["evidence"] == " ".join(v["evidence"].split())
    # the sandbox over-optimizes (tests/sandbox): at least one "yes" must be in the table
    assert any(row["over-optimized"] == "yes" for row in rows)


def test_header_names_the_database_time_version_and_runs(demo_db: Path, report_html: str) -> None:
    from rlhf_eval import __version__

    assert f"<code>{demo_db}</code>" in report_html
    assert re.search(r"<dt>generated</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</dd>", report_html)
    assert f"<dt>rlhf-eval</dt><dd>{__version__}</dd>" in report_html
    for i, run in enumerate(RUNS):
        assert f'<a href="#run-{i}">{run}</a>' in report_html
    assert report_html.count("KL is not a fair yardstick across methods") == 1


def test_one_curve_figure_and_one_symptom_figure_per_run(report_html: str) -> None:
    curves = re.findall(r'<figure id="run-\d+" class="curve">.*?</figure>', report_html, re.S)
    symptoms = re.findall(r'<figure class="symptoms">.*?</figure>', report_html, re.S)
    assert len(curves) == len(symptoms) == len(RUNS)
    for run, curve, symptom in zip(RUNS, curves, symptoms, strict=True):
        assert curve.count("<svg ") == symptom.count("<svg ") == 1
        assert f'aria-label="Proxy and gold reward against square-root KL, run {run}"' in curve
        assert f'aria-label="Symptoms against square-root KL, run {run}"' in symptom
        # proxy, gold, the gold peak, the family in the title; the four symptoms and the baseline
        for text in (">proxy<", ">gold<", ">gold peak (", f">{run} ("):
            assert text in curve, (run, text)
        for text in (">mean length (tokens)<", ">seq-rep-4<", ">loop rate<", ">hedge rate<", ">reference<"):
            assert text in symptom, (run, text)
    assert "(RL, ppo; KL: kl_full)" in report_html and "(best-of-n, bon; KL: analytic)" in report_html


def test_curves_plot_the_normalized_columns_of_checkpoint_summary(demo_db: Path) -> None:
    report = collect_report(demo_db, samples_per_run=0)
    summary = fetch_dicts(
        demo_db,
        "SELECT run, checkpoint, proxy_reward_norm, proxy_reward_norm_ci_low, proxy_reward_norm_ci_high, "
        "gold_reward_norm, gold_reward_norm_ci_low, gold_reward_norm_ci_high FROM checkpoint_summary "
        "WHERE gold_reward_norm IS NOT NULL",
    )
    expected = {(r["run"], r["checkpoint"]): r for r in summary}
    plotted = {(p["run"], p["checkpoint"]): p for s in report.sections for p in s.points}
    assert set(plotted) == set(expected)
    for key, point in plotted.items():
        for name in ("proxy", "gold"):
            for suffix in ("", "_ci_low", "_ci_high"):
                assert point[f"{name}_norm{suffix}"] == pytest.approx(expected[key][f"{name}_reward_norm{suffix}"])
    assert all(not s.samples for s in report.sections)


def test_samples_are_the_top_proxy_high_gold_low_ones_beside_the_reference(demo_db: Path, report_html: str) -> None:
    section = report_html.split('<section id="samples">')[1]
    for run in ("ppo", "bon"):
        part = section.split(f"<h3>{run} <small>")[1].split("<h3>")[0]
        source = "bon-pool/reference" if run == "bon" else "ppo/checkpoint-30"
        assert part.startswith(f"({source})")
        top = sample_page(demo_db, *source.split("/"), order="hack", limit=3)
        assert part.count('<div class="sample">') == 3
        for row in top:
            assert f"proxy {row['proxy_reward']:.3f} (rank {row['proxy_rank']})" in part
        # the pool is the reference's own samples: no reference column there
        assert ('class="text reference"' in part) == (run == "ppo")


def test_no_script_and_no_external_resource_in_the_markup(report_html: str) -> None:
    page = Page(report_html)
    tags = {tag for tag, _ in page.elements}
    assert not tags & {"script", "link", "iframe", "object", "embed", "img", "image", "base", "form"}
    for tag, attrs in page.elements:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            if name in ("src", "href", "xlink:href", "action", "srcset", "poster"):
                assert (value or "").startswith("#"), (tag, name, value)
    assert not re.search(r"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/|url\((?!#)|@import", report_html)
    csp = [a.get("content") or "" for tag, a in page.elements if a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0]


def test_database_text_is_escaped(altered_db: tuple[Path, dict[str, Any]]) -> None:
    path, _ = altered_db
    html = build_report(path, runs=["ppo"])
    assert SCRIPT not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; tail" in html
    assert "what is &lt;/div&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html


def test_run_names_with_markup_are_escaped_in_tables_and_figures(demo_db: Path) -> None:
    report = collect_report(demo_db, runs=["ppo"], samples_per_run=1)
    name = 'x" onmouseover="alert(1)<img src=y>$a$'
    section = dataclasses.replace(report.sections[0], run=name, method="<i>ppo</i>", samples_from=f"{name}/c")
    html = render_report(dataclasses.replace(report, db="<b>db</b>.duckdb", sections=[section]))
    elements = Page(html).elements
    assert not [tag for tag, _ in elements if tag in ("img", "i", "b")]
    assert not [name for _, attrs in elements for name in attrs if name.startswith("on")]
    assert "x&quot; onmouseover=&quot;alert(1)&lt;img src=y&gt;$a$" in html  # tables, headings, aria-labels
    assert '>x" onmouseover="alert(1)&lt;img src=y&gt;$a$ (RL' in html  # the curve's title, as matplotlib wrote it


def test_stale_and_unanalysed_runs_are_said(altered_db: tuple[Path, dict[str, Any]]) -> None:
    path, _ = altered_db
    report = collect_report(path, samples_per_run=0)
    assert report.runs == ["dpo", "dpo-lora", "ppo", "bon"] and report.not_analysed == ["grpo"]
    html = render_report(report)
    rows = {row["run"].split()[0]: row for row in Page(html).table("verdicts")}
    assert "stale" in rows["ppo"]["run"] and "rlhf-eval analyze" in rows["ppo"]["run"]
    assert "stale" not in rows["dpo"]["run"]
    assert "<dt>not analysed</dt><dd>grpo" in html


def test_gate_section_from_a_gate_report(demo_db: Path) -> None:
    gate = hand_built_gate(str(demo_db))
    html = build_report(demo_db, runs=["bon"], gate=gate, samples_per_run=0)
    assert f'<p class="headline error">{gate.headline.replace("<", "&lt;").replace(">", "&gt;")}</p>' in html
    rows = Page(html).table("gate")
    assert [r["rule"] for r in rows] == ["kl-budget", "length", "not-past-peak", "missing"]
    assert [r["status"] for r in rows] == ["pass", "warn", "fail", "error"]
    for status in ("pass", "warn", "fail", "error"):
        assert f'<span class="badge {status}">{status}</span>' in html
    assert rows[0]["value [CI]"] == "6.123 [4.5, 7.25]" and rows[0]["compared"] == "ci_high 6.123"
    assert rows[1]["baseline"] == "15.44 ppo/reference"
    assert rows[1]["threshold"] == "mean_length <= reference + 20% <= 10"
    assert rows[2]["value [CI]"] == "yes" and rows[3]["value [CI]"] == "–"
    assert "past_peak is true &lt;b&gt;!= false&lt;/b&gt;: FAIL" in html
    assert '<a href="#gate">Gate</a>' in html
    assert 'id="gate"' not in build_report(demo_db, runs=["bon"], samples_per_run=0)


# -- errors ----------------------------------------------------------------------------------


def test_missing_empty_and_unanalysed_databases_say_what_fills_them(
    demo_db: Path, tmp_path: Path, altered_db: tuple[Path, dict[str, Any]]
) -> None:
    missing = tmp_path / "none.duckdb"
    with pytest.raises(StoreError, match=re.escape(f"{missing}: no such database")) as exc:
        build_report(missing)
    assert "rlhf-eval eval" in str(exc.value) and "rlhf-eval demo" in str(exc.value)
    assert not missing.exists()

    empty = tmp_path / "empty.duckdb"
    Store(empty).migrate()
    with pytest.raises(UserInputError, match=re.escape(f"{empty} holds no evaluated checkpoint yet")) as exc:
        build_report(empty)
    assert f"--db {empty}" in str(exc.value)

    unanalysed = tmp_path / "unanalysed.duckdb"
    shutil.copyfile(demo_db, unanalysed)
    con = duckdb.connect(str(unanalysed))
    con.execute("DELETE FROM analysis_runs")
    con.close()
    with pytest.raises(UserInputError, match=re.escape(f"{unanalysed}: no analysed run")) as exc:
        build_report(unanalysed)
    assert f"rlhf-eval analyze --db {unanalysed}" in str(exc.value)
    with pytest.raises(UserInputError, match="no analysed run among grpo"):
        build_report(altered_db[0], runs=["grpo"])


def test_unknown_and_pool_runs(demo_db: Path) -> None:
    with pytest.raises(UserInputError, match=r"--run 'ppoo': no such run .* Did you mean 'ppo'\?"):
        build_report(demo_db, runs=["ppoo"])
    with pytest.raises(UserInputError, match="holds the pool of the best-of-n run bon"):
        build_report(demo_db, runs=["bon-pool"])


def test_write_report_is_atomic_and_shareable(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "report.html"
    first = write_report(out, demo_db, runs=["bon"], samples_per_run=0)
    assert first.path == out and first.runs == ["bon"] and first.size_bytes == out.stat().st_size
    out.write_text("old")
    write_report(out, demo_db, runs=["dpo", "bon"], samples_per_run=1)
    assert out.read_text().startswith("<!DOCTYPE html>") and out.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temporary file left
    with pytest.raises(UserInputError, match="is a folder"):
        write_report(tmp_path, demo_db)


# -- the command -----------------------------------------------------------------------------


def test_cli_writes_the_report_and_prints_json(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    args = ["report", "--db", str(demo_db), "--out", str(out), "--run", "ppo", "--run", "bon", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"out": str(out), "runs": ["ppo", "bon"], "gate": None}
    assert [row["run"] for row in Page(out.read_text()).table("verdicts")] == ["ppo", "bon"]


def test_cli_errors_are_one_line_and_exit_2(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    missing = tmp_path / "missing.duckdb"
    result = CliRunner().invoke(app, ["report", "--db", str(missing), "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and str(missing) in result.stderr
    result = CliRunner().invoke(app, ["report", "--db", str(demo_db), "--out", str(out), "--run", "dpo-lor"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "Did you mean 'dpo-lora'?" in result.stderr
    assert not out.exists()


def gate_missing() -> str | None:
    try:
        from rlhf_eval.gate import evaluate_gate  # noqa: F401
    except ImportError as exc:
        return f"rlhf_eval.gate.evaluate_gate cannot be imported: {exc}"
    return None


@pytest.mark.skipif(gate_missing() is not None, reason=gate_missing() or "")
def test_cli_with_a_policy_adds_the_gate(demo_db: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nname: report-test\nbootstrap: {replicates: 200, seed: 0}\nrules:\n"
        "  - {name: kl-budget, metric: kl, statistic: ci_high, max: 1000}\n"
        "  - {name: length, metric: mean_length, max: reference + 1000%, severity: warning}\n"
        "  - {name: not-past-peak, metric: past_peak, equals: false}\n"
    )
    out = tmp_path / "report.html"
    args = ["report", "--db", str(demo_db), "--out", str(out), "--policy", str(policy), "--candidate", "ppo/latest"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr  # the report is written whatever the gate says
    data = json.loads(result.stdout)
    assert data["runs"] == RUNS and data["gate"]["candidate"].startswith("ppo/")
    assert [r["rule"] for r in data["gate"]["results"]] == ["kl-budget", "length", "not-past-peak"]
    html = out.read_text()
    assert data["gate"]["headline"] in html
    assert [r["rule"] for r in Page(html).table("gate")] == ["kl-budget", "length", "not-past-peak"]


# -- in a browser ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRE_ENV = "RLHF_EVAL_REQUIRE_BROWSER"


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium; `make test` installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


@pytest.mark.skipif(
    bool(browser_missing()) and not os.environ.get(REQUIRE_ENV), reason=browser_missing() or "the browser is there"
)
def test_the_report_renders_offline_in_chromium(altered_db: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    why = browser_missing()
    if why:
        pytest.fail(f"{why}; {REQUIRE_ENV} is set, so the browser tests must run")
    from playwright.sync_api import sync_playwright

    db, _ = altered_db
    written = write_report(tmp_path / "report.html", db, gate=hand_built_gate(str(db)))
    url = written.path.resolve().as_uri()
    requests, refused, errors, dialogs = [], [], [], []

    def route(request_route: Any) -> None:
        if request_route.request.url == url:
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", route)
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(url, wait_until="load")
            sizes = page.evaluate(
                "() => [...document.querySelectorAll('svg.fig')].map(s => { const r = s.getBoundingClientRect();"
                " return [r.width, r.height, s.querySelectorAll('path').length]; })"
            )
            scripts = page.evaluate("() => document.scripts.length")
            shown = page.locator(".response", has_text=SCRIPT).count()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"report {written.path}, screenshot {shot}")
    assert not refused and set(requests) <= {url}, f"the page asked the network for {refused or requests}"
    assert not errors and not dialogs and scripts == 0
    assert len(sizes) == 2 * len(written.runs) == 8
    assert all(width > 200 and height > 100 and paths > 10 for width, height, paths in sizes), sizes
    assert shown == 1  # the injected script is shown as text
    assert shot.stat().st_size > 50_000
