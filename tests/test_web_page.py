"""The web page at `/`: HTML with a strict CSP, its own static script and stylesheet, no token in a URL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.contrib.staticfiles import finders
from django.test import Client

STATIC = Path(__file__).resolve().parent.parent / "poolhub" / "static"
ASSETS = ("poolhub/app.js", "poolhub/app.css")


def _csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def test_index_is_html_with_a_strict_csp() -> None:
    response = Client().get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    csp = _csp_directives(response["Content-Security-Policy"])
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["connect-src"] == ["'self'", "ws://testserver", "wss://testserver"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in value or value == "*" for values in csp.values() for value in values)


def test_index_references_its_static_assets_and_nothing_inline_or_remote() -> None:
    html = Client().get("/").content.decode()

    assert '<script src="/static/poolhub/app.js" defer></script>' in html
    assert '<link rel="stylesheet" href="/static/poolhub/app.css">' in html
    assert "<style" not in html
    assert re.findall(r"<script[^>]*>\s*[^<\s]", html) == []  # no inline script body
    assert " on" + "click=" not in html and " style=" not in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html


def test_static_assets_exist() -> None:
    for name in ASSETS:
        assert (STATIC / name).stat().st_size > 0


def test_static_assets_are_found_for_collectstatic_and_whitenoise() -> None:
    for name in ASSETS:
        found = finders.find(name)
        assert isinstance(found, str), f"{name} is not found by the staticfiles finders"
        assert Path(found).resolve() == (STATIC / name).resolve()


def test_index_only_answers_safe_methods() -> None:
    assert Client().post("/").status_code == 405
    assert Client().head("/").status_code == 200


def test_the_script_never_puts_a_token_in_a_url_nor_data_into_html() -> None:
    js = (STATIC / "poolhub/app.js").read_text()

    for forbidden in ("access_token=", "?token", "&token", "refresh=", "innerHTML", "outerHTML",
                      "insertAdjacentHTML", "document.write", "localStorage", "eval(", "http://", "https://"):
        assert forbidden not in js, forbidden
    # Tokens are kept in sessionStorage and sent as a bearer header or in the `connect` frame.
    assert "sessionStorage" in js
    assert '"Bearer " + tokens.access' in js
    assert 'type: "connect", access_token: tokens.access' in js
    assert 'type: "resume", after' in js
    # The websocket URL is the bare /ws/ path of this host.
    assert '"//" + location.host + "/ws/"' in js


def test_the_page_names_the_optional_endpoints_this_server_has() -> None:
    from poolhub.views import OPTIONAL_ENDPOINTS, page_features

    html = Client().get("/").content.decode()
    body = re.search(r'<body data-features="([^"]*)" data-large-file-bytes="(\d+)">', html)

    assert body is not None
    assert set(body.group(1).split()) == set(page_features()) <= set(OPTIONAL_ENDPOINTS)
    assert int(body.group(2)) == 8 * 1024 * 1024


def test_every_control_of_the_page_has_a_label() -> None:
    html = Client().get("/").content.decode()
    # Each input and select sits inside a <label> (the template's only way of labelling them).
    without = [m.group(0) for m in re.finditer(r"<(input|select)\b[^>]*>", html)
               if html.rfind("<label", 0, m.start()) <= html.rfind("</label>", 0, m.start())]
    assert without == []


def test_groups_say_how_many_contributors_they_hold(api: Any, pool: Any, manager: Any, contributor: Any) -> None:
    from datetime import UTC, datetime

    from django.core.files.uploadedfile import SimpleUploadedFile

    stamp = datetime.now(UTC).isoformat()
    for user, name in ((contributor, "a.csv"), (contributor, "b.csv"), (manager, "c.csv")):
        response = api(user).post(f"/api/v1/pools/{pool.id}/uploads",
                                  {"file": SimpleUploadedFile(name, f"t,v\n{name},2\n".encode()), "timestamp": stamp})
        assert response.status_code == 202, response.content

    groups = api(manager).get(f"/api/v1/pools/{pool.id}/groups").json()

    assert [(g["upload_count"], g["contributor_count"]) for g in groups] == [(3, 2)]
