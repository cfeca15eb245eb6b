"""The pool's webhook: a signed POST when a group closes, retried on transient failures,
every delivery recorded (and visible in the admin)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from batching import services
from batching.models import Group, GroupStatus, WebhookDelivery
from batching.webhooks import webhook_verify
from tests.batching.conftest import T0, stored_upload
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests-only"


@pytest.fixture(autouse=True)
def _eager_retries():
    """Eager tasks that propagate errors raise on `retry`; without propagation Celery runs each
    retry at once, in line, which is what these tests want to see."""
    from celery_app import app

    app.conf.task_eager_propagates = False
    yield
    app.conf.task_eager_propagates = True


@pytest.fixture
def hooked_group(pool, contributor, webhook_receiver):
    pool.webhook_url = webhook_receiver.url
    pool.webhook_secret = SECRET
    pool.save()
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"x")
    return Group.objects.get(pool=pool)


def test_closing_calls_the_webhook_signed_over_the_raw_body(hooked_group, webhook_receiver, run_on_commit, pool):
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="trigger")
    [call] = webhook_receiver.calls
    headers = call["headers"]
    assert webhook_verify(secret=SECRET, body=call["body"], signature=headers["x-poolhub-signature"])
    assert not webhook_verify(secret="another secret", body=call["body"], signature=headers["x-poolhub-signature"])
    body = json.loads(call["body"])
    assert (body["type"], body["group"], body["pool"], body["reason"]) == (
        "group.closed", str(hooked_group.id), str(pool.id), "trigger")
    assert body["window_start"] == "2026-11-28T10:00:00+00:00"
    assert abs(int(headers["x-poolhub-timestamp"]) - time.time()) < 300
    assert headers["x-poolhub-delivery"] == body["delivery_id"]
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 1, 200)
    assert delivery.event_seq == body["event_seq"]


def test_a_failing_receiver_is_retried_until_it_answers(hooked_group, webhook_receiver, run_on_commit):
    webhook_receiver.answers = [503, 500]
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    assert len(webhook_receiver.calls) == 3
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 3, 200)


def test_a_receiver_that_stays_down_fails_the_delivery_after_the_last_attempt(hooked_group, webhook_receiver,
                                                                             run_on_commit, settings):
    settings.POOLHUB_WEBHOOK_MAX_ATTEMPTS = 3
    webhook_receiver.answers = [500] * 10
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert "HTTP 500" in delivery.last_error
    hooked_group.refresh_from_db()
    assert hooked_group.status == GroupStatus.CLOSED  # the close stands whatever the receiver does


def test_a_refusing_receiver_is_not_retried(hooked_group, webhook_receiver, run_on_commit):
    webhook_receiver.answers = [400]
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 400)


def test_an_unreachable_receiver_is_recorded(hooked_group, run_on_commit, settings, pool):
    settings.POOLHUB_WEBHOOK_MAX_ATTEMPTS = 2
    pool.webhook_url = "http://127.0.0.1:9/nothing-listens-here"
    pool.save()
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 2, None)
    assert "Connect" in delivery.last_error


def test_a_pool_without_webhook_calls_nobody(pool, contributor, run_on_commit):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"x")
    group = Group.objects.get(pool=pool)
    run_on_commit(services.group_close, group_id=group.id, reason="time")
    assert not WebhookDelivery.objects.exists()


def test_beat_closing_calls_the_webhook_too(pool, contributor, webhook_receiver, run_on_commit):
    pool.webhook_url = webhook_receiver.url
    pool.webhook_secret = SECRET
    pool.save()
    stored_upload(pool=pool, uploader=contributor, timestamp=timezone.now() - timedelta(hours=5), data=b"x")
    run_on_commit(services.groups_close_due)
    assert [body["reason"] for body in webhook_receiver.bodies()] == ["time"]


# --- admin ----------------------------------------------------------------------------------------

@pytest.fixture
def admin_client_logged_in(client, admin_user):
    admin_user.is_staff = True
    admin_user.is_superuser = True
    admin_user.save()
    assert client.login(username=admin_user.username, password=PASSWORD)
    return client


def test_admin_shows_groups_leases_and_deliveries(admin_client_logged_in, hooked_group, run_on_commit):
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="trigger")
    listing = admin_client_logged_in.get("/admin/batching/group/")
    assert listing.status_code == 200
    assert str(hooked_group.id) in listing.content.decode()
    page = admin_client_logged_in.get(f"/admin/batching/group/{hooked_group.id}/change/")
    assert page.status_code == 200
    assert "delivered" in page.content.decode()
    assert admin_client_logged_in.get("/admin/batching/webhookdelivery/").status_code == 200


def test_admin_actions_close_reopen_and_reexport(admin_client_logged_in, hooked_group, webhook_receiver,
                                                 django_capture_on_commit_callbacks):
    def act(action):
        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client_logged_in.post("/admin/batching/group/", {
                "action": action, "_selected_action": [str(hooked_group.id)]})
        assert response.status_code == 302
        hooked_group.refresh_from_db()
        return hooked_group.status

    assert act("close_groups") == GroupStatus.CLOSED
    assert act("reopen_groups") == GroupStatus.OPEN
    assert hooked_group.hold_until is not None
    assert act("close_groups") == GroupStatus.CLOSED
    assert act("reexport_groups") == GroupStatus.CLOSED
    assert [body["reason"] for body in webhook_receiver.bodies()] == ["admin", "admin", "reexport"]


def test_a_delivery_whose_task_was_lost_is_sent_again_by_beat(hooked_group, webhook_receiver, pool):
    # The close committed but its task never ran (a broker lost it): the delivery sits pending.
    services.group_close(group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, webhook_receiver.calls) == ("pending", [])
    WebhookDelivery.objects.filter(id=delivery.id).update(updated_at=timezone.now() - timedelta(hours=3))
    from batching.tasks import webhooks_redrive_stuck

    assert webhooks_redrive_stuck() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert len(webhook_receiver.calls) == 1
    assert webhooks_redrive_stuck() == 0


def test_admin_send_again_starts_a_fresh_set_of_attempts(admin_client_logged_in, hooked_group, webhook_receiver,
                                                         run_on_commit, settings, django_capture_on_commit_callbacks):
    settings.POOLHUB_WEBHOOK_MAX_ATTEMPTS = 2
    webhook_receiver.answers = [500, 500]
    run_on_commit(services.group_close, group_id=hooked_group.id, reason="time")
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_logged_in.post("/admin/batching/webhookdelivery/", {
            "action": "redeliver", "_selected_action": [str(delivery.id)]})
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert len(webhook_receiver.calls) == 3
