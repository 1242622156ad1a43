"""A real headless browser for the HTML pages: Debian's chromium driven by playwright.

Never `playwright install` (it downloads a browser build): scripts/test.sh installs the
distribution's chromium and this launches that binary, with a fresh profile, background
networking off and every request but the page's own file refused and recorded.
Screenshots go to $BATCHRUN_TEST_ARTIFACTS (default tests/artifacts/, gitignored).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("BATCHRUN_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parent / "artifacts")


@dataclass
class Loaded:
    """A page as the browser saw it: its problems, the requests it tried, its screenshot."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    """Every URL the page asked for besides itself (each one was refused)."""
    screenshot: Path | None = None


def require_chromium() -> None:
    """Fail without the browser (scripts/test.sh installs it), unless the one running the
    tests said BATCHRUN_SKIP_BROWSER=1 (scripts/test.sh does, for a user who cannot
    apt-get install it): a browser test never passes by being skipped unasked."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        if os.environ.get("BATCHRUN_SKIP_BROWSER") == "1":
            pytest.skip(f"{CHROMIUM} is not installed and BATCHRUN_SKIP_BROWSER=1")
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install"
                    " chromium), or set BATCHRUN_SKIP_BROWSER=1 to skip the browser tests")


@contextmanager
def loaded(html_file: Path, profile: Path, screenshot_name: str) -> Iterator[Loaded]:
    """Open `html_file` (file://) in a fresh headless chromium; yield what it did; keep a
    full-page screenshot in ARTIFACTS and print its path."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    url = html_file.resolve().as_uri()
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=ARGS, headless=True,
            chromium_sandbox=False, viewport={"width": 1280, "height": 900})
        try:
            seen = Loaded(context.new_page())
            context.route("**/*", lambda route: _only_the_page(route, url, seen))
            seen.page.on("console", lambda m: m.type == "error" and seen.console_errors.append(m.text))
            seen.page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
            seen.page.goto(url, wait_until="load")
            seen.page.wait_for_timeout(300)  # let late errors and requests show
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            seen.screenshot = ARTIFACTS / screenshot_name
            seen.page.screenshot(path=str(seen.screenshot), full_page=True)
            print(f"screenshot: {seen.screenshot}")
            yield seen
        finally:
            context.close()


def _only_the_page(route: Any, url: str, seen: Loaded) -> None:
    if route.request.url == url:
        route.continue_()
    else:
        seen.requests.append(route.request.url)
        route.abort()


def svg_shapes(page: Any, selector: str) -> list[dict[str, float]]:
    """Width and height of every element matching `selector`, as rendered."""
    return list(page.eval_on_selector_all(
        selector, "els => els.map(e => { const b = e.getBBox();"
                  " return {width: b.width, height: b.height}; })"))
