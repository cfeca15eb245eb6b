"""The web page in a real browser: Debian's chromium driven by Playwright, against a live server and
a real Celery worker on the test database.

The browser is $POOLHUB_CHROMIUM or /usr/bin/chromium (Playwright's own browser downloads
are not used); without one, or without Playwright, every test here is skipped with the reason.
Screenshots go to var/test-artifacts/browser/ (gitignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import live
from tests.batching.conftest import webhook_receiver  # noqa: F401  (a fixture: the pool's webhook receiver)

ARTIFACTS = live.BASE_DIR / "var" / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
# Small enough that the scenario's larger file goes over the resumable path.
LARGE_FILE_BYTES = 256 * 1024
# Several socket-transfer chunks per large file, so a test can cut a transfer in its middle.
SOCKET_CHUNK_BYTES = 64 * 1024

# Every console error and CSP violation fails the test that caused it.
WATCH_CSP = """
document.addEventListener("securitypolicyviolation", (e) => {
  (window.__cspViolations = window.__cspViolations || []).push(e.violatedDirective + " " + e.blockedURI);
});
"""


def chromium_path() -> str | None:
    """$POOLHUB_CHROMIUM when set (only it, as `make test` says), else /usr/bin/chromium."""
    candidate = os.environ.get("POOLHUB_CHROMIUM") or "/usr/bin/chromium"
    return candidate if Path(candidate).is_file() and os.access(candidate, os.X_OK) else None


def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "browser tests skipped: Playwright for Python is not installed (requirements-dev.txt)"
    if reason is None and chromium_path() is None:
        reason = "browser tests skipped: no chromium found (apt-get install chromium, or set POOLHUB_CHROMIUM)"
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class Watched:
    """A page with the problems seen on it so far."""

    page: Any
    name: str
    errors: list[str] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)  # every URL the page requested or opened a socket to

    def expect_refusal(self, status: int) -> None:
        """The next step is refused by the API on purpose: the browser logs that response as a
        console error ("Failed to load resource"), which is then not a problem."""
        self.expected.append(status)

    def problems(self) -> list[str]:
        csp = self.page.evaluate("window.__cspViolations || []")
        expected = list(self.expected)
        errors = []
        for error in self.errors:
            status = next((s for s in expected if f"responded with a status of {s} " in error), None)
            if status is not None:
                expected.remove(status)
            else:
                errors.append(error)
        return [f"{self.name}: console: {e}" for e in errors] + [f"{self.name}: CSP: {v}" for v in csp]

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


class Browser:
    def __init__(self, browser: Any, url: str) -> None:
        self.browser = browser
        self.url = url
        self.pages: list[Watched] = []

    def open(self, name: str, **context_args: Any) -> Watched:
        """A new browser context (its own sessionStorage, its own network switch) on the page."""
        context = self.browser.new_context(**{"accept_downloads": True, "viewport": {"width": 1280, "height": 860},
                                              **context_args})
        context.add_init_script(WATCH_CSP)
        page = context.new_page()
        page.set_default_timeout(30_000)
        watched = Watched(page=page, name=name)
        page.on("console", lambda msg: watched.errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: watched.errors.append(f"uncaught: {exc}"))
        page.on("request", lambda request: watched.urls.append(request.url))
        page.on("websocket", lambda ws: watched.urls.append(ws.url))
        page.goto(self.url + "/")
        self.pages.append(watched)
        return watched

    def problems(self) -> list[str]:
        return [problem for watched in self.pages for problem in watched.problems()]


@pytest.fixture
def web_env() -> dict[str, str]:
    """Extra environment of the test's web server (a test module may override this fixture)."""
    return {}


@pytest.fixture
def web_url(transactional_db: Any, web_env: dict[str, str]) -> Iterator[str]:
    process, url = live.start_web(live.child_env(POOLHUB_WEB_LARGE_FILE_BYTES=str(LARGE_FILE_BYTES),
                                                 POOLHUB_WS_CHUNK_BYTES=str(SOCKET_CHUNK_BYTES), **web_env))
    try:
        yield url
    finally:
        live.stop(process)


@pytest.fixture
def browser(web_url: str, celery_worker: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running on this thread; the test's own ORM calls
    # between browser steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    path = chromium_path()
    assert path is not None
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            opened = Browser(chromium, web_url)
            yield opened
        finally:
            for problem in opened.problems() if "opened" in locals() else []:
                print(problem)  # shown with a failing test's output
            chromium.close()
