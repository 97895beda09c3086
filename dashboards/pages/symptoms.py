"""Symptoms: length, debiased gold, repetition, boilerplate and markdown against KL or step,
with each run's reference as the baseline."""

import altair as alt
import dashboard_ui as ui
import pandas as pd
import streamlit as st

from rlhf_eval import dashboard_data as data

st.title("Symptoms")
ui.require_database()
families = ui.read("family_runs")
if not families:
    st.info("No run to plot yet.")
    st.stop()
names = [f["run"] for f in families]
runs = st.multiselect("Runs", names, default=names, key="sy_runs")
left, right = st.columns(2)
chosen = left.multiselect(
    "Symptoms",
    list(data.SYMPTOMS),
    default=["mean_length", "gold_reward_debiased", "seq_rep_4", "hedge_rate"],
    format_func=lambda name: data.SYMPTOMS[name],
    key="sy_metrics",
)
axis = right.radio("Against", ["√KL", "step"], horizontal=True, key="sy_axis")
if not runs or not chosen:
    st.info("Pick at least one run and one symptom.")
    st.stop()
df = pd.DataFrame(ui.read("symptom_points", runs, chosen))
if df.empty:
    st.info("No evaluated point in these runs.")
    st.stop()
x = alt.X("sqrt_kl:Q", title="√KL (nats^½)") if axis == "√KL" else alt.X("step:Q", title="step (best-of-n: n)")
st.caption(
    "Dashed rules: the reference's level in each run. Best-of-n values are exact expectations over the pool; "
    "their KL is the analytic bound, not comparable with RL's (see Over-optimization)."
)
columns = st.columns(2)
for i, metric in enumerate(chosen):
    part = df[["run", "checkpoint", "step", "kl", "sqrt_kl", "is_reference", metric]].rename(columns={metric: "value"})
    baseline = part[part["is_reference"].astype(bool)][["run", "value"]]
    lines = (
        alt.Chart(part)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("value:Q", title=data.SYMPTOMS[metric]),
            color="run:N",
            tooltip=["run", "checkpoint", "step", alt.Tooltip("kl", format=".3f"), alt.Tooltip("value", format=".4f")],
        )
    )
    rules = (
        alt.Chart(baseline).mark_rule(strokeDash=[4, 4]).encode(y="value:Q", color="run:N", tooltip=["run", "value"])
    )
    with columns[i % 2]:
        st.altair_chart((lines + rules).properties(title=data.SYMPTOMS[metric], height=260), width="stretch")
ui.download(df, "symptoms")
