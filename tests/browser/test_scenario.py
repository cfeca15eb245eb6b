"""The whole round from the web page, in a real browser: every role does its job from `/`.

Sign up, log in, upload three files with progress and see them become `stored` live, download one
back byte-exact; a manager adds the new user, changes a setting and closes the group; an exporter
claims it, downloads the archive and posts a result; every member's page shows `result.available`
without a reload, including one whose page was offline meanwhile (it resumes from its last `seq`).
No console error and no CSP violation on any page.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from accounts.models import Membership, Pool, Role, User
from tests.browser.conftest import ARTIFACTS, LARGE_FILE_BYTES, Browser, Watched
from tests.conftest import PASSWORD, make_user
from uploads.models import Upload

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "web-page.png"


def log_in(watched: Watched, username: str) -> None:
    page = watched.page
    page.locator("#login-form input[name=username]").fill(username)
    page.locator("#login-form input[name=password]").fill(PASSWORD)
    page.locator("#login-form button[type=submit]").click()
    page.locator("#app-view").wait_for()
    page.locator("#live.on").wait_for()  # the socket is connected and authenticated


def tab(watched: Watched, name: str) -> None:
    watched.page.locator(f"#tab-{name}").click()
    watched.page.locator(f"#panel-{name}").wait_for()


def files(tmp_path: Path) -> list[Path]:
    """Two small files (one multipart POST each) and one over the page's large-file size (resumable)."""
    made = []
    for name, size in (("station-a.csv", 3_000), ("station-b.csv", 20_000), ("station-c.bin", LARGE_FILE_BYTES * 3)):
        path = tmp_path / name
        path.write_bytes(os.urandom(size) if name.endswith(".bin") else (b"t,v\n" + b"1,2\n" * (size // 4))[:size])
        made.append(path)
    return made


def test_every_role_does_its_job_from_the_page(browser: Browser, tmp_path: Path, webhook_receiver: Any) -> None:
    # A day-long window: the whole run falls in one (the page shows the current one)
    pool = Pool.objects.create(name="weather-stations", window_seconds=86400, grace_seconds=60)
    for username, role in (("manager", Role.MANAGER), ("exporter", Role.EXPORTER), ("listener", Role.LISTENER)):
        Membership.objects.create(pool=pool, user=make_user(username), role=role)
    make_user("root-admin", admin=True)

    # Everyone: sign up (then logged in, in no pool yet).
    dana = browser.open("dana", timezone_id="Asia/Kolkata")  # UTC+05:30: the page sends timestamps as UTC
    dana.shot("01-sign-up")
    dana.page.locator("#signup-form input[name=username]").fill("dana")
    dana.page.locator("#signup-form input[name=password]").fill(PASSWORD)
    dana.page.locator("#signup-form input[name=password2]").fill(PASSWORD)
    dana.page.locator("#signup-form button[type=submit]").click()
    dana.page.locator("#no-pools").wait_for()
    assert User.objects.filter(username="dana").exists()

    # A manager adds her as a contributor and changes a setting.
    boss = browser.open("manager")
    log_in(boss, "manager")
    tab(boss, "manage")
    # An API refusal is shown as the contract's message next to the control that caused it.
    boss.expect_refusal(400)
    boss.page.locator("#member-form input[name=username]").fill("nobody")
    boss.page.locator("#member-form button[type=submit]").click()
    boss.page.locator("#member-form [data-error]").filter(has_text="username: no user with this username").wait_for()
    boss.page.locator("#member-form input[name=username]").fill("dana")
    boss.page.locator("#member-form select[name=role]").select_option("contributor")
    boss.page.locator("#member-form button[type=submit]").click()
    boss.page.locator('#members tr[data-username="dana"]').wait_for()
    assert boss.page.locator("#member-form [data-error]").is_hidden()
    grace = boss.page.locator("#settings-form input[name=grace_seconds]")
    assert grace.input_value() == "60"
    grace.fill("120")
    boss.page.locator("#settings-form input[name=webhook_url]").fill(webhook_receiver.url)
    boss.page.locator("#settings-form button[type=submit]").click()
    boss.page.get_by_text("Saved.").wait_for()
    pool.refresh_from_db()
    assert (pool.grace_seconds, pool.webhook_url) == (120, webhook_receiver.url)
    boss.page.locator("#webhook-test").click()
    boss.page.get_by_text("Test delivery: the receiver answered 200.").wait_for()
    assert json.loads(webhook_receiver.calls[0]["body"])["type"] == "webhook.test"
    assert Membership.objects.get(pool=pool, user__username="dana").role == Role.CONTRIBUTOR
    # ...and provisions two device accounts, whose credentials come once, as a CSV download.
    assert boss.page.locator("#provision-box").is_visible()
    boss.page.locator("#provision-form input[name=count]").fill("2")
    boss.page.locator("#provision-form input[name=prefix]").fill("sensor-")
    with boss.page.expect_download() as download:
        boss.page.locator("#provision-form button[type=submit]").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "username,password,role" and len(lines) == 3
    device, password, device_role = lines[1].split(",")
    assert device_role == "contributor"
    assert User.objects.get(username=device).check_password(password)
    boss.page.locator(f'#members tr[data-username="{device}"]').wait_for()
    boss.shot("04-manage")

    # A listener whose page will be offline while the result comes.
    quiet = browser.open("listener")
    log_in(quiet, "listener")

    # Dana sees the pool and uploads three files: progress, then `stored` live from the socket.
    dana.page.locator("#pools-refresh").click()
    dana.page.get_by_role("button", name="weather-stations").wait_for()
    tab(dana, "upload")
    sent = files(tmp_path)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    if when.second == 0:  # Chromium writes a whole minute as HH:MM, which Playwright's fill reads as a mismatch
        when -= timedelta(seconds=1)
    local = (when + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    dana.page.locator("#upload-form input[name=timestamp]").fill(local)
    dana.page.locator("#upload-form input[name=files]").set_input_files([str(p) for p in sent])
    dana.page.locator("#upload-form button[type=submit]").click()
    items = dana.page.locator("#transfers li.transfer")
    for path in sent:
        item = items.filter(has_text=path.name)
        item.locator('.status:text-is("stored")').wait_for(timeout=60_000)
        assert item.locator("progress").evaluate("bar => bar.value") == 1
    assert list(Upload.objects.filter(pool=pool).values_list("status", "timestamp")) == [("stored", when)] * 3
    dana.shot("02-upload")

    # ...and downloads one back, byte-exact, from her history.
    tab(dana, "history")
    row = dana.page.locator("#panel-history tr", has_text="station-c.bin")
    with dana.page.expect_download() as download:
        row.get_by_role("button", name="Download station-c.bin").click()
    assert Path(download.value.path()).read_bytes() == sent[2].read_bytes()
    history = dana.page.locator("#panel-history")
    assert history.locator("[data-page]").inner_text() == "1\u20133 of 3"  # an en dash
    history.locator("select[name=status]").select_option("failed")
    history.get_by_role("button", name="Filter").click()
    history.get_by_text("no uploads").wait_for()
    history.locator("select[name=status]").select_option("stored")
    history.get_by_role("button", name="Filter").click()
    history.locator("tr", has_text="station-a.csv").wait_for()
    dana.shot("03-history")

    # The tabs work from the keyboard.
    dana.page.locator("#tab-history").focus()
    dana.page.keyboard.press("ArrowLeft")
    assert dana.page.locator("#tab-upload").get_attribute("aria-selected") == "true"
    assert dana.page.evaluate("document.activeElement.id") == "tab-upload"

    # The current window shows what it holds; the manager closes the group now.
    tab(boss, "overview")
    boss.page.locator("#window-uploads").filter(has_text="3").wait_for()
    assert boss.page.locator("#window-contributors").inner_text() == "1"
    boss.shot("00-overview")
    boss.page.locator("#window-close").click()
    for watched in (boss, dana, quiet):
        watched.page.locator('#notifications li[data-type="group.closed"]').wait_for()

    # The listener's page goes offline (its socket drops) before the result comes.
    quiet.page.context.set_offline(True)
    quiet.page.locator("#live:not(.on)").wait_for()

    # An exporter claims the group, downloads the archive, posts a result.
    exporter = browser.open("exporter")
    log_in(exporter, "exporter")
    tab(exporter, "export")
    exporter.page.locator("#export-groups button", has_text="Claim").click()
    exporter.page.locator("#lease-box").wait_for()
    with exporter.page.expect_download() as download:
        exporter.page.locator("#archive-download").click()
    with tarfile.open(download.value.path()) as archive:
        names = archive.getnames()
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert names[0] == "manifest.json"
    listed = json.dumps(manifest)
    assert all(path.name in listed for path in sent)
    exporter.shot("05-export")
    result = tmp_path / "result.json"
    result.write_bytes(json.dumps({"mean": 1.5, "files": len(sent)}).encode())
    exporter.page.locator("#result-form input[name=file]").set_input_files(str(result))
    exporter.page.locator("#result-form button[type=submit]").click()

    # Every member online sees result.available without a reload, with the result's size and checksum.
    digest = hashlib.sha256(result.read_bytes()).hexdigest()
    for watched in (boss, dana, exporter):
        watched.page.locator('#notifications li[data-type="result.available"]').wait_for()
    boss.page.locator("#result-sha256").filter(has_text=digest).wait_for()
    tab(dana, "overview")
    dana.page.locator("#result-sha256").filter(has_text=digest).wait_for()
    assert "result is available" in boss.page.locator("#notice").inner_text()

    # The offline page comes back and resumes from its last seq: the missed notification appears.
    quiet.page.context.set_offline(False)
    quiet.page.locator('#notifications li[data-type="result.available"]').wait_for()
    quiet.page.locator("#result-sha256").filter(has_text=digest).wait_for()

    # The result downloads byte-exact from a member's page.
    with boss.page.expect_download() as download:
        boss.page.locator("#result-download").click()
    assert Path(download.value.path()).read_bytes() == result.read_bytes()
    shot = boss.shot("00-overview-result")

    # The manager's usage counts what the pool holds now.
    tab(boss, "manage")
    boss.page.locator("#usage-box").wait_for()
    boss.page.locator("#usage-results").filter(has_text="1").wait_for()
    assert boss.page.locator("#usage-uploads").inner_text() == "3"
    boss.shot("04-manage")

    # An admin sees every user's files.
    admin = browser.open("admin")
    log_in(admin, "root-admin")
    admin.page.locator("#admin-files-open").click()
    files_view = admin.page.locator("#files-host")
    files_view.locator("tr", has_text="station-a.csv").wait_for()
    files_view.locator("input[name=user]").fill("nobody-else")
    files_view.get_by_role("button", name="Filter").click()
    files_view.get_by_text("no uploads").wait_for()
    files_view.locator("input[name=user]").fill("dana")
    files_view.get_by_role("button", name="Filter").click()
    files_view.locator("tr", has_text="station-a.csv").wait_for()
    assert files_view.locator("[data-page]").inner_text() == "1\u20133 of 3"  # an en dash
    assert admin.page.locator("#admin-link").get_attribute("href") == "/admin/"
    admin.shot("06-admin-files")

    # Phone-sized: still usable (the main view, one column).
    phone = browser.open("phone", viewport={"width": 390, "height": 800})
    log_in(phone, "manager")
    phone.page.locator("#result-sha256").filter(has_text=digest).wait_for()
    phone.shot("07-phone")

    # Logging out revokes the tokens; they were never in a URL nor in localStorage.
    access = dana.page.evaluate("sessionStorage.getItem('poolhub.access')")
    assert access and dana.page.evaluate("localStorage.length") == 0
    dana.page.locator("#logout").click()
    dana.page.locator("#login-form").wait_for()
    assert dana.page.evaluate("sessionStorage.getItem('poolhub.access')") is None
    revoked = httpx.get(f"{browser.url}/api/v1/auth/validate", headers={"Authorization": f"Bearer {access}"})
    assert revoked.status_code == 401
    urls = [url for watched in browser.pages for url in watched.urls]
    assert any("/ws/" in url for url in urls) and not any("eyJ" in url for url in urls)

    if os.environ.get("POOLHUB_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        README_SCREENSHOT.write_bytes(shot.read_bytes())

    assert browser.problems() == []
    views = {"00-overview", "01-sign-up", "02-upload", "03-history", "04-manage", "05-export", "06-admin-files"}
    assert views <= {p.stem for p in ARTIFACTS.glob("*.png")}
