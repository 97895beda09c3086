"""The report's figures: matplotlib drawn to SVG markup that can sit inline in an HTML page.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, so no GUI backend and no global
figure state; the SVG canvas needs no display) inside an ``rc_context``, so a caller's rcParams
are left alone. :func:`inline_svg` turns matplotlib's standalone SVG document into an element fit
for an HTML page with several figures: no XML prolog, DOCTYPE, metadata or namespace URLs (an HTML
parser puts ``<svg>`` in the SVG namespace by itself), ids made unique per figure, text left as
text (``svg.fonttype: none``) so it stays searchable and small. Text from the database (run and
checkpoint names) reaches matplotlib as plain text: math parsing is off, and matplotlib escapes
``&``, ``<`` and ``>`` in the SVG it writes.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rlhf_eval.dashboard_data import SYMPTOMS, fit_curve

#: Proxy blue and gold orange, as on every chart of the dashboard.
PROXY_COLOR = "#1f77b4"
GOLD_COLOR = "#ff7f0e"
PEAK_COLOR = "#d62728"
#: The symptoms the report plots, in order (columns of ``checkpoint_summary``).
SYMPTOM_PLOTS = ("mean_length", "seq_rep_4", "loop_rate", "hedge_rate")

_RC: Any = {  # rcParams (Any: matplotlib types the keys as a Literal of every rcParam)
    "svg.fonttype": "none",  # <text> elements, not glyph paths
    "svg.hashsalt": "rlhf-eval-report",  # deterministic clip-path and marker ids
    "text.parse_math": False,  # a "$" in a run name is a dollar sign
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


@contextmanager
def _figure(
    width: float, height: float, margins: Mapping[str, float], panels: int = 1
) -> Iterator[tuple[Any, list[Any]]]:
    """A matplotlib Figure (imported here: matplotlib is slow to import) with ``panels`` axes in a
    row. Fixed margins (``subplots_adjust``): a layout engine would draw each figure twice."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(1, panels, squeeze=False)[0]
        fig.subplots_adjust(**margins)
        yield fig, list(axes)


def _svg_text(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_SVG_METADATA)
    return buffer.getvalue()


def finite(value: Any) -> bool:
    """A real number that is not NaN or infinite.

    >>> finite(1.0), finite(None), finite(float("nan")), finite(True)
    (True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_svg(run: str, points: Sequence[Mapping[str, Any]], analysis: Mapping[str, Any], prefix: str) -> str | None:
    """Normalized proxy and gold (``analysis_points``: the values of ``checkpoint_summary``'s
    ``*_reward_norm`` columns, with their 95% bootstrap bands) against d = sqrt(KL) as the analysis
    measured it, the Gao et al. (2022) fit of gold when there is one (best-of-n R = d(α − βd), RL
    R = d(α − β log d)), the gold peak of the ``overoptimization`` row and the fitted peak d* with its
    interval when the fit resolves it. None when no point has a finite KL and gold."""
    rows = sorted(
        (p for p in points if finite(p.get("sqrt_kl")) and finite(p.get("gold_norm"))), key=lambda p: p["sqrt_kl"]
    )
    if not rows:
        return None
    family = "best-of-n" if analysis.get("kind") == "bon" else "RL"
    d = [float(p["sqrt_kl"]) for p in rows]
    with _figure(6.4, 3.8, {"left": 0.12, "right": 0.98, "bottom": 0.13, "top": 0.91}) as (fig, (ax,)):
        ax.axhline(0.0, color="#888888", linewidth=0.8, label="reference")
        for name, color in (("proxy", PROXY_COLOR), ("gold", GOLD_COLOR)):
            shown = [p for p in rows if finite(p.get(f"{name}_norm"))]
            xs = [float(p["sqrt_kl"]) for p in shown]
            ax.plot(xs, [p[f"{name}_norm"] for p in shown], marker="o", markersize=4, color=color, label=name)
            band = [p for p in shown if finite(p.get(f"{name}_norm_ci_low")) and finite(p.get(f"{name}_norm_ci_high"))]
            if band:
                ax.fill_between(
                    [float(p["sqrt_kl"]) for p in band],
                    [p[f"{name}_norm_ci_low"] for p in band],
                    [p[f"{name}_norm_ci_high"] for p in band],
                    color=color,
                    alpha=0.18,
                    linewidth=0,
                )
        curve = fit_curve(str(analysis.get("fit_form") or ""), analysis.get("fit_alpha"), analysis.get("fit_beta"),
                          max(d) * 1.05)  # fmt: skip
        if curve:
            ax.plot([c["d"] for c in curve], [c["reward"] for c in curve], color="#555555", linestyle="--",
                    linewidth=1, label="Gao fit of gold")  # fmt: skip
        peak = next((p for p in rows if p.get("checkpoint") == analysis.get("peak_checkpoint")), None)
        if peak is not None:
            ax.plot([peak["sqrt_kl"]], [peak["gold_norm"]], marker="*", markersize=13, color=PEAK_COLOR,
                    linestyle="none", label=f"gold peak ({peak['checkpoint']})")  # fmt: skip
        d_star = analysis.get("fit_d_star")
        if analysis.get("fit_peak_resolved") and finite(d_star):
            low, high = analysis.get("fit_d_star_ci_low"), analysis.get("fit_d_star_ci_high")
            if finite(low) and finite(high):
                ax.axvspan(low, high, color=PEAK_COLOR, alpha=0.08, linewidth=0)
            ax.axvline(d_star, color=PEAK_COLOR, linewidth=1, linestyle=":", label="fitted peak d*")
        ax.set_title(f"{run} ({family}, {analysis.get('method')}; KL: {analysis.get('kl_estimator')})")
        ax.set_xlabel("√KL from the reference (nats^½)")
        ax.set_ylabel("reward − reference (reference sd)")
        ax.legend(fontsize=8, loc="best")
        raw = _svg_text(fig)
    return inline_svg(raw, prefix, f"Proxy and gold reward against square-root KL, run {run}")


def symptom_svg(run: str, rows: Sequence[Mapping[str, Any]], prefix: str) -> str | None:
    """One panel per symptom of :data:`SYMPTOM_PLOTS` against sqrt(KL) (``checkpoint_summary``), the
    reference's level as a dashed line. None when the run has no point with a finite KL."""
    shown = sorted((r for r in rows if finite(r.get("sqrt_kl"))), key=lambda r: r["sqrt_kl"])
    if not shown:
        return None
    reference = next((r for r in rows if r.get("is_reference")), None)
    margins = {"left": 0.06, "right": 0.99, "bottom": 0.19, "top": 0.89, "wspace": 0.35}
    with _figure(10.0, 2.7, margins, panels=len(SYMPTOM_PLOTS)) as (fig, axes):
        for ax, name in zip(axes, SYMPTOM_PLOTS, strict=True):
            points = [r for r in shown if finite(r.get(name))]
            ax.plot([r["sqrt_kl"] for r in points], [r[name] for r in points], marker="o", markersize=3.5,
                    color="#4c4c9d")  # fmt: skip
            if reference is not None and finite(reference.get(name)):
                ax.axhline(reference[name], color="#444444", linestyle="--", linewidth=1, label="reference")
            ax.set_title(SYMPTOMS[name])
            ax.set_xlabel("√KL (nats^½)")
        if reference is not None:
            axes[0].legend(fontsize=7, loc="best")
        raw = _svg_text(fig)
    return inline_svg(raw, prefix, f"Symptoms against square-root KL, run {run}")


