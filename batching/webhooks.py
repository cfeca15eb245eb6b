"""The pool's webhook: a signed POST when a group closes, retried with backoff, every try recorded.

Signature: `X-Poolhub-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw request body with the
pool's `webhook_secret` as key. The body carries `sent_at` (also in `X-Poolhub-Timestamp`), so a
receiver can refuse replays of old bodies. docs/rounds.md shows how to verify it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from batching.models import Group, WebhookDelivery

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Poolhub-Signature"
TIMESTAMP_HEADER = "X-Poolhub-Timestamp"
DELIVERY_HEADER = "X-Poolhub-Delivery"
EVENT_HEADER = "X-Poolhub-Event"


class WebhookTransientError(Exception):
    """The receiver was unreachable or answered 408, 429 or 5xx: worth another try."""


def webhook_signature(*, secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_verify(*, secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does (and what the tests do): constant-time compare."""
    return hmac.compare_digest(webhook_signature(secret=secret, body=body), signature)


def webhook_schedule(*, group: Group, event_seq: int, reason: str) -> WebhookDelivery | None:
    """Record a delivery for a `group.closed` event and send it after commit (inside the closing
    transaction, so a rolled-back close calls nobody)."""
    pool = group.pool
    if not pool.webhook_url:
        return None
    payload = {
        "type": "group.closed", "event_seq": event_seq, "pool": str(pool.id), "group": str(group.id),
        "window_start": group.window_start.isoformat(), "window_end": group.window_end.isoformat(),
        "reason": reason, "closed_at": (group.closed_at or timezone.now()).isoformat(),
        "group_url": f"/api/v1/groups/{group.id}", "claim_url": f"/api/v1/groups/{group.id}/claim",
    }
    delivery = WebhookDelivery.objects.create(pool=pool, group=group, event_seq=event_seq, url=pool.webhook_url,
                                              payload=payload)
    payload["delivery_id"] = str(delivery.id)
    delivery.payload = payload
    delivery.save(update_fields=["payload"])
    from batching.tasks import deliver_webhook  # late: tasks import services, which import this

    delivery_id = str(delivery.id)
    transaction.on_commit(lambda: deliver_webhook.delay(delivery_id))
    return delivery


def _body(delivery: WebhookDelivery) -> tuple[bytes, int]:
    sent_at = timezone.now()
    body = json.dumps({**delivery.payload, "sent_at": sent_at.isoformat()}, separators=(",", ":"),
                      sort_keys=True).encode()
    return body, int(sent_at.timestamp())


def _headers(delivery: WebhookDelivery, body: bytes, timestamp: int) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "poolhub-webhook/1",
               TIMESTAMP_HEADER: str(timestamp), DELIVERY_HEADER: str(delivery.id),
               EVENT_HEADER: str(delivery.payload.get("type", ""))}
    secret = delivery.pool.webhook_secret
    if secret:
        headers[SIGNATURE_HEADER] = webhook_signature(secret=secret, body=body)
    return headers


def _record(delivery: WebhookDelivery, **fields: Any) -> None:
    WebhookDelivery.objects.filter(id=delivery.id).update(updated_at=timezone.now(), **fields)


def webhook_deliver(*, delivery_id: UUID | str) -> str:
    """One try. Returns the delivery's status; raises WebhookTransientError when a retry may help.
    The try that reaches POOLHUB_WEBHOOK_MAX_ATTEMPTS (counted in the row, so re-drives and
    redelivered tasks count too) marks the delivery failed instead."""
    delivery = WebhookDelivery.objects.select_related("pool").filter(id=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return "gone" if delivery is None else delivery.status
    final_attempt = delivery.attempts + 1 >= settings.POOLHUB_WEBHOOK_MAX_ATTEMPTS
    body, timestamp = _body(delivery)
    WebhookDelivery.objects.filter(id=delivery.id).update(attempts=F("attempts") + 1)
    timeout = httpx.Timeout(settings.POOLHUB_WEBHOOK_TIMEOUT_SECONDS, connect=5.0)
    try:
        response = httpx.post(delivery.url, content=body, headers=_headers(delivery, body, timestamp),
                              timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        return _failed_try(delivery, None, f"{type(exc).__name__}: {exc}", final_attempt)
    if 200 <= response.status_code < 300:
        _record(delivery, status=WebhookDelivery.Status.DELIVERED, response_status=response.status_code,
                last_error="", delivered_at=timezone.now())
        return WebhookDelivery.Status.DELIVERED
    error = f"HTTP {response.status_code}: {response.text[:500]}"
    if response.status_code in (408, 429) or response.status_code >= 500:
        return _failed_try(delivery, response.status_code, error, final_attempt)
    # Any other answer is the receiver refusing this call: retrying would not change it.
    _record(delivery, status=WebhookDelivery.Status.FAILED, response_status=response.status_code, last_error=error)
    return WebhookDelivery.Status.FAILED


def _failed_try(delivery: WebhookDelivery, status: int | None, error: str, final_attempt: bool) -> str:
    logger.warning("webhook %s to %s failed: %s", delivery.id, delivery.url, error)
    if final_attempt:
        _record(delivery, status=WebhookDelivery.Status.FAILED, response_status=status, last_error=error)
        return WebhookDelivery.Status.FAILED
    _record(delivery, response_status=status, last_error=error)
    raise WebhookTransientError(error)


def webhook_redeliver(*, delivery_id: UUID | str) -> None:
    """Admin: try a delivery again, with a fresh set of attempts."""
    WebhookDelivery.objects.filter(id=delivery_id).update(status=WebhookDelivery.Status.PENDING, attempts=0,
                                                          last_error="", updated_at=timezone.now())
    from batching.tasks import deliver_webhook

    transaction.on_commit(lambda: deliver_webhook.delay(str(delivery_id)))


def webhooks_redrive_stuck(*, older_than: timedelta | None = None) -> int:
    """Beat: re-send pending deliveries nobody has tried for longer than any retry backoff (their
    task was lost with a broker or a worker). Receivers de-duplicate on the delivery id."""
    older_than = older_than or timedelta(hours=2)
    stuck = list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING,
                                                updated_at__lt=timezone.now() - older_than)
                 .values_list("id", flat=True)[:1000])
    from batching.tasks import deliver_webhook

    for delivery_id in stuck:
        WebhookDelivery.objects.filter(id=delivery_id).update(updated_at=timezone.now())
        deliver_webhook.delay(str(delivery_id))
    return len(stuck)
