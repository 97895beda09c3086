"""The report's HTML: a pure function of ``ReportData`` (and a ``GateReport``), no database, no I/O.

Every value from the database or a policy passes through :func:`esc` (or ``highlight_html``, which
escapes piece by piece) before it reaches the page; the only markup is written here. The page
carries a Content-Security-Policy that allows inline styles and nothing else: no script, no
request, no frame, no form, so even a bug in escaping cannot run code or reach the network.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rlhf_eval.dashboard_data import SAMPLE_DETECTORS, SYMPTOMS, highlight_html
from rlhf_eval.report_plots import SYMPTOM_PLOTS, curve_svg, finite, symptom_svg

if TYPE_CHECKING:
    from rlhf_eval.gate.records import GateReport, RuleResult
    from rlhf_eval.report import ReportData, RunSection

#: Allows the inline style sheet and inline SVG, nothing else (no script, image, font or connection).
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0 auto;
max-width:1180px;padding:16px 24px 48px;color:#1d1d1f;line-height:1.4;font-size:14px}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin:1.2rem 0 .3rem}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dl.meta dt{color:#555}
dl.meta dd{margin:0;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:13px;margin:.4rem 0}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f3f3f5}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
small,.muted{color:#666}.note{background:#f6f8fa;border-left:4px solid #8aa;padding:6px 10px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;font-weight:600;white-space:nowrap}
.yes,.fail{background:#fde2e1;color:#a11}.no,.pass{background:#e3f4e4;color:#175c1c}
.warn,.stale{background:#fff1c7;color:#7a5500}.error{background:#ecdff7;color:#5b1f86}
.headline{font-size:1.05rem;font-weight:600;padding:8px 12px;border-radius:6px}
figure{margin:.6rem 0 1.4rem}figcaption{font-size:13px;color:#333}
svg.fig{max-width:100%;height:auto;display:block}svg.fig *{stroke-linejoin:round;stroke-linecap:butt}
.sample{border:1px solid #ddd;border-radius:6px;padding:8px 10px;margin:.6rem 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:10px}.pair.single{grid-template-columns:1fr}
.text{white-space:pre-wrap;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;
border:1px solid #e3e3e3;border-radius:4px;padding:6px;background:#fcfcfc;overflow-wrap:anywhere}
mark.rep{background:#ffe08a}mark.phrase{background:#ffb3b3}mark.rep.phrase{background:#f5a3ff}
nav a{margin-right:12px}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:0 24px}
@media print{body{max-width:none}.sample,figure{break-inside:avoid}}
"""

KL_NOTE = (
    "KL is not a fair yardstick across methods: RL spends KL differently from best-of-n (whose KL is the "
    "analytic bound log n − (n − 1)/n, or a plug-in estimate from its pool), and DPO is trained off-policy. "
    "Read each run's curve against its own KL and compare peaks within a method (Gao et al. 2022)."
)


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes.

    >>> esc('<script>alert("x")</script>')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'
    >>> esc(None)
    ''
    """
    return "" if value is None else html.escape(str(value), quote=True)


def num(value: Any, fmt: str = ".2f") -> str:
    """A number formatted, "–" when missing or not finite; booleans as yes/no.

    >>> num(0.5), num(None), num(float("nan")), num(2, "+.1f"), num(True)
    ('0.50', '–', '–', '+2.0', 'yes')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not finite(value):
        return "–"
    return format(value, fmt)


def interval(low: Any, high: Any, fmt: str = "+.2f") -> str:
    """``[low, high]``, or "" when either bound is missing.

    >>> interval(0.1, 0.5), interval(None, 1.0)
    ('[+0.10, +0.50]', '')
    """
    return f"[{num(low, fmt)}, {num(high, fmt)}]" if finite(low) and finite(high) else ""


def badge(text: str, cls: str) -> str:
    return f'<span class="badge {esc(cls)}">{esc(text)}</span>'


def yes_no(value: Any) -> str:
    if value is None:
        return "–"
    return badge("yes", "yes") if value else badge("no", "no")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table of already-escaped cells; columns in ``numeric`` right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def family(kind: str) -> str:
    return "best-of-n" if kind == "bon" else "RL"


# -- sections --------------------------------------------------------------------------------


