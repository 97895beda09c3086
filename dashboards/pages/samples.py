"""Samples: one checkpoint's responses next to the reference's, with scores, KL and detectors;
repeated n-grams and boilerplate phrases highlighted; read a page at a time."""

import math

import dashboard_ui as ui
import pandas as pd
import streamlit as st

from rlhf_eval import dashboard_data as data

ORDERS = {
    "hack": "proxy high, gold low (rank of proxy − rank of gold)",
    "proxy": "proxy, highest first",
    "gold": "gold, lowest first",
    "kl": "KL, highest first",
    "length": "length, longest first",
    "prompt": "prompt order",
}

st.title("Samples")
ui.require_database()
runs = ui.read("sample_runs")
top = st.columns(3)
# ?run=ppo&checkpoint=checkpoint-64 opens that checkpoint (a link to share); by default the first
# run and its last checkpoint, the one most likely past the peak
asked_run, asked_checkpoint = st.query_params.get("run"), st.query_params.get("checkpoint")
run = top[0].selectbox("Run", runs, index=runs.index(asked_run) if asked_run in runs else 0, key="sa_run")
checkpoints = ui.read("run_checkpoints", run)
labels = [c["checkpoint"] for c in checkpoints]
default = labels.index(asked_checkpoint) if asked_checkpoint in labels else len(labels) - 1
checkpoint = top[1].selectbox("Checkpoint", labels, index=default, key="sa_checkpoint")
order = top[2].selectbox("Sort", list(ORDERS), format_func=ORDERS.get, key="sa_order")
middle = st.columns([3, 1, 1])
search = middle[0].text_input("Search prompt or response text", key="sa_search").strip()
size = middle[1].selectbox("Per page", [5, 10, 20, 50], index=1, key="sa_size")
total = ui.read("count_samples", run, checkpoint, search or None)
pages = max(1, math.ceil(total / size))
page = int(middle[2].number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key="sa_page"))
page = min(page, pages)
st.caption(
    f"{total} samples. Highlights: <mark class='rep'>repeated 4-grams</mark>, "
    "<mark class='phrase'>boilerplate phrases</mark> (hedges, apologies, refusals, closers). "
    "The reference's response is its sample with the same prompt and sample index.",
    unsafe_allow_html=True,
)
st.html(ui.HIGHLIGHT_CSS)
if not total:
    st.info("No sample matches.")
    st.stop()
rows = ui.read("sample_page", run, checkpoint, order=order, search=search or None, limit=size, offset=(page - 1) * size)


def fmt(value: object, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


for row in rows:
    st.markdown(f"**#{row['position']} · prompt {row['prompt_idx']}, sample {row['sample_idx']}**")
    st.text(row["prompt"] or row["prompt_id"])
    left, right = st.columns(2)
    with left:
        st.caption(
            f"{checkpoint}: proxy {fmt(row['proxy_reward'])} · gold {fmt(row['gold_reward'])} · "
            f"KL {fmt(row['kl_full'])} · {row['n_tokens']} tokens · proxy rank − gold rank {fmt(row['hack_score'])}"
        )
        st.html(f"<div class='response'>{data.highlight_html(row['response'])}</div>")
    with right:
        st.caption(
            f"reference: proxy {fmt(row['ref_proxy_reward'])} · gold {fmt(row['ref_gold_reward'])} · "
            f"{fmt(row['ref_n_tokens'])} tokens"
        )
        st.html(f"<div class='response'>{data.highlight_html(row['ref_response'])}</div>")
    detectors = ", ".join(f"{name} {fmt(row[name], 2)}" for name in data.SAMPLE_DETECTORS)
    st.caption(f"detectors: {detectors}")
    st.divider()
ui.download(pd.DataFrame(rows), f"samples_{run}_{checkpoint}_p{page}".replace("/", "_"), "Download this page (CSV)")
