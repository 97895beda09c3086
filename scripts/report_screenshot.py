"""Write the HTML report of a database and a full-page screenshot of it in Chromium.

    python scripts/report_screenshot.py --db rlhf_eval.duckdb --out docs/img/report.png --max-height 2250

The report is opened from a file with every network request refused (the way
tests/test_report.py opens it); the script fails when the page asks for anything from the network or
logs a console error. Needs Debian's Chromium at /usr/bin/chromium and the playwright package (dev
extra); ``--html`` keeps the report next to the screenshot. ``--max-height`` keeps the top of the
page only (header, verdicts, the first curves) and stores the PNG with a 256-colour palette, small
enough for the docs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def screenshot(html_file: Path, png: Path, width: int = 1280) -> list[str]:
    """Open ``html_file`` offline, save a full-page screenshot to ``png``; the problems seen
    (requests to anything but the file, console errors, uncaught page errors)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    url = html_file.resolve().as_uri()

    def route(request_route: Any) -> None:
        if request_route.request.url != url:
            problems.append(f"request: {request_route.request.url}")
            request_route.abort()
        else:
            request_route.continue_()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.route("**/*", route)
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
            page.goto(url, wait_until="load")
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return problems


def shrink(png: Path, max_height: int) -> None:
    """Keep the top ``max_height`` pixels of ``png``, stored with a 256-colour palette."""
    from PIL import Image

    with Image.open(png) as image:
        top = image.crop((0, 0, image.width, min(image.height, max_height))).convert("RGB")
    top.quantize(colors=256).save(png, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--db", default="rlhf_eval.duckdb")
    parser.add_argument("--out", default="docs/img/report.png", type=Path)
    parser.add_argument("--html", type=Path, help="Also keep the report here.")
    parser.add_argument("--run", action="append", help="Only these runs (repeat).")
    parser.add_argument("--max-height", type=int, help="Crop to this many pixels from the top; palette PNG.")
    args = parser.parse_args(argv)

    from rlhf_eval.errors import RlhfEvalError
    from rlhf_eval.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        html_file = args.html or Path(tmp) / "report.html"
        try:
            written = write_report(html_file, args.db, runs=args.run)
        except RlhfEvalError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        problems = screenshot(written.path, args.out)
    if args.max_height:
        shrink(args.out, args.max_height)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{args.out}: {', '.join(written.runs)} ({written.size_bytes} bytes of HTML)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
