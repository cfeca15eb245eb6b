"""Webhooks reach public addresses only (checked when set and at each delivery, connecting to the
checked address), and each delivery is sent once even when two tasks run it at the same time."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import Pool, User
from batching import services, webhooks
from batching.models import Group, WebhookDelivery
from tests.batching.conftest import T0, stored_upload
from tests.conftest import error_code

pytestmark = pytest.mark.django_db

REFUSED_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:8000/admin/",
    "http://[::1]:6379/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:6379/",  # a name that resolves to loopback
    "https://user:pass@10.1.2.3/hook",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0:8000/",
    "http://224.0.1.1/",
    "ftp://8.8.8.8/hook",
    "gopher://8.8.8.8/",
    "http://no-such-host.invalid/",
]


@pytest.fixture
def public_only(settings: Any) -> None:
    settings.POOLHUB_WEBHOOK_ALLOW_PRIVATE = False


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_manager_cannot_point_the_webhook_inside_the_network(api: Callable[[User], APIClient], manager: User,
                                                               pool: Pool, public_only: None, url: str) -> None:
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"webhook_url": url}, format="json")
    assert response.status_code == 400, response.content
    assert error_code(response) == "invalid"
    assert response.json()["error"]["details"]["field"] == "webhook_url"
    pool.refresh_from_db()
    assert pool.webhook_url == ""


def test_a_public_address_is_accepted(api: Callable[[User], APIClient], manager: User, pool: Pool,
                                      public_only: None) -> None:
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"webhook_url": "https://8.8.8.8/hook"}, format="json")
    assert response.status_code == 200, response.content
    pool.refresh_from_db()
    assert pool.webhook_url == "https://8.8.8.8/hook"


def test_http_is_refused_when_the_server_requires_https(api: Callable[[User], APIClient], manager: User, pool: Pool,
                                                        public_only: None, settings: Any) -> None:
    settings.POOLHUB_WEBHOOK_ALLOW_HTTP = False
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"webhook_url": "http://8.8.8.8/hook"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "webhook_url"


@pytest.fixture
def hooked_group(pool: Pool, contributor: User, webhook_receiver: Any) -> Group:
    Pool.objects.filter(id=pool.id).update(webhook_url=webhook_receiver.url)
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"x")
    return Group.objects.get(pool=pool)


def test_delivery_refuses_a_private_address_set_before_the_rule(hooked_group: Group, webhook_receiver: Any,
                                                                run_on_commit: Any, public_only: None) -> None:
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    assert webhook_receiver.calls == []
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "not public" in delivery.last_error


def test_delivery_connects_to_the_address_it_checked(hooked_group: Group, webhook_receiver: Any, run_on_commit: Any,
                                                     monkeypatch: pytest.MonkeyPatch, pool: Pool) -> None:
    """A name that resolves to one address when checked and another a moment later (DNS
    rebinding) is called at the checked address, under its own name."""
    port = int(webhook_receiver.url.split(":")[2].split("/")[0])
    Pool.objects.filter(id=pool.id).update(webhook_url=f"http://hooks.example.test:{port}/hooks/poolhub")
    answers = iter(["127.0.0.1", "192.0.2.1"])
    real = socket.getaddrinfo

    def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    [call] = webhook_receiver.calls
    assert call["headers"]["host"] == f"hooks.example.test:{port}"
    assert WebhookDelivery.objects.get().status == "delivered"


def test_a_redirect_is_not_followed(hooked_group: Group, webhook_receiver: Any, run_on_commit: Any) -> None:
    webhook_receiver.answers = [302]
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    assert len(webhook_receiver.calls) == 1
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.response_status) == ("failed", 302)


def test_a_second_task_running_while_the_first_is_sending_calls_nobody(hooked_group: Group, webhook_receiver: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A redelivered task (or a second beat's re-drive) runs while the first try is on the wire."""
    services.group_close(group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    real_post = httpx.Client.post
    seen: list[str] = []

    def post_while_a_duplicate_runs(self: httpx.Client, *args: Any, **kwargs: Any) -> httpx.Response:
        if not seen:
            seen.append(webhooks.webhook_deliver(delivery_id=delivery.id))
        return real_post(self, *args, **kwargs)

    monkeypatch.setattr(httpx.Client, "post", post_while_a_duplicate_runs)
    assert webhooks.webhook_deliver(delivery_id=delivery.id) == "delivered"
    assert seen == ["sending"]
    assert len(webhook_receiver.calls) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert webhooks.webhook_deliver(delivery_id=delivery.id) == "delivered"
    assert len(webhook_receiver.calls) == 1


def test_a_try_that_died_while_sending_is_taken_over_by_beat(hooked_group: Group, webhook_receiver: Any) -> None:
    services.group_close(group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    # A worker claimed it and died mid-call.
    WebhookDelivery.objects.filter(id=delivery.id).update(status="sending", attempts=1)
    assert webhooks.webhooks_redrive_stuck() == 0  # its claim still runs: nobody else sends it
    assert webhook_receiver.calls == []
    WebhookDelivery.objects.filter(id=delivery.id).update(
        updated_at=timezone.now() - timedelta(seconds=webhooks.CLAIM_SECONDS + 1))
    assert webhooks.webhooks_redrive_stuck() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert len(webhook_receiver.calls) == 1