_TAG = re.compile(r"<[^>]+>")
_REFERENCE = re.compile(r'url\(#([^)"]+)\)|href="#([^"]+)"')


def inline_svg(raw: str, prefix: str, label: str) -> str:
    """matplotlib's SVG document as an inline ``<svg>`` element: prolog, DOCTYPE, ``<metadata>``,
    ``<style>`` (the page styles ``svg.fig``) and ``xmlns`` attributes dropped; ``xlink:href`` written
    ``href`` (SVG 2); ids that something refers to prefixed with ``prefix`` (several figures share one
    page), the others dropped; ``role="img"`` and ``aria-label``. Only tags are rewritten, never text
    (matplotlib escapes ``<`` and ``>`` in text and attributes, so every ``<...>`` is a tag).

    >>> raw = ('<?xml version="1.0"?>\\n<!DOCTYPE svg PUBLIC "x" "http://www.w3.org/x.dtd">\\n'
    ...        '<svg xmlns:xlink="http://www.w3.org/1999/xlink" xmlns="http://www.w3.org/2000/svg">'
    ...        '<metadata>m</metadata><g id="figure_1"><path id="m1" d="M 0 0"/>'
    ...        '<use xlink:href="#m1"/><text>id="a" &lt;b&gt;</text></g></svg>')
    >>> print(inline_svg(raw, "f0", 'a "run"').replace("><", ">\\n<"))
    <svg class="fig" role="img" aria-label="a &quot;run&quot;">
    <g>
    <path id="f0-m1" d="M 0 0"/>
    <use href="#f0-m1"/>
    <text>id="a" &lt;b&gt;</text>
    </g>
    </svg>
    """
    start = raw.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document")
    svg = raw[start:].strip()
    svg = re.sub(r"<metadata\b.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r"<style\b.*?</style>\s*", "", svg, flags=re.S)
    svg = re.sub(r"<defs>\s*</defs>\s*", "", svg)
    referenced = {a or b for a, b in _REFERENCE.findall("".join(_TAG.findall(svg)))}

    def fix_tag(match: re.Match[str]) -> str:
        tag = match.group(0)
        tag = re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", tag)
        tag = tag.replace(" xlink:href=", " href=")
        tag = re.sub(
            r'\s+id="([^"]*)"', lambda m: f' id="{prefix}-{m.group(1)}"' if m.group(1) in referenced else "", tag
        )
        tag = re.sub(r"url\(#([^)\"]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", tag)
        return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', tag)

    svg = _TAG.sub(fix_tag, svg)
    svg = svg.replace("<svg", f'<svg class="fig" role="img" aria-label="{html.escape(label, quote=True)}"', 1)
    return re.sub(r"\n\s*", "\n", svg)  # matplotlib's indentation, a tenth of the size


__all__ = ["SYMPTOM_PLOTS", "curve_svg", "finite", "inline_svg", "symptom_svg"]
