"""``rlhf-eval report``: the evidence of a database in one self-contained HTML file.

The file is meant to be attached to a CI run or mailed: it must open anywhere, offline, and be safe
to open. So it holds no script and loads nothing: figures are inline SVG (``report_plots``), the
style sheet is inline, and a Content-Security-Policy (``default-src 'none'``) tells the browser to
refuse any request or script should one ever slip in. Every string from the database (run and
checkpoint names, prompts, responses: model output is untrusted) is HTML-escaped.

Reading is done here (:func:`collect_report`, through the read-only helpers of
``rlhf_eval.dashboard_data``, so the report shows exactly what the dashboard shows); rendering is a
pure function of what was read (:func:`render_report`, in ``report_html``); :func:`write_report`
writes the file atomically (a temporary file renamed over the target), so a CI step never picks up
half a report.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf_eval import __version__
from rlhf_eval import dashboard_data as data
from rlhf_eval.errors import StoreError, UserInputError, did_you_mean
from rlhf_eval.query import fetch_dicts
from rlhf_eval.report_plots import SYMPTOM_PLOTS

if TYPE_CHECKING:
    from rlhf_eval.gate.records import GateReport


@dataclass(frozen=True)
class RunSelection:
    """The runs a report covers: ``runs`` analysed ones in display order (RL runs, then best-of-n),
    ``not_analysed`` those chosen but without an ``overoptimization`` row."""

    runs: list[str]
    not_analysed: list[str]


@dataclass(frozen=True)
class RunSection:
    """Everything the report shows about one run.

    ``analysis`` is its ``overoptimization`` row, ``points`` its ``analysis_points`` (normalized
    proxy and gold with CIs against sqrt KL), ``symptoms`` its ``checkpoint_summary`` symptom rows,
    ``samples`` the top "proxy high, gold low" samples (``sample_page`` in ``hack`` order) of
    ``samples_from`` (``RUN/CHECKPOINT``); ``with_reference`` says whether each sample is shown next
    to the reference's response to the same prompt (not for a best-of-n pool, which is the
    reference's own samples).
    """

    run: str
    method: str
    kind: str  # "rl" | "bon"
    analysis: dict[str, Any]
    points: list[dict[str, Any]]
    symptoms: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    samples_from: str
    with_reference: bool = True


@dataclass(frozen=True)
class ReportData:
    """What :func:`render_report` renders: the sections of the analysed runs, and the provenance."""

    db: str
    generated_at: datetime
    version: str
    sections: list[RunSection]
    not_analysed: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[str]:
        return [section.run for section in self.sections]


@dataclass(frozen=True)
class WrittenReport:
    """Where :func:`write_report` wrote the report, how big it is, and the runs it covers."""

    path: Path
    runs: list[str]
    not_analysed: list[str]
    size_bytes: int


def fill_hint(db: str | Path) -> str:
    """The commands that fill a database, in one line.

    >>> fill_hint("x.duckdb")
    '`rlhf-eval eval PATH --ref REF --suite SUITE --proxy RM --gold RM --db x.duckdb` or `rlhf-eval demo --db x.duckdb`'
    """
    return f"`rlhf-eval eval PATH --ref REF --suite SUITE --proxy RM --gold RM --db {db}` or `rlhf-eval demo --db {db}`"


def check_database(db: str | Path) -> None:
    """A missing, foreign or empty database is one clear error naming the file and what fills it."""
    if not Path(db).is_file():
        raise StoreError(f"{db}: no such database; fill it with {fill_hint(db)}")
    problem = data.database_problem(db)
    if problem:
        raise UserInputError(f"{problem} The report reads what {fill_hint(db)} writes.")


def select_runs(db: str | Path, runs: list[str] | tuple[str, ...] | None = None) -> RunSelection:
    """The runs to report: ``runs`` when given (each must be a run of ``db``: a best-of-n family,
    not its pool), else every run shown as a family, in the dashboard's order. At least one must
    be analysed."""
    check_database(db)
    families = data.overview(db)
    names = [row["run"] for row in families]
    chosen = families
    if runs:
        pools = set(data.pool_runs(db))
        for name in runs:
            if name in names:
                continue
            if name in pools:
                owner = [r["run"] for r in fetch_dicts(db, "SELECT run FROM bon_runs WHERE pool_run = ?", [name])]
                raise UserInputError(
                    f"--run {name!r}: holds the pool of the best-of-n run {', '.join(owner) or '?'}; report that run"
                )
            raise UserInputError(
                f"--run {name!r}: no such run in {db} (runs: {', '.join(names) or 'none'}).{did_you_mean(name, names)}"
            )
        wanted = set(runs)
        chosen = [row for row in families if row["run"] in wanted]
    analysed = [row["run"] for row in chosen if row["verdict"] != "not analysed"]
    not_analysed = [row["run"] for row in chosen if row["verdict"] == "not analysed"]
    if not analysed:
        which = f" among {', '.join(not_analysed)}" if not_analysed else ""
        raise UserInputError(
            f"{db}: no analysed run{which}; analyse with `rlhf-eval analyze --db {db}` "
            f"(`eval` and `bon` analyse what they evaluate; an empty database fills with {fill_hint(db)})"
        )
    return RunSelection(analysed, not_analysed)


def collect_report(
    db: str | Path,
    runs: list[str] | tuple[str, ...] | None = None,
    samples_per_run: int = 3,
    now: datetime | None = None,
) -> ReportData:
    """Read what the report shows from ``db`` (read-only, parameterized queries of
    ``dashboard_data``). Samples come from each RL run's last checkpoint (the one a run would
    ship, where over-optimization shows) and from each best-of-n family's pool (what its large-n
    points pick from)."""
    if samples_per_run < 0:
        raise UserInputError(f"--samples {samples_per_run}: use 0 or more samples per run")
    selection = select_runs(db, runs)
    chosen = selection.runs
    analyses = {row["run"]: row for row in data.run_analyses(db, chosen)}
    points = data.analysis_points(db, chosen)
    symptoms = data.symptom_points(db, chosen, SYMPTOM_PLOTS)
    pools = {
        row["run"]: row
        for row in fetch_dicts(
            db, "SELECT run, pool_run, pool_checkpoint FROM bon_runs WHERE list_contains(?::VARCHAR[], run)", [chosen]
        )
    }
    sections = []
    for run in chosen:
        analysis = analyses.get(run)
        if analysis is None:  # its analysis was deleted between two reads
            continue
        pool = pools.get(run)
        if analysis["kind"] == "bon" and pool is not None:
            source, with_reference = (pool["pool_run"], pool["pool_checkpoint"]), False
        else:
            source, with_reference = (run, analysis["last_checkpoint"]), True
        samples = []
        if samples_per_run and source[0] and source[1]:
            samples = data.sample_page(db, source[0], source[1], order="hack", limit=samples_per_run)
        sections.append(
            RunSection(
                run=run,
                method=str(analysis["method"]),
                kind=str(analysis["kind"]),
                analysis=analysis,
                points=[p for p in points if p["run"] == run],
                symptoms=[s for s in symptoms if s["run"] == run],
                samples=samples,
                samples_from=f"{source[0]}/{source[1]}",
                with_reference=with_reference,
            )
        )
    return ReportData(
        db=str(db),
        generated_at=now or datetime.now(timezone.utc),
        version=__version__,
        sections=sections,
        not_analysed=selection.not_analysed,
    )


def render_report(report: ReportData, gate: GateReport | None = None) -> str:
    """The HTML page of ``report`` (and of the gate's result when given); a pure function."""
    from rlhf_eval.report_html import render_page

    return render_page(report, gate)


def build_report(
    db: str | Path,
    runs: list[str] | tuple[str, ...] | None = None,
    gate: GateReport | None = None,
    samples_per_run: int = 3,
) -> str:
    """The report of ``db`` as one self-contained HTML string."""
    return render_report(collect_report(db, runs, samples_per_run), gate)


def write_report(
    out: str | Path,
    db: str | Path,
    runs: list[str] | tuple[str, ...] | None = None,
    gate: GateReport | None = None,
    samples_per_run: int = 3,
) -> WrittenReport:
    """Write the report of ``db`` to ``out`` atomically (parent folders created)."""
    check_target(Path(out))
    report = collect_report(db, runs, samples_per_run)
    text = render_report(report, gate)
    path = write_atomic(Path(out), text)
    return WrittenReport(path, report.runs, report.not_analysed, len(text.encode("utf-8")))


def check_target(target: Path) -> None:
    if target.is_dir():
        raise UserInputError(f"--out {target}: is a folder; give a file name such as {target / 'report.html'}")


def write_atomic(target: Path, text: str) -> Path:
    """``text`` (UTF-8) to ``target`` through a temporary file in the same folder renamed over it:
    readers see the old file or the new one, never a partial one."""
    check_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UserInputError(f"--out {target}: cannot write there ({exc.strerror}); choose another path") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


__all__ = [
    "ReportData",
    "RunSection",
    "RunSelection",
    "WrittenReport",
    "build_report",
    "check_database",
    "collect_report",
    "render_report",
    "select_runs",
    "write_report",
]
