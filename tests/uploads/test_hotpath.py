"""The upload hot path (uploads/api/hotpath.py) answers through the ASGI application as the REST path does."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from accounts.models import Pool, User
from accounts.tokens import token_pair_issue
from uploads.models import Upload

from .conftest import WHEN, assert_nothing_left, payload, sha


@pytest.fixture(autouse=True)
def kicks(settings: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    settings.POOLHUB_UPLOAD_CONN_MAX_AGE = 0  # kept threads keep no connection past a test (the test db is dropped)
    sent: list[list[str]] = []  # no worker here: the store kicks are recorded, not left in the broker
    monkeypatch.setattr("uploads.services.store_kick", lambda *, upload_ids: sent.append([str(i) for i in upload_ids]))
    return sent


def asgi_post(path: str, *, files: dict[str, Any], data: dict[str, str], headers: dict[str, str]) -> httpx.Response:
    from poolhub.asgi import application

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.post(path, files=files, data=data, headers=headers)

    return asyncio.run(call())


def upload(pool: Pool, user: User | None, content: bytes, **form: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token_pair_issue(user=user)['access']}"} if user else {}
    return asgi_post(f"/api/v1/pools/{pool.id}/uploads", files={"file": ("update.bin", content)},
                     data={"timestamp": WHEN, **form}, headers=headers)


def test_an_upload_through_the_asgi_application_is_accepted_with_its_facts(
        transactional_db: Any, pool: Pool, contributor: User, kicks: list[list[str]]) -> None:
    content = payload(200 * 1024)

    response = upload(pool, contributor, content, sha256=sha(content))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["sha256"] == sha(content) and body["size"] == len(content) and body["filename"] == "update.bin"
    assert len(response.headers["X-Request-ID"]) == 32
    assert Upload.objects.get(id=body["id"]).uploader_id == contributor.id
    assert kicks == [[body["id"]]]  # committed, then handed to the store


def test_refusals_keep_the_contract_and_leave_nothing(
        transactional_db: Any, pool: Pool, contributor: User, outsider: User, kicks: list[list[str]]) -> None:
    content = payload(1024)

    anonymous = upload(pool, None, content)
    not_member = upload(pool, outsider, content)
    wrong_sum = upload(pool, contributor, content, sha256="0" * 64)

    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert not_member.status_code == 404
    assert wrong_sum.status_code == 400 and set(wrong_sum.json()["error"]) == {"code", "message", "details"}
    assert_nothing_left()
    assert kicks == []


def test_a_repeated_idempotency_key_replays_the_first_answer(
        transactional_db: Any, pool: Pool, contributor: User) -> None:
    content = payload(4096)
    token = token_pair_issue(user=contributor)["access"]
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "hot-path-1"}

    def send() -> httpx.Response:
        return asgi_post(f"/api/v1/pools/{pool.id}/uploads", files={"file": ("update.bin", content)},
                         data={"timestamp": WHEN}, headers=headers)

    first, second = send(), send()

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json() and second.headers["Idempotent-Replayed"] == "true"
    assert Upload.objects.count() == 1
