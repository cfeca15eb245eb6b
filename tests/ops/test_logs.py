"""LOG_FORMAT=json lines, request ids in responses, and credentials masked in what is logged."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from poolhub.asgi import application
from poolhub.logs import ContextFilter, PoolhubJsonFormatter, log_context_bind, log_context_end, log_context_new


def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path, headers=headers or {})

    return asyncio.run(call())


def test_a_plausible_client_request_id_comes_back() -> None:
    assert get("/healthz", {"X-Request-ID": "edge-7f3a.42"}).headers["X-Request-ID"] == "edge-7f3a.42"


@pytest.mark.parametrize("sent", [None, "has spaces in it", "x" * 200, "quote\"d"])
def test_otherwise_the_server_makes_one(sent: str | None) -> None:
    response = get("/healthz", {"X-Request-ID": sent} if sent else {})

    made = response.headers["X-Request-ID"]
    assert made != sent and len(made) == 32 and int(made, 16) >= 0


def render(message: str, *args: object, name: str = "poolhub.test", **extra: object) -> dict[str, object]:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args or None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    ContextFilter().filter(record)
    line = PoolhubJsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_a_line_has_the_contract_fields_and_the_context_ids() -> None:
    token = log_context_new(request_id="req-1", task_id=None)
    try:
        log_context_bind(upload_id="u-1", pool_id="p-1", group_id="g-1")
        log_context_bind(upload_id="u-1", group_id="g-2")  # a second group: which one is not known
        line = render("stored %s", "u-1")
    finally:
        log_context_end(token)

    assert line["level"] == "WARNING" and line["logger"] == "poolhub.test" and line["message"] == "stored u-1"
    assert line["request_id"] == "req-1" and line["upload_id"] == "u-1" and line["pool_id"] == "p-1"
    assert "task_id" not in line and "group_id" not in line
    assert str(line["ts"]).endswith("+00:00")


@pytest.mark.parametrize("message", [
    "Authorization: Bearer abc.def.ghi",
    "token eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoxfQ.c2lnbmF0dXJl seen",
    "login with {'username': 'a', 'password': 'sunny-meadow-kettle-4411'}",
    "refresh=sunny-meadow-kettle-4411&next=/",
])
def test_credentials_are_masked_wherever_they_slip_into_a_message(message: str) -> None:
    line = json.dumps(render(message))

    for secret in ["abc.def.ghi", "eyJ", "sunny-meadow-kettle-4411"]:
        assert secret not in line
    assert "redacted" in line


def test_uvicorn_access_lines_carry_method_path_and_status() -> None:
    line = render('%s - "%s %s HTTP/%s" %d', "10.0.0.1:5000", "GET", "/readyz", "1.1", 200, name="uvicorn.access")

    assert (line["method"], line["path"], line["status"]) == ("GET", "/readyz", 200)
    assert line["message"] == '10.0.0.1:5000 - "GET /readyz HTTP/1.1" 200'


class _Request:
    poolhub_request_id = "req-from-header"


class _BatchTask:
    """A task that stores a list of uploads, as the store kick does."""

    name = "uploads.store_batch"
    request = _Request()

    def run(self, upload_ids: list[str]) -> int:
        return len(upload_ids)


class _OneTask(_BatchTask):
    def run(self, upload_id: str) -> int:  # type: ignore[override]
        return 1


def test_a_task_carries_the_request_id_of_its_message_and_the_ids_it_was_given() -> None:
    from poolhub.logs import celery_task_postrun, celery_task_prerun, log_context, log_request_id_for

    celery_task_prerun(task_id="t-1", task=_OneTask(), args=("u-1",), kwargs={})
    try:
        assert log_context() == {"task_id": "t-1", "request_id": "req-from-header", "upload_id": "u-1"}
        assert log_request_id_for(upload_id="u-1") == "req-from-header"
    finally:
        celery_task_postrun(task_id="t-1")
    assert log_context() == {}


def test_a_batch_task_lends_its_request_id_only_to_the_uploads_it_was_sent_for() -> None:
    from poolhub.logs import celery_task_postrun, celery_task_prerun, log_context, log_request_id_for

    celery_task_prerun(task_id="t-2", task=_BatchTask(), args=(["u-1", "u-2"],), kwargs={})
    try:
        assert "upload_id" not in log_context()  # two uploads: neither is "the" upload of its lines
        assert log_request_id_for(upload_id="u-2") == "req-from-header"
        assert log_request_id_for(upload_id="u-9") is None  # stored in the same batch, sent by another request
    finally:
        celery_task_postrun(task_id="t-2")