def render_page(report: ReportData, gate: GateReport | None = None) -> str:
    """The whole page: header, gate result, verdicts, curves, symptoms, samples."""
    title = f"rlhf-eval report: {report.db}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        header(report, gate),
        gate_section(gate) if gate is not None else "",
        verdict_section(report),
        curve_section(report),
        symptom_section(report),
        sample_section(report),
        '<footer><p class="muted">Written by <code>rlhf-eval report</code>: one file, no script, nothing loaded '
        "from the network; safe to attach as a CI artifact. Rewards are normalized as in docs/analysis.md: the "
        "delta from the reference on the same prompts, in reference standard deviations; intervals are 95% "
        "percentile bootstraps over prompts.</p></footer>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def header(report: ReportData, gate: GateReport | None) -> str:
    runs = ", ".join(
        f'<a href="#run-{i}">{esc(s.run)}</a> <small>({esc(s.method)}, {family(s.kind)})</small>'
        for i, s in enumerate(report.sections)
    )
    rows = [
        ("database", f"<code>{esc(report.db)}</code>"),
        ("generated", esc(report.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"))),
        ("rlhf-eval", esc(report.version)),
        ("runs", runs),
    ]
    if report.not_analysed:
        rows.append(
            ("not analysed", f"{esc(', '.join(report.not_analysed))} <small>(run <code>rlhf-eval analyze "
             f"--db {esc(report.db)}</code>)</small>")
        )  # fmt: skip
    meta = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    links = [("gate", "Gate")] if gate is not None else []
    links += [("verdicts", "Verdicts"), ("curves", "Proxy and gold"), ("symptoms", "Symptoms"), ("samples", "Samples")]
    nav = "".join(f'<a href="#{anchor}">{text}</a>' for anchor, text in links)
    return f'<header><h1>RLHF over-optimization report</h1><dl class="meta">{meta}</dl><nav>{nav}</nav></header>'


def verdict_section(report: ReportData) -> str:
    """One row per run of ``overoptimization``."""
    rows = [verdict_row(i, s) for i, s in enumerate(report.sections)]
    headers = ["run", "method", "gold peak (checkpoint, step, KL)", "gold at peak → last", "gold drop [95% CI]",
               "over-optimized", "early warning", "Gao fit peak", "evidence"]  # fmt: skip
    return (
        '<section id="verdicts"><h2>Verdicts</h2>'
        '<p class="muted">Gold in reference standard deviations (the reference at 0). Gold drop: the best '
        "earlier point minus the last point, the best re-taken in each bootstrap replicate; over-optimized when "
        "its interval is above 0. Early warning: the gold slope over the last points is no longer "
        "significantly rising.</p>" + table(headers, rows, numeric=(3, 4)) + "</section>"
    )


def verdict_row(index: int, section: RunSection) -> list[str]:
    a = section.analysis
    run = f'<a href="#run-{index}">{esc(section.run)}</a>'
    if a.get("stale"):
        run += "<br>" + badge("stale", "stale")
        run += " <small>points changed since the analysis; run <code>rlhf-eval analyze</code></small>"
    step = "" if section.kind == "bon" else f"step {esc(a.get('peak_step'))}, "
    peak = f"{esc(a.get('peak_checkpoint'))}<br><small>{step}KL {num(a.get('peak_kl'))}</small>"
    drop_ci = interval(a.get("gold_drop_ci_low"), a.get("gold_drop_ci_high"))
    drop = f"{num(a.get('gold_drop'), '+.2f')}<br><small>{drop_ci}</small>"
    early = a.get("early_warning")
    warning = "–" if early is None else badge("yes", "warn") if early else badge("no", "no")
    slope = interval(a.get("gold_slope_recent_ci_low"), a.get("gold_slope_recent_ci_high"))
    if finite(a.get("gold_slope_recent")):
        warning += f"<br><small>gold slope {num(a['gold_slope_recent'], '+.2f')} {slope}"
        warning += ", falling" if a.get("gold_falling") else ""
        warning += "</small>"
    return [
        run,
        f"{esc(section.method)}<br><small>{family(section.kind)}</small>",
        peak,
        f"{num(a.get('gold_norm_at_peak'), '+.2f')} → {num(a.get('gold_norm_at_last'), '+.2f')}",
        drop,
        yes_no(a.get("overoptimized")),
        warning,
        fit_text(a),
        esc(a.get("evidence")),
    ]


def fit_text(a: Mapping[str, Any]) -> str:
    """The Gao fit's peak KL* and R* with intervals when resolved, else the stored note."""
    if not a.get("fit_form"):
        return '<span class="muted">no fit</span>'
    if a.get("fit_peak_resolved") and finite(a.get("fit_kl_star")):
        kl = f"KL* {num(a['fit_kl_star'])} {interval(a.get('fit_kl_star_ci_low'), a.get('fit_kl_star_ci_high'), '.2f')}"
        r = f"R* {num(a.get('fit_r_star'), '+.2f')} {interval(a.get('fit_r_star_ci_low'), a.get('fit_r_star_ci_high'))}"
        return f"{kl}<br><small>{r}</small>"
    return f"<small>{esc(a.get('fit_note') or 'peak not resolved')}</small>"


def curve_section(report: ReportData) -> str:
    parts = ['<section id="curves"><h2>Proxy and gold against √KL</h2>', f'<p class="note">{esc(KL_NOTE)}</p>']
    parts.append(
        '<p class="muted">Points: checkpoints (best-of-n: values of n); bands: 95% bootstrap intervals over '
        "prompts; dashed: the Gao et al. fit of gold (best-of-n R = d(α − βd), RL R = d(α − β log d), d = √KL); "
        "star: the gold peak; dotted: the fitted peak d* with its interval, when the fit resolves it.</p>"
    )
    figures = []
    for i, section in enumerate(report.sections):
        a = section.analysis
        svg = curve_svg(section.run, section.points, a, f"c{i}")
        evidence = str(a.get("evidence") or "")
        caption = [esc(evidence if evidence.endswith(".") or not evidence else evidence + ".")]
        if a.get("best_checkpoint"):
            caption.append(f"Most often best: {esc(a['best_checkpoint'])} ({num(a.get('best_probability'), '.0%')} "
                           "of replicates).")  # fmt: skip
        if finite(a.get("proxy_gain_after_peak")):
            gain = interval(a.get("proxy_gain_after_peak_ci_low"), a.get("proxy_gain_after_peak_ci_high"))
            caption.append(f"Proxy gain after the peak {num(a['proxy_gain_after_peak'], '+.2f')} {gain}.")
        if a.get("diverging"):
            caption.append("<strong>Diverging</strong>: proxy rising while gold falls after the peak.")
        caption.append(f"Fit: {esc(a.get('fit_note') or 'no fit')}.")
        if a.get("notes"):
            caption.append(f"Notes: {esc(a['notes'])}.")
        body = svg or '<p class="muted">No point with a KL estimate and a gold score.</p>'
        figures.append(
            f'<figure id="run-{i}" class="curve"><h3>{esc(section.run)} <small>({esc(section.method)}, '
            f"{family(section.kind)})</small></h3>{body}<figcaption>{' '.join(caption)}</figcaption></figure>"
        )
    return "".join(parts) + f'<div class="grid">{"".join(figures)}</div></section>'


def symptom_section(report: ReportData) -> str:
    names = ", ".join(SYMPTOMS[name] for name in SYMPTOM_PLOTS)
    parts = [
        '<section id="symptoms"><h2>Symptoms</h2>',
        f'<p class="muted">{esc(names)} against √KL, per run; dashed: the reference\'s level. Best-of-n values are '
        "exact expectations over the pool.</p>",
    ]
    for i, section in enumerate(report.sections):
        svg = symptom_svg(section.run, section.symptoms, f"s{i}")
        body = svg or '<p class="muted">No point with a KL estimate.</p>'
        parts.append(f'<figure class="symptoms"><h3>{esc(section.run)}</h3>{body}</figure>')
    return "".join(parts) + "</section>"


def sample_section(report: ReportData) -> str:
    parts = [
        '<section id="samples"><h2>Samples: proxy high, gold low</h2>',
        '<p class="muted">Ordered by the rank of proxy minus the rank of gold among the checkpoint\'s samples: '
        "responses the proxy likes much more than the gold scorer does (reward-hack candidates). RL runs: the last "
        'checkpoint; best-of-n: the pool best-of-n picks from. Highlights: <mark class="rep">repeated '
        '4-grams</mark>, <mark class="phrase">boilerplate phrases</mark> (hedges, apologies, refusals, closers). '
        "The reference's response is its sample with the same prompt and sample index.</p>",
    ]
    for section in report.sections:
        parts.append(f"<h3>{esc(section.run)} <small>({esc(section.samples_from)})</small></h3>")
        if not section.samples:
            parts.append('<p class="muted">No sample shown.</p>')
        parts.extend(sample_card(row, section.with_reference) for row in section.samples)
    return "".join(parts) + "</section>"


def sample_card(row: Mapping[str, Any], with_reference: bool) -> str:
    """One sample: prompt, scores and ranks, the response beside the reference's, detector values."""
    meta = [
        f"#{esc(row.get('position'))}",
        esc(row.get("checkpoint")),
        f"prompt {esc(row.get('prompt_idx'))}, sample {esc(row.get('sample_idx'))}",
        f"proxy {num(row.get('proxy_reward'), '.3f')} (rank {esc(row.get('proxy_rank'))})",
        f"gold {num(row.get('gold_reward'), '.3f')} (rank {esc(row.get('gold_rank'))})",
        f"KL {num(row.get('kl_full'))}" if with_reference else "",  # a pool sample is the reference's own
        f"{esc(row.get('n_tokens'))} tokens",
    ]
    prompt = row.get("prompt") or row.get("prompt_id")
    pair = f'<div><small>response</small><div class="text response">{highlight_html(row.get("response"))}</div></div>'
    if with_reference:
        if row.get("ref_response") is None:
            reference = '<p class="muted">The reference has no sample for this prompt and index.</p>'
        else:
            reference = highlight_html(row.get("ref_response"))
        ref_meta = (
            f"reference · proxy {num(row.get('ref_proxy_reward'), '.3f')} · gold "
            f"{num(row.get('ref_gold_reward'), '.3f')} · {esc(row.get('ref_n_tokens'))} tokens"
        )
        pair += f'<div><small>{ref_meta}</small><div class="text reference">{reference}</div></div>'
    detectors = ", ".join(f"{esc(name)} {num(row.get(name))}" for name in SAMPLE_DETECTORS if name in row)
    head = " · ".join(part for part in meta if part)
    return (
        f'<div class="sample"><div class="muted">{head}</div><div class="text prompt">{esc(prompt)}</div>'
        f'<div class="pair{"" if with_reference else " single"}">{pair}</div>'
        f"<small>detectors: {detectors}</small></div>"
    )


def gate_section(gate: GateReport) -> str:
    """The gate's headline and one row per rule, its status coloured."""
    status = {0: "pass", 1: "fail", 2: "error"}[gate.exit_code]
    rows = [rule_row(result) for result in gate.results]
    headers = ["rule", "metric", "severity", "status", "value [CI]", "compared", "threshold", "baseline",
               "message"]  # fmt: skip
    return (
        f'<section id="gate"><h2>Gate</h2><p class="headline {status}">{esc(gate.headline)}</p>'
        f'<p class="muted">Policy <code>{esc(gate.policy_path)}</code> ({esc(gate.policy_name)}, '
        f"v{esc(gate.policy_version)}); candidate {esc(gate.candidate)} (step {esc(gate.candidate_step)}); "
        f"baseline {esc(gate.baseline)}; database <code>{esc(gate.db)}</code>.</p>"
        + table(headers, rows, numeric=(4, 5))
        + "</section>"
    )


def rule_row(result: RuleResult) -> list[str]:
    value = gate_value(result.value)
    ci = interval(result.ci_low, result.ci_high, ".4g")
    baseline = gate_value(result.baseline)
    if result.baseline_label:
        baseline += f"<br><small>{esc(result.baseline_label)}</small>"
    return [
        esc(result.rule),
        esc(result.metric),
        esc(result.severity),
        badge(result.status, result.status if result.status in ("pass", "warn", "fail", "error") else "error"),
        f"{value}<br><small>{ci}</small>" if ci else value,
        f"{esc(result.compared)} {gate_value(result.actual)}",
        f"{esc(result.threshold_text)}<br><small>{esc(result.op)} {gate_value(result.threshold)}</small>",
        baseline,
        esc(result.message),
    ]


def gate_value(value: float | bool | None) -> str:
    """A rule's number in 4 significant digits, a boolean as yes/no, a missing one as "–".

    >>> gate_value(0.123456), gate_value(False), gate_value(None)
    ('0.1235', 'no', '–')
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and math.isfinite(value):
        return format(value, ".4g")
    return "–"


__all__ = ["CSP", "esc", "render_page", "sample_card"]
