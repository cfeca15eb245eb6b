"""Through the API: polyglots and scripts named as scripts get 415 `forbidden_type` and leave nothing."""

from __future__ import annotations

import pytest

from tests.conftest import error_code
from tests.uploads.conftest import assert_nothing_left, post_upload

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("data", "name"), [
    (b"GIF89a<?php system($_GET['c']); ?>" + b"\x00" * 64, "avatar.gif"),
    (b'Set objShell = CreateObject("WScript.Shell")\r\nobjShell.Run "calc"\r\n', "update.txt"),
    (b'Dim x\r\nx = 1\r\nMsgBox "done"\r\n', "update.vbs"),
    (b"Write-Host 'hello'\n", "update.ps1"),
])
def test_scripts_are_refused_on_upload(api, pool, contributor, data, name):
    response = post_upload(api(contributor), pool, data, name=name)
    assert (response.status_code, error_code(response)) == (415, "forbidden_type")
    assert_nothing_left()
