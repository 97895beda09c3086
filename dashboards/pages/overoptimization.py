"""Over-optimization: normalized proxy and gold against sqrt(KL) per run, the Gao fit and its peak,
with a switch of KL estimator (recomputed in memory, never written) and the trainer's own logs."""

import math

import altair as alt
import dashboard_ui as ui
import pandas as pd
import streamlit as st

from rlhf_eval import dashboard_data as data

#: Proxy blue, gold orange, on every chart of the page.
SERIES_SCALE = alt.Scale(domain=["proxy", "gold"], range=["#1f77b4", "#ff7f0e"])

st.title("Over-optimization")
ui.require_database()
families = ui.read("family_runs")
if not families:
    st.info("No run to plot yet.")
    st.stop()
kinds = {f["run"]: f["kind"] for f in families}
runs = st.multiselect("Runs", list(kinds), default=list(kinds), key="oo_runs")
left, right = st.columns(2)
rl_kl = left.selectbox("KL estimator, RL runs", data.RL_KL_ESTIMATORS, key="oo_rl_kl")
bon_kl = right.selectbox("KL estimator, best-of-n runs", data.BON_KL_ESTIMATORS, key="oo_bon_kl")
st.info(
    "KL is not a fair yardstick across methods: a best-of-n point's KL is the analytic bound "
    "log n − (n − 1)/n (or a plug-in estimate from its pool), an RL checkpoint's is a Monte-Carlo estimate "
    "of the sequence KL from the reference, and DPO is trained off-policy. Read the curves of one method "
    "against KL; compare methods by gold (Compare page), not by where they sit on the KL axis."
)

stored_runs = {r["run"]: r for r in ui.read("run_analyses", runs)}
wanted = {run: (bon_kl if kinds[run] == "bon" else rl_kl) for run in runs}
keep = [run for run in runs if run in stored_runs and stored_runs[run]["kl_estimator"] == wanted[run]]
points = list(ui.read("analysis_points", keep)) if keep else []
analyses = {run: stored_runs[run] for run in keep}
skipped: list[str] = []
for estimator in sorted({wanted[run] for run in runs if run not in keep}):
    todo = [run for run in runs if run not in keep and wanted[run] == estimator]
    with st.spinner(f"Recomputing {', '.join(todo)} with {estimator} (in memory, not stored)"):
        more_points, more_runs, why = ui.read("recompute_analysis", todo, estimator)
    points += more_points
    analyses |= {r["run"]: r for r in more_runs}
    skipped += why
for why in skipped:
    st.caption(f"Not analysed: {why}")
if not points:
    st.info("No analysed run among those chosen; run `rlhf-eval analyze` to analyse them.")
    st.stop()

df = pd.DataFrame(points)
df["family"] = df["kind"].map({"bon": "best-of-n", "rl": "RL"})
tooltip = ["run", "checkpoint", "step", "kl_estimator", alt.Tooltip("kl", format=".3f"),
           alt.Tooltip("sqrt_kl", format=".3f"), alt.Tooltip("proxy_norm", format=".3f"),
           alt.Tooltip("gold_norm", format=".3f"), alt.Tooltip("prob_best", format=".2f")]  # fmt: skip

st.subheader("Gold against √KL, all runs")
all_gold = (
    alt.Chart(df)
    .mark_line(point=True)
    .encode(
        x=alt.X("sqrt_kl:Q", title="√KL (nats^½)"),
        y=alt.Y("gold_norm:Q", title="gold (reference sd from the reference)"),
        color="run:N",
        strokeDash=alt.StrokeDash("family:N", title="family"),
        shape=alt.Shape("family:N", title="family"),
        tooltip=tooltip,
    )
)
st.altair_chart(all_gold, width="stretch")
ui.download(df, "overoptimization_points")

st.subheader("Proxy and gold per run, with the Gao fit")
st.caption(
    "Normalized rewards with 95% bootstrap intervals (bands). Dashed: the Gao et al. fit of gold, "
    "best-of-n R = d(α − βd), RL R = d(α − β log d), d = √KL; the shaded column is the fitted peak d* "
    "with its interval when the fit resolves it."
)
long_rows = []
for series in ("proxy", "gold"):
    part = df[["run", "checkpoint", "step", "kl", "sqrt_kl", "family"]].copy()
    part["series"] = series
    part["value"] = df[f"{series}_norm"]
    part["low"] = df[f"{series}_norm_ci_low"]
    part["high"] = df[f"{series}_norm_ci_high"]
    long_rows.append(part)
