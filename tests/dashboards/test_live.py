"""The dashboard while an evaluation writes: two real processes on one database file.

``rlhf-eval eval`` evaluates a reference and four tiny checkpoints into a new database while
``rlhf-eval dashboard`` serves it; Chromium loads the Symptoms page (it reads ``checkpoint_summary``,
the widest view) again and again until the writer exits. Every load must succeed (no exception, no
error, no "cannot be read" warning once the database exists), the evaluated points must appear as
the checkpoints land (the count of plotted points only grows, and grows while the writer runs), and
the writer must finish with exit 0. Both processes are stopped by their PIDs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_browser import (
    REQUIRE_ENV,
    VIEWPORT,
    browser_missing,
    chromium,
    cli_executable,
    dashboard_server,
    load,
    page_errors,
    require_browser,
    stop,
    wait_for_charts,
)

from rlhf_eval import tiny

pytestmark = pytest.mark.skipif(
    bool(browser_missing()) and not os.environ.get(REQUIRE_ENV), reason=browser_missing() or "the browser is there"
)

N_PROMPTS = 16
SAMPLES = 4
MAX_NEW_TOKENS = 16
N_CHECKPOINTS = 4  # besides the reference
WORDS = "the cat sat on a mat dog runs fast explain why sky is blue list three good ideas sun moon star".split()
TEXTS = ["the cat sat on a mat", "a dog runs fast", "the sun is warm and the moon is cold", "list three good ideas"]
#: The points of the first chart (mean length): one per evaluated checkpoint, the reference included.
POINTS_JS = """() => {
    const chart = document.querySelector('[data-testid="stVegaLiteChart"]');
    return chart ? chart.querySelectorAll('g.mark-symbol.role-mark path').length : 0;
}"""


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory, gpt2_ref: Path) -> list[Path]:
    """Four checkpoints fine-tuned from ``gpt2_ref`` for more and more steps (a "run")."""
    require_browser()
    root = tmp_path_factory.mktemp("live-policies")
    return [
        tiny.finetune_causal_lm(gpt2_ref, root / f"step-{i}", TEXTS, steps=2 * i, seed=i)
        for i in range(1, N_CHECKPOINTS + 1)
    ]


def write_suite(folder: Path) -> tuple[Path, Path]:
    suite = folder / "prompts.jsonl"
    prompts = [" ".join(WORDS[i % len(WORDS) : i % len(WORDS) + 2 + i % 5]) + f" {i}" for i in range(N_PROMPTS)]
    suite.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    gold = folder / "gold.py"
    gold.write_text(
        "def score(prompts, responses):\n    return [len(set(r.split())) - 0.1 * len(r.split()) for r in responses]\n"
    )
    return suite, gold


def test_pages_keep_loading_while_an_evaluation_writes(
    tmp_path: Path, gpt2_ref: Path, policies: list[Path], reward_model_dir: Path
) -> None:
    require_browser()
    suite, gold = write_suite(tmp_path)
    db = tmp_path / "live.duckdb"
    command = [
        cli_executable(), "eval", *map(str, policies), "--run", "live", "--ref", str(gpt2_ref),
        "--suite", str(suite), "--proxy", str(reward_model_dir), "--gold", f"{gold}:score", "--db", str(db),
        "--samples", str(SAMPLES), "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-progress",
    ]  # fmt: skip
    writer_log = tmp_path / "eval.log"
    loads: list[tuple[float, bool, int]] = []  # (seconds since the writer started, writer running, points)
    with dashboard_server(db, tmp_path / "server.log") as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        load(page, f"{url}/symptoms", "Symptoms")  # the server and browser are warm before the writer starts
        with writer_log.open("wb") as log:
            writer = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        try:
            while True:
                running = writer.poll() is None
                load(page, f"{url}/symptoms", "Symptoms")
                errors = page_errors(page)
                assert not errors, f"load {len(loads) + 1} shows errors: {errors}"
                warnings = page.locator('[data-testid="stAlertContentWarning"]').all_inner_texts()
                # before the first rows land the page says "no database yet" or "no evaluated checkpoint yet";
                # any other warning (the database cannot be read), or one after rows landed, is a failure
                assert all(w.rstrip(".").endswith("yet") for w in warnings), f"load {len(loads) + 1}: {warnings}"
                assert not (warnings and any(n for _, _, n in loads)), f"load {len(loads) + 1}: {warnings}"
                points = 0
                if page.locator('[data-testid="stVegaLiteChart"]').count():
                    wait_for_charts(page, 1)
                    points = int(page.evaluate(POINTS_JS))
                loads.append((round(time.monotonic() - started, 1), running, points))
                if not running:
                    break
                if time.monotonic() - started > 240:
                    pytest.fail(f"the evaluation did not finish in 240 s; loads {loads}")
        finally:
            stop(writer)
        output = writer_log.read_text()
        assert writer.returncode == 0, output[-3000:]
    print(f"writer: {loads[-1][0]} s, page loads (s, writer running, points): {loads}")
    counts = [points for _, _, points in loads]
    assert counts == sorted(counts), f"the number of points went down: {loads}"
    assert counts[-1] == N_CHECKPOINTS + 1, loads  # every checkpoint and the reference, once the writer is done
    during = {points for _, running, points in loads if running}
    assert len(during) >= 2 and max(during) > 0, f"no checkpoint showed up while the writer ran: {loads}"
