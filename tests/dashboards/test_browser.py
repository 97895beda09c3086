"""The dashboard in a real browser: ``rlhf-eval dashboard`` on a free loopback port over the tiny
sandbox demo's database, every page loaded in Chromium (Playwright), its charts and tables waited
for, no Streamlit error on it, and a full-page screenshot of each saved.

Screenshots go to ``$RLHF_EVAL_ARTIFACTS`` when set (created), else to the test's ``tmp_path``;
their paths are printed (``pytest -s`` shows them). ``$RLHF_EVAL_DASHBOARD_DB`` browses another
database with the same checks (for example the demo preset's). The test needs Debian's Chromium at
``/usr/bin/chromium`` (``make test`` installs it) and is skipped without it, unless
``RLHF_EVAL_REQUIRE_BROWSER`` is set (``make test`` sets it): then a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRE_ENV = "RLHF_EVAL_REQUIRE_BROWSER"
ARTIFACTS_ENV = "RLHF_EVAL_ARTIFACTS"
VIEWPORT = {"width": 1400, "height": 1000}
#: Elements that mean the page failed: an exception box, or an st.error alert.
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium; `make test` installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    return None


def require_browser() -> None:
    """Skip when the browser is missing, or fail when ``RLHF_EVAL_REQUIRE_BROWSER`` is set."""
    why = browser_missing()
    if why and os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{why}; {REQUIRE_ENV} is set, so the browser tests must run")
    if why:
        pytest.skip(why)


#: Skipped before any fixture is built when the browser is missing and not required.
pytestmark = pytest.mark.skipif(
    bool(browser_missing()) and not os.environ.get(REQUIRE_ENV), reason=browser_missing() or "the browser is there"
)


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cli_executable() -> str:
    beside = Path(sys.executable).with_name("rlhf-eval")
    return str(beside) if beside.exists() else shutil.which("rlhf-eval") or "rlhf-eval"


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM by PID, then SIGKILL if it does not exit within 30 s."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@contextmanager
def dashboard_server(db: Path, log: Path) -> Iterator[str]:
    """``rlhf-eval dashboard --db DB`` on a free loopback port; yields its URL; stopped by its PID.
    The server's output goes to ``log``."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [cli_executable(), "dashboard", "--db", str(db), "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().decode() == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop(proc)


# -- the browser -----------------------------------------------------------------------------


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a browser Playwright downloads)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def load(page: Any, url: str, title: str, timeout_ms: int = 60_000) -> None:
    """Open ``url`` and wait until the app is connected, the page's title is shown and the script
    has finished. The first load after the server starts can stay an empty skeleton: reload once."""
    for wait_ms in (min(20_000, timeout_ms), timeout_ms):
        page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
        try:
            page.wait_for_selector('[data-testid="stApp"][data-test-connection-state="CONNECTED"]', timeout=wait_ms)
            page.locator('[data-testid="stHeading"] h1', has_text=title).first.wait_for(timeout=wait_ms)
            break
        except Exception:
            if wait_ms == timeout_ms:
                raise
    wait_idle(page, timeout_ms)


def wait_idle(page: Any, timeout_ms: int = 60_000) -> None:
    """Wait until the app's script run has finished."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


def wait_for_charts(page: Any, at_least: int, timeout_ms: int = 60_000) -> int:
    """Wait until at least ``at_least`` Vega-Lite charts are drawn (each holds its SVG or canvas
    ``.marks`` element); returns how many are drawn."""
    page.wait_for_function(
        """n => {
            const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')];
            return charts.length >= n && charts.every(c => c.querySelector('svg.marks, canvas.marks'));
        }""",
        arg=at_least,
        timeout=timeout_ms,
    )
    return int(page.locator('[data-testid="stVegaLiteChart"] :is(svg.marks, canvas.marks)').count())


def wait_for_count(page: Any, selector: str, at_least: int, timeout_ms: int = 60_000) -> int:
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[selector, at_least], timeout=timeout_ms
    )
    return int(page.locator(selector).count())


def page_errors(page: Any) -> list[str]:
    """The text of every Streamlit exception or error alert on the page."""
    return [text.strip()[:500] for text in page.locator(ERROR_SELECTOR).all_inner_texts()]


def full_page_screenshot(page: Any, path: Path) -> Path:
    """The whole page, not just the viewport: Streamlit scrolls inside its main container, so the
    viewport is stretched to the content's height for the shot, then put back."""
    height = page.evaluate(
        """() => Math.max(...['stMain', 'stAppViewContainer', 'stSidebarContent'].map(id => {
            const el = document.querySelector(`[data-testid="${id}"]`);
            return el ? el.scrollHeight : 0;
        }))"""
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(VIEWPORT["height"], int(height)), 20_000)})
    try:
        page.wait_for_timeout(500)  # one layout pass at the new size
        wait_idle(page)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)
    return path


