"""A large upload from the page resumes where the server stands: after its connection drops
mid-transfer, and after the page is reloaded mid-transfer and the same file chosen again.

The connection is cut by Playwright's websocket routing at a chosen chunk, so the test does not
depend on timing. (These runs use the socket transfer verbs; on a server with the tus endpoint the
page uses tus instead, see test_scenario.)
"""

from __future__ import annotations

import hashlib
import json
import os
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


@pytest.fixture
def carol(browser: Browser, tmp_path: Path) -> tuple[Watched, Path]:
    if "tus" in page_features():
        pytest.skip("this server has the tus endpoint: the page's large uploads do not use the socket transfer")
    pool = Pool.objects.create(name="weather-stations", window_seconds=3600)
    Membership.objects.create(pool=pool, user=make_user("carol"), role=Role.CONTRIBUTOR)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(LARGE_FILE_BYTES * 4))
    return browser.open("carol"), big


def cut_socket(watched: Watched, *, then: str) -> tuple[list[int], list[int]]:
    """Route the page's sockets through the test: after CUT_AFTER_CHUNKS `write-chunk` frames the
    first socket is closed ("close") or frozen ("hold"); later sockets pass through. Returns the
    offsets the page wrote at on the first socket and on the later ones."""
    seen: list[int] = []
    later: list[int] = []
    sockets = {"n": 0}

    def route(ws: Any) -> None:
        sockets["n"] += 1
        first = sockets["n"] == 1
        server = ws.connect_to_server()
        state = {"cut": False}

        def to_server(message: str | bytes) -> None:
            if state["cut"]:
                return
            frame = json.loads(message)
            if not first and frame.get("type") == "write-chunk":
                later.append(int(frame["offset"]))
            if first and frame.get("type") == "write-chunk":
                seen.append(int(frame["offset"]))
                if len(seen) > CUT_AFTER_CHUNKS:
                    state["cut"] = True
                    if then == "close":
                        ws.close()
                    return
            server.send(message)

        ws.on_message(to_server)
        server.on_message(lambda message: None if state["cut"] else ws.send(message))

    watched.page.route_web_socket("**/ws/", route)
    return seen, later


def start_upload(watched: Watched, big: Path) -> Any:
    tab(watched, "upload")
    watched.page.locator("#upload-form input[name=files]").set_input_files(str(big))
    watched.page.locator("#upload-form button[type=submit]").click()
    return watched.page.locator("#transfers li.transfer", has_text=big.name)


def stored_exactly(big: Path) -> None:
    upload = Upload.objects.get(filename=big.name)
    assert upload.status == "stored"
    assert upload.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert upload.size == big.stat().st_size


def test_a_large_upload_goes_on_after_its_connection_drops(browser: Browser, carol: tuple[Watched, Path]) -> None:
    page, big = carol
    seen, later = cut_socket(page, then="close")
    page.page.reload()
    log_in(page, "carol")

    item = start_upload(page, big)

    item.locator('.status:text-is("stored")').wait_for(timeout=60_000)
    assert len(seen) == CUT_AFTER_CHUNKS + 1  # the first socket was cut mid-transfer
    assert 0 < later[0] <= seen[-1]  # the next one went on from where the server stood, not from 0
    stored_exactly(big)
    assert browser.problems() == []


def test_a_large_upload_resumes_after_a_reload(browser: Browser, carol: tuple[Watched, Path]) -> None:
    page, big = carol
    seen, later = cut_socket(page, then="hold")
    page.page.reload()
    log_in(page, "carol")
    item = start_upload(page, big)
    item.locator(".status", has_text="uploading").wait_for()
    while len(seen) <= CUT_AFTER_CHUNKS:
        page.page.wait_for_timeout(100)

    page.page.reload()  # mid-transfer: the page lists the unfinished upload
    page.page.locator("#live.on").wait_for()
    tab(page, "upload")
    page.page.locator("#transfers li.resumable", has_text=big.name).wait_for()
    page.shot("08-resume")
    item = start_upload(page, big)

    item.locator('.status:text-is("stored")').wait_for(timeout=60_000)
    assert Upload.objects.filter(filename=big.name).count() == 1
    assert 0 < later[0] <= seen[-1]  # resumed, not sent again from the start
    stored_exactly(big)
    assert browser.problems() == []
