"""Overview: one row per run with its verdict, best checkpoint and last evaluation."""

import dashboard_ui as ui
import streamlit as st

st.title("Overview")
db = ui.require_database()
options = ui.read("filter_options")
left, middle, right = st.columns(3)
runs = left.multiselect("Run", options["runs"], key="ov_runs")
methods = middle.multiselect("Method", options["methods"], key="ov_methods")
suites = right.multiselect("Suite", options["suites"], key="ov_suites")
rows = ui.read("overview", runs, methods, suites)
if not rows:
    st.info("No run matches the filters.")
    st.stop()
df = ui.frame(rows)
st.caption(
    "Verdict from the `overoptimization` view: over-optimized when the last point's gold is significantly "
    "below the best earlier point (bootstrap over prompts). Best checkpoint: highest probability of being "
    "the run's best by gold. Best-of-n pools are not listed as runs."
)
shown = [
    "run", "method", "kind", "n_checkpoints", "suite", "verdict", "best_checkpoint", "best_probability",
    "peak_checkpoint", "gold_drop", "gold_drop_ci_low", "gold_drop_ci_high", "kl_estimator", "stale",
    "last_evaluated",
]  # fmt: skip
st.dataframe(df[shown], hide_index=True, width="stretch")
stale = df[df["stale"].fillna(False).astype(bool)]["run"].tolist()
if stale:
    st.warning(f"Evaluated after the last analysis: {', '.join(stale)}. Run `rlhf-eval analyze --db {db}`.")
unanalysed = df[df["verdict"] == "not analysed"]["run"].tolist()
if unanalysed:
    st.info(f"Not analysed yet: {', '.join(unanalysed)} (run `rlhf-eval analyze --db {db}`).")
with st.expander("Evidence"):
    for row in rows:
        if row["evidence"]:
            st.markdown(f"**{row['run']}**: {row['evidence']}")
ui.download(df, "overview")
