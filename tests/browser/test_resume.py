"""A large upload from the page resumes where the server stands: after its connection drops
mid-transfer, and after the page is reloaded mid-transfer and the same file chosen again; a
cancelled one stores nothing.

The page sends large files over tus when the server has it, else over the socket transfer verbs;
the transfer is cut at a chosen chunk by Playwright's request routing (tus PATCHes) or websocket
routing (`write-chunk` frames), so the tests do not depend on timing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from accounts.models import Membership, Pool, Role
from poolhub.views import page_features
from tests.browser.conftest import LARGE_FILE_BYTES, Browser, Watched
from tests.browser.test_scenario import log_in, tab
from tests.conftest import make_user
from uploads.models import Upload

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CUT_AFTER_CHUNKS = 2


@dataclass
class Cut:
    """Offsets the page wrote at before and at the cut (`seen`), and after it (`later`)."""

    seen: list[int] = field(default_factory=list)
    later: list[int] = field(default_factory=list)
    done: bool = False

    def reached(self, offset: int) -> bool:
        """Record a chunk; True for the one to cut (the first CUT_AFTER_CHUNKS pass)."""
        if self.done:
            self.later.append(offset)
            return False
        self.seen.append(offset)
        self.done = len(self.seen) > CUT_AFTER_CHUNKS
        return self.done


def cut_tus(watched: Watched, then: str) -> Cut:
    """The chunk after CUT_AFTER_CHUNKS PATCHes fails as a dropped connection ("close") or never
    answers ("hold"); every other request passes."""
    cut = Cut()

    def route(request_route: Any) -> None:
        request = request_route.request
        if request.method != "PATCH" or not cut.reached(int(request.headers["upload-offset"])):
            request_route.continue_()
        elif then == "close":
            request_route.abort("connectionreset")
        # "hold": left unanswered

    watched.page.route("**/api/v1/tus/*", route)
    return cut


def cut_socket(watched: Watched, then: str) -> Cut:
    """The page's first socket is closed ("close") or frozen ("hold") at the `write-chunk` after
    CUT_AFTER_CHUNKS; later sockets pass through."""
    cut = Cut()
    sockets = {"n": 0}

    def route(ws: Any) -> None:
        sockets["n"] += 1
        first = sockets["n"] == 1
        server = ws.connect_to_server()
        frozen = {"yes": False}

        def to_server(message: str | bytes) -> None:
            if frozen["yes"]:
                return
            frame = json.loads(message)
            if frame.get("type") == "write-chunk" and cut.reached(int(frame["offset"])) and first:
                frozen["yes"] = True
                if then == "close":
                    ws.close()
                return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(lambda message: None if frozen["yes"] else ws.send(message))

    watched.page.route_web_socket("**/ws/", route)
    return cut


@pytest.fixture(params=["tus", "socket"])
def path(request: pytest.FixtureRequest) -> str:
    """Both of the page's resumable paths: tus (where the server has it) and the socket transfer."""
    if request.param == "tus" and "tus" not in page_features():
        pytest.skip("this server has no tus endpoint")
    return str(request.param)


@pytest.fixture
def web_env(path: str) -> dict[str, str]:
    return {"POOLHUB_WEB_TUS": "1" if path == "tus" else "0"}


@pytest.fixture
def carol(browser: Browser, tmp_path: Path) -> tuple[Watched, Path]:
    pool = Pool.objects.create(name="weather-stations", window_seconds=3600)
    Membership.objects.create(pool=pool, user=make_user("carol"), role=Role.CONTRIBUTOR)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(LARGE_FILE_BYTES * 4))
    return browser.open("carol"), big


def cut(watched: Watched, then: str) -> Cut:
    """Cut the path the page uses, then log in on a fresh load (routes apply from it)."""
    uses_tus = "tus" in (watched.page.evaluate("document.body.dataset.features") or "").split()
    made = cut_tus(watched, then) if uses_tus else cut_socket(watched, then)
    watched.page.reload()
    log_in(watched, "carol")
    return made


def start_upload(watched: Watched, big: Path) -> Any:
    tab(watched, "upload")
    watched.page.locator("#upload-form input[name=files]").set_input_files(str(big))
    watched.page.locator("#upload-form button[type=submit]").click()
    return watched.page.locator("#transfers li.transfer", has_text=big.name)


def until_cut(watched: Watched, made: Cut) -> None:
    while not made.done:
        watched.page.wait_for_timeout(100)


def stored_exactly(big: Path) -> None:
    [upload] = Upload.objects.filter(filename=big.name)
    assert upload.status == "stored"
    assert upload.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert upload.size == big.stat().st_size


def test_a_large_upload_goes_on_after_its_connection_drops(browser: Browser, carol: tuple[Watched, Path]) -> None:
    page, big = carol
    made = cut(page, "close")

    item = start_upload(page, big)

    item.locator('.status:text-is("stored")').wait_for(timeout=60_000)
    assert len(made.seen) == CUT_AFTER_CHUNKS + 1  # cut mid-transfer
    assert 0 < made.later[0] <= made.seen[-1]  # then went on from where the server stood, not from 0
    stored_exactly(big)
    # The cut PATCH itself is logged by the browser as a failed load; nothing else may be.
    assert [p for p in browser.problems() if "ERR_CONNECTION_RESET" not in p] == []


def test_a_large_upload_resumes_after_a_reload(browser: Browser, carol: tuple[Watched, Path]) -> None:
    page, big = carol
    made = cut(page, "hold")
    start_upload(page, big)
    until_cut(page, made)

    page.page.reload()  # mid-transfer: the page lists the unfinished upload
    page.page.locator("#live.on").wait_for()
    tab(page, "upload")
    page.page.locator("#transfers li.resumable", has_text=big.name).wait_for()
    page.shot("08-resume")
    item = start_upload(page, big)

    item.locator('.status:text-is("stored")').wait_for(timeout=60_000)
    assert 0 < made.later[0] <= made.seen[-1]  # resumed, not sent again from the start
    stored_exactly(big)
    assert browser.problems() == []


def test_a_cancelled_upload_stores_nothing(browser: Browser, carol: tuple[Watched, Path]) -> None:
    page, big = carol
    made = cut(page, "hold")
    item = start_upload(page, big)
    until_cut(page, made)

    item.get_by_role("button", name=f"Cancel {big.name}").click()

    item.locator('.status:text-is("cancelled")').wait_for()
    assert item.get_by_role("button", name=f"Cancel {big.name}").is_disabled()
    assert not Upload.objects.exists()
    page.page.locator("#tab-overview").click()
    tab(page, "upload")
    assert page.page.locator("#transfers li.resumable").count() == 0  # nothing left to resume
    assert browser.problems() == []
