"""rlhf-eval dashboard: ``RLHF_EVAL_DB=path.duckdb streamlit run dashboards/app.py``.

Read-only: every query goes through ``rlhf_eval.query`` (see ``rlhf_eval.dashboard_data``).
"""

import streamlit as st

st.set_page_config(page_title="rlhf-eval", layout="wide")
pages = [
    st.Page("pages/overview.py", title="Overview", default=True),
    st.Page("pages/overoptimization.py", title="Over-optimization"),
    st.Page("pages/symptoms.py", title="Symptoms"),
    st.Page("pages/samples.py", title="Samples"),
    st.Page("pages/compare.py", title="Compare"),
]
st.navigation(pages).run()
