"""POST /pools/{pool}/webhook/test: a manager's "send test delivery" from the web page."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batching.models import WebhookDelivery
from batching.webhooks import webhook_verify
from tests.conftest import error_code

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests-only"


def send(api: Any, user: Any, pool: Any) -> Any:
    return api(user).post(f"/api/v1/pools/{pool.id}/webhook/test")


def test_a_test_delivery_is_signed_sent_once_and_says_what_the_receiver_answered(api, pool, manager,
                                                                                   webhook_receiver) -> None:
    pool.webhook_url, pool.webhook_secret = webhook_receiver.url, SECRET
    pool.save()
    webhook_receiver.answers = [200, 503]

    first = send(api, manager, pool)
    second = send(api, manager, pool)

    assert first.status_code == 200 and first.json() == {"delivered": True, "status": 200, "error": ""}
    assert second.json() == {"delivered": False, "status": 503, "error": "HTTP 503"}
    call = webhook_receiver.calls[0]
    body = json.loads(call["body"])
    assert (body["type"], body["pool"]) == ("webhook.test", str(pool.id))
    assert call["headers"]["x-poolhub-event"] == "webhook.test"
    assert webhook_verify(secret=SECRET, body=call["body"], signature=call["headers"]["x-poolhub-signature"])
    assert len(webhook_receiver.calls) == 2  # no retries
    assert not WebhookDelivery.objects.exists()  # nor a recorded delivery


def test_an_unreachable_receiver_is_reported_not_raised(api, pool, manager) -> None:
    pool.webhook_url = "http://127.0.0.1:9/hooks"  # discard port: nothing listens
    pool.save()

    body = send(api, manager, pool).json()

    assert body["delivered"] is False and body["status"] is None and body["error"]


def test_a_pool_without_a_webhook_or_a_caller_without_the_role_gets_the_contract_error(
        api, pool, manager, contributor, outsider) -> None:
    assert error_code(send(api, manager, pool)) == "conflict"
    pool.webhook_url = "http://127.0.0.1:9/hooks"
    pool.save()
    assert error_code(send(api, contributor, pool)) == "forbidden"
    assert error_code(send(api, outsider, pool)) == "not_found"


def test_a_refused_address_is_invalid_like_setting_it(api, pool, manager, settings) -> None:
    pool.webhook_url = "http://127.0.0.1:9/hooks"
    pool.save()
    settings.POOLHUB_WEBHOOK_ALLOW_PRIVATE = False

    response = send(api, manager, pool)

    assert response.status_code == 400 and error_code(response) == "invalid"
    assert response.json()["error"]["details"]["field"] == "webhook_url"