def artifacts_dir(tmp_path: Path) -> Path:
    """``$RLHF_EVAL_ARTIFACTS`` (created) when set, else ``tmp_path``."""
    chosen = os.environ.get(ARTIFACTS_ENV)
    folder = Path(chosen).expanduser() if chosen else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- the test --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageCheck:
    path: str  # URL path: st.Page's default, the file name without .py ("" is the default page)
    title: str
    charts: int = 0  # at least this many drawn Vega-Lite charts
    tables: int = 0  # at least this many st.dataframe grids
    other: tuple[str, int] | None = None  # (selector, at least) for pages without charts or tables
    query: str = ""  # URL query string, e.g. "run=ppo"


# The tiny demo's runs: dpo, dpo-lora, grpo, ppo and the best-of-n family bon (see tests/sandbox).
PAGES = [
    PageCheck("", "Overview", tables=1),
    # all runs together, one chart per run (5), at least one trainer metric
    PageCheck("overoptimization", "Over-optimization", charts=7, tables=1),
    PageCheck("symptoms", "Symptoms", charts=4),  # the four default symptoms
    # PPO's last checkpoint (past its peak in the demo preset) next to the reference
    PageCheck("samples", "Samples", other=('[data-testid="stHtml"] .response', 2), query="run=ppo"),
    PageCheck("compare", "Compare", charts=1, tables=1),
]


#: A database to browse instead of the tiny demo's (for example the demo preset's, to look at its
#: humps): the same checks, screenshots of that database.
DB_ENV = "RLHF_EVAL_DASHBOARD_DB"


@pytest.fixture(scope="module")
def demo_db(request: pytest.FixtureRequest) -> Path:
    """The tiny sandbox preset's demo database (``rlhf-eval demo --preset tiny``), shared with the
    sandbox tests (``tests/conftest.py``), or ``$RLHF_EVAL_DASHBOARD_DB`` when set."""
    require_browser()
    chosen = os.environ.get(DB_ENV)
    if chosen:
        return Path(chosen)
    tiny_demo: tuple[Path, Path, object] = request.getfixturevalue("tiny_demo")
    return tiny_demo[1]


def test_every_page_renders_in_chromium_without_errors(demo_db: Path, tmp_path: Path) -> None:
    require_browser()
    out = artifacts_dir(tmp_path)
    seen: dict[str, dict[str, int]] = {}
    js_errors: list[str] = []
    with dashboard_server(demo_db, tmp_path / "server.log") as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        for check in PAGES:
            name = check.path or "overview"
            load(page, f"{url}/{check.path}" + (f"?{check.query}" if check.query else ""), check.title)
            counts = {"charts": wait_for_charts(page, check.charts)} if check.charts else {}
            if check.tables:
                counts["tables"] = wait_for_count(page, '[data-testid="stDataFrame"]', check.tables)
            if check.other:
                counts["other"] = wait_for_count(page, *check.other)
            wait_idle(page)
            errors = page_errors(page)
            shot = full_page_screenshot(page, out / f"dashboard-{name}.png")
            print(f"{check.title}: {shot} {counts}")
            assert not errors, f"{check.title} ({url}/{check.path}) shows errors: {errors}; screenshot {shot}"
            assert "not an rlhf-eval database" not in page.inner_text("body")
            seen[name] = counts
    assert list(seen) == [check.path or "overview" for check in PAGES]
    assert not js_errors, f"uncaught errors in the page's JavaScript: {js_errors}"
