"""The benchmark harness's pure parts: statistics, targets, report text, profile parsing, the bare app.

No timings are asserted here: `make bench` measures; these tests check that what it writes is right.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bench import bare_app, report
from bench.httpclient import bench_bytes, multipart, request_bytes
from bench.stats import Summary, Target, fmt, percentile, ratios


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_and_per_run_ratios() -> None:
    summary = Summary.of([3.0, 1.0, 2.0])
    assert (summary.min, summary.median, summary.max, summary.n) == (1.0, 2.0, 3.0, 3)
    assert ratios([10.0, 20.0], [20.0, 0.0]) == [0.5]  # a zero baseline is skipped, not divided by


def test_targets_say_met_or_missed_and_how_far() -> None:
    at_least_half = Target("ratio_min", 0.5, "≥ 50%")
    assert at_least_half.met(0.6) and not at_least_half.met(0.4)
    assert at_least_half.score(0.25) == pytest.approx(0.5)
    under_a_second = Target("max", 1.0, "p95 < 1 s")
    assert under_a_second.met(0.3) and not under_a_second.met(2.0)
    assert under_a_second.score(2.0) == pytest.approx(0.5)


def test_fmt_keeps_a_few_significant_digits() -> None:
    assert fmt(1234.5678) == "1,235"
    assert fmt(0.012345) == "0.0123"
    assert fmt(None) == "-"
    assert fmt(0) == "0"


def test_row_judges_the_median_of_the_ratio() -> None:
    r = report.row("10 MB", "MB/s", [30.0, 40.0, 50.0], baseline_name="bare", baseline_values=[100.0, 100.0, 100.0],
                   target=Target("ratio_min", 0.5, "≥ 50%"))
    assert r["ratio"]["median"] == pytest.approx(0.4)
    assert r["met"] is False
    assert r["score"] == pytest.approx(0.8)
    plain = report.row("phase", "s", [1.0])
    assert plain["met"] is None and plain["ratio"] is None


def _results() -> dict[str, Any]:
    ingest = {"key": "1", "title": "Ingest", "status": "measured", "setup": ["how it ran"], "notes": ["a note"],
              "rows": [report.row("200 KiB, files/s", "files/s", [10.0, 12.0], baseline_name="bare",
                                  baseline_values=[100.0, 100.0], target=Target("ratio_min", 0.3, "≥ 30%")),
                       report.row("10 MB, MB/s", "MB/s", [80.0, 90.0], baseline_name="bare",
                                  baseline_values=[100.0, 100.0], target=Target("ratio_min", 0.5, "≥ 50%"))]}
    missing = {"key": "4", "title": "Broadcast", "status": "not measured: websocket /ws/ missing", "rows": [],
               "notes": [], "setup": []}
    round_ = {"key": "7", "title": "Round", "status": "measured", "rows": [report.row("total", "s", [12.0])],
              "phases": {"upload": 9.0, "notify": 3.0}, "notes": [], "setup": []}
    return {
        "meta": {"started": "2026-11-28 03:50:00", "finished": "04:00:00", "duration_s": 600.0, "quick": False,
                 "commit": "abc123", "dirty": False},
        "machine": {"cores": 2, "memory_gib": 23.5, "platform": "Linux", "python": "3.11.7",
                    "versions": {"uvicorn": "0.54.0"}},
        "config": {"database": "embedded default: SQLite"},
        "figures": [ingest, missing, round_],
        "profile": {"figure": "1", "row": "200 KiB, files/s", "score": 0.37, "rate": 100,
                    "processes": [{"name": "web", "samples": 10, "self": [("f (uploads/x.py)", 50.0)],
                                   "project": [("f (uploads/x.py)", 50.0)], "inclusive": []}]},
        "errors": ["figure 4: something"],
    }


def test_worst_row_is_the_one_furthest_below_its_target() -> None:
    figure, r = report.worst_row(_results()["figures"]) or ({}, {})
    assert figure["key"] == "1"
    assert r["name"] == "200 KiB, files/s"


def test_report_carries_every_figure_its_status_and_the_profile() -> None:
    results = _results()
    history = [report.history_entry(results)]
    text = report.render(results, notes="The view spends its time in X.", history=history)
    assert text.startswith("# poolhub benchmarks")
    assert "2 CPU cores" in text and "embedded default: SQLite" in text
    assert "not measured: websocket /ws/ missing" in text
    assert "| 1 | 200 KiB, files/s | 11.0 | 0.110 | ≥ 30%: **missed** |" in text
    assert "≥ 50%: **met**" in text
    assert "| upload | 9.00 | 75% |" in text  # a round's phases with their share of the total
    assert "The view spends its time in X." in text
    assert "### Before and after" in text
    assert "| 2026-11-28 03:50:00 | `abc123` | 1: 200 KiB, files/s | 11.0 | 0.110 | missed |" in text
    assert "figure 4: something" in text


def test_history_entry_keys_rows_by_figure() -> None:
    entry = report.history_entry(_results())
    assert entry["rows"]["1: 10 MB, MB/s"]["ratio"] == pytest.approx(0.85)
    assert entry["commit"] == "abc123" and entry["quick"] is False
    json.dumps(entry)


def test_parse_collapsed_counts_self_and_project_frames() -> None:
    checkout = Path(report.__file__).resolve().parent.parent  # wherever this clone lives
    text = "\n".join([
        "process 1:\"uvicorn\";run (/usr/lib/python3.11/asyncio/runners.py:118);"
        f"post ({checkout}/uploads/api/views.py:240);execute (/x/site-packages/django/db/utils.py:9) 3",
        "process 1:\"uvicorn\";run (/usr/lib/python3.11/asyncio/runners.py:118) 1",
        "garbage line",
    ])
    parsed = report.parse_collapsed(text)
    assert parsed["samples"] == 4
    assert parsed["self"][0] == ("execute (django/db/utils.py)", 75.0)
    assert ("post (uploads/api/views.py)", 75.0) in parsed["project"]


def _call_app(scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(bare_app.app(scope, receive, send))
    return sent


def test_bare_app_reads_and_discards_the_body() -> None:
    sent = _call_app({"type": "http", "method": "POST", "path": "/upload"},
                     [{"type": "http.request", "body": b"x" * 1000, "more_body": True},
                      {"type": "http.request", "body": b"y" * 24, "more_body": False}])
    assert sent[0]["status"] == 202
    assert json.loads(sent[1]["body"]) == {"received": 1024}


def test_bare_broadcast_reaches_every_connected_socket() -> None:
    frames: list[str] = []

    async def socket_send(message: Any) -> None:
        frames.append(message["text"])

    bare_app._sockets.add(socket_send)
    try:
        sent = _call_app({"type": "http", "method": "POST", "path": "/broadcast"},
                         [{"type": "http.request", "body": b'{"type": "bare.broadcast"}', "more_body": False}])
    finally:
        bare_app._sockets.discard(socket_send)
    assert json.loads(sent[1]["body"]) == {"sent": 1}
    assert frames == ['{"type": "bare.broadcast"}']


def test_load_generator_requests_are_well_formed() -> None:
    data = bench_bytes(300, tag=5)
    assert len(data) == 300 and data.startswith(b"poolhub-bench")
    body, content_type = multipart({"timestamp": "2026-11-28T10:00:00Z"}, {"file": ("a.bin", data)})
    boundary = content_type.split("boundary=")[1]
    assert body.endswith(f"--{boundary}--\r\n".encode()) and data in body
    raw = request_bytes("POST", "/upload", "127.0.0.1:1", {"Content-Type": content_type}, body)
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head and rest == body