long = pd.concat(long_rows, ignore_index=True)
fits = []
columns = st.columns(2)
for i, run in enumerate([r for r in runs if r in set(df["run"])]):
    rows = long[long["run"] == run]
    fit = analyses.get(run, {})
    base = alt.Chart(rows).encode(x=alt.X("sqrt_kl:Q", title="√KL"))
    band = base.mark_area(opacity=0.2).encode(y="low:Q", y2="high:Q", color=alt.Color("series:N", scale=SERIES_SCALE))
    line = base.mark_line(point=True).encode(
        y=alt.Y("value:Q", title="normalized reward"),
        color=alt.Color("series:N", scale=SERIES_SCALE),
        tooltip=[
            "series",
            "checkpoint",
            "step",
            alt.Tooltip("kl", format=".3f"),
            alt.Tooltip("value", format=".3f"),
            alt.Tooltip("low", format=".3f"),
            alt.Tooltip("high", format=".3f"),
        ],  # fmt: skip
    )
    layers = [band, line]
    d_max = float(rows["sqrt_kl"].max() or 0) * 1.1
    curve = data.fit_curve(fit.get("fit_form") or "", fit.get("fit_alpha"), fit.get("fit_beta"), d_max)
    if curve:
        curve_df = pd.DataFrame(curve).assign(run=run)
        fits.append(curve_df)
        layers.append(
            alt.Chart(curve_df)
            .mark_line(strokeDash=[6, 3], color="gray")
            .encode(
                x="d:Q", y="reward:Q", tooltip=[alt.Tooltip("d", format=".3f"), alt.Tooltip("reward", format=".3f")]
            )
        )
    d_star, low, high = fit.get("fit_d_star"), fit.get("fit_d_star_ci_low"), fit.get("fit_d_star_ci_high")
    if fit.get("fit_peak_resolved") and d_star is not None and math.isfinite(d_star):
        peak = pd.DataFrame([{"d_star": d_star, "low": low if low is not None else d_star,
                              "high": high if high is not None else d_star}])  # fmt: skip
        layers.append(alt.Chart(peak).mark_rect(opacity=0.15, color="red").encode(x="low:Q", x2="high:Q"))
        layers.append(alt.Chart(peak).mark_rule(color="red").encode(x="d_star:Q", tooltip=["d_star", "low", "high"]))
    family = "best-of-n" if kinds.get(run) == "bon" else "RL"
    with columns[i % 2]:
        st.altair_chart(alt.layer(*layers).properties(title=f"{run} ({family}, KL: {fit.get('kl_estimator')})"))
        note = fit.get("fit_note") or "no fit"
        st.caption(f"{fit.get('evidence') or ''} Fit: {note}.")
if fits:
    ui.download(pd.concat(fits, ignore_index=True), "gao_fits", "Download fitted curves (CSV)")
verdicts = pd.DataFrame(list(analyses.values()))
if not verdicts.empty:
    wanted_columns = [
        "run", "kl_estimator", "overoptimized", "peak_checkpoint", "best_checkpoint", "best_probability",
        "gold_drop", "gold_drop_ci_low", "gold_drop_ci_high", "fit_form", "fit_alpha", "fit_beta",
        "fit_d_star", "fit_d_star_ci_low", "fit_d_star_ci_high", "fit_kl_star", "fit_peak_resolved", "fit_note",
    ]  # fmt: skip
    cols = [c for c in wanted_columns if c in verdicts.columns]
    st.dataframe(verdicts[cols], hide_index=True)
    ui.download(verdicts[cols], "overoptimization_runs", "Download verdicts (CSV)")

st.subheader("Training-time metrics")
logged = [run for run in runs if ui.read("training_metric_names", run)]
logged.sort(key=lambda run: not {"objective/kl", "kl"} & set(ui.read("training_metric_names", run)))
if not logged:
    st.caption("No trainer logs stored for these runs (`training_logs`).")
else:
    run = st.selectbox("Run", logged, key="oo_log_run")
    names = ui.read("training_metric_names", run)
    default = [m for m in ("objective/kl", "kl") if m in names] or names[:1]
    chosen = st.multiselect("Metrics", names, default=default, key="oo_log_metrics")
    series = pd.DataFrame(ui.read("training_series", run, chosen)) if chosen else pd.DataFrame()
    if not series.empty:
        for metric in chosen:
            part = series[series["metric"] == metric]
            chart = (
                alt.Chart(part)
                .mark_line()
                .encode(x="step:Q", y=alt.Y("value:Q", title=metric), tooltip=["step", "metric", "value"])
                .properties(title=f"{metric}: {data.metric_scale(metric)}", height=220)
            )
            st.altair_chart(chart, width="stretch")
        ui.download(series, f"training_logs_{run}".replace("/", "_"), "Download trainer metrics (CSV)")
    st.caption("Scales as in docs/trl-metrics.md: trainers log KL per token or per sequence; compare with care.")
