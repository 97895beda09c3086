"""Compare: two checkpoints, paired deltas with CIs and Holm-adjusted p-values for every metric
(``rlhf_eval.analysis.checkpoints.compare_checkpoints``)."""

import altair as alt
import dashboard_ui as ui
import pandas as pd
import streamlit as st

from rlhf_eval.errors import RlhfEvalError

#: Improvements green, regressions red, directionless changes blue, no significant change gray.
VERDICT_SCALE = alt.Scale(
    domain=["improved", "regressed", "increased", "decreased", "no significant change"],
    range=["#2ca02c", "#d62728", "#1f77b4", "#17becf", "#9e9e9e"],
)

st.title("Compare")
ui.require_database()
labels = ui.read("point_labels")
if len(labels) < 2:
    st.info("Two evaluated points are needed to compare.")
    st.stop()
with_reference = [label.split("/")[0] for label in labels if label.endswith("/reference")]
first_run = with_reference[0] if with_reference else labels[0].split("/")[0]
a_default = labels.index(f"{first_run}/reference") if f"{first_run}/reference" in labels else 0
b_default = max(i for i, label in enumerate(labels) if label.split("/")[0] == first_run)
if b_default == a_default:
    b_default = (a_default + 1) % len(labels)
left, right = st.columns(2)
a = left.selectbox("A (baseline)", labels, index=a_default, key="cmp_a")
b = right.selectbox("B (candidate)", labels, index=b_default, key="cmp_b")
try:
    result = ui.read("compare_points", a, b)
except RlhfEvalError as exc:
    st.warning(str(exc))
    st.stop()
st.caption(
    f"B − A on {result['n_shared_prompts']} shared prompts: paired bootstrap over prompts, 95% percentile "
    "intervals, p-values Holm-adjusted across the metrics. Verdict: improved/regressed where the metric has "
    "a direction, increased/decreased where it has none."
)
df = pd.DataFrame(result["rows"])
st.dataframe(df, hide_index=True, width="stretch")
chart = (
    alt.Chart()
    .mark_point(filled=True)
    .encode(
        x=alt.X("delta:Q", title="B − A"),
        color=alt.Color("verdict:N", scale=VERDICT_SCALE),
        tooltip=["metric", "delta", "ci_low", "ci_high", "p_adjusted", "verdict"],
    )
)
bars = alt.Chart().mark_rule().encode(x="ci_low:Q", x2="ci_high:Q", color=alt.Color("verdict:N", scale=VERDICT_SCALE))
zero = alt.Chart().mark_rule(strokeDash=[3, 3], color="gray").encode(x=alt.datum(0))
faceted = (
    alt.layer(bars, chart, zero, data=df)
    .properties(height=22, width=500)
    .facet(row=alt.Row("metric:N", header=alt.Header(labelAngle=0, labelAlign="left"), title=None))
    .resolve_scale(x="independent")
)
st.altair_chart(faceted)
ui.download(df, f"compare_{a}_vs_{b}".replace("/", "_"))
