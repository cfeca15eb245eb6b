"""The pool's webhook: a signed POST when a group closes, retried with backoff, every try recorded.

Signature: `X-Poolhub-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw request body with the
pool's `webhook_secret` as key. The body carries `sent_at` (also in `X-Poolhub-Timestamp`), so a
receiver can refuse replays of old bodies. docs/rounds.md shows how to verify it.

Each try first claims the delivery with a conditional UPDATE (pending → sending, for at most
CLAIM_SECONDS), so a redelivered task or a second beat that runs at the same time finds it taken
and calls nobody: a delivery is sent once, and again only after a try failed.

Outbound calls go to public addresses only (server-side request forgery): the URL is checked
when a pool sets it and again at each delivery, and the call connects to the very address that
was checked (a name that resolves elsewhere a second later, DNS rebinding, changes nothing).
This is the approach of Stripe's and GitHub's webhook senders and of the `advocate` library
(which exists for requests only, so the few lines are here, on top of the standard `ipaddress`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Pool
from batching.models import Group, WebhookDelivery
from batching.selectors import group_paths
from poolhub.errors import BadRequest, Conflict

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Poolhub-Signature"
TIMESTAMP_HEADER = "X-Poolhub-Timestamp"
DELIVERY_HEADER = "X-Poolhub-Delivery"
EVENT_HEADER = "X-Poolhub-Event"


# A claimed delivery is another task's for this long (longer than a try can take: task time limit 90 s).
CLAIM_SECONDS = 120


class WebhookTransientError(Exception):
    """The receiver was unreachable or answered 408, 429 or 5xx: worth another try."""


class WebhookAddressRefused(Exception):
    """The URL is not one poolhub may call: its scheme, or an address that is not public."""


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    if settings.POOLHUB_WEBHOOK_ALLOW_PRIVATE:
        return not address.is_unspecified and not address.is_multicast
    # is_global is False for loopback, private, link-local (the 169.254.169.254 metadata service),
    # shared (100.64/10), reserved and documentation ranges.
    return address.is_global and not address.is_multicast


def webhook_resolve(*, url: str) -> tuple[httpx.URL, str]:
    """The URL to call and the one address to connect to, or WebhookAddressRefused saying why."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise WebhookAddressRefused("not a valid URL") from exc
    schemes = {"https", "http"} if settings.POOLHUB_WEBHOOK_ALLOW_HTTP else {"https"}
    if parsed.scheme not in schemes:
        raise WebhookAddressRefused(f"the scheme must be {' or '.join(sorted(schemes))}")
    if not parsed.host:
        raise WebhookAddressRefused("the URL names no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise WebhookAddressRefused(f"{parsed.host} does not resolve") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    # Every address the name has must be allowed: a client may be handed any of them.
    refused = [str(address) for address in addresses if not _address_allowed(address)]
    if refused or not addresses:
        raise WebhookAddressRefused(f"{parsed.host} resolves to an address that is not public ({', '.join(refused)})")
    return parsed, str(addresses[0])


def webhook_url_check(*, url: str) -> None:
    """When a pool's webhook_url is set: 400 `invalid` naming the field unless it may be called."""
    if not url:
        return
    try:
        webhook_resolve(url=url)
    except WebhookAddressRefused as exc:
        raise _url_refused(exc) from exc


def _url_refused(exc: WebhookAddressRefused) -> BadRequest:
    return BadRequest(f"webhook_url: {exc}", code="invalid",
                      details={"field": "webhook_url", "fields": {"webhook_url": [str(exc)]}})


def _post_pinned(url: str, *, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST to the checked address, with the URL's own Host header and TLS name; no redirects,
    no proxies from the environment (they would connect elsewhere)."""
    parsed, address = webhook_resolve(url=url)
    pinned = parsed.copy_with(host=address)
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    timeout = httpx.Timeout(settings.POOLHUB_WEBHOOK_TIMEOUT_SECONDS, connect=5.0)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        return client.post(pinned, content=body, headers={**headers, "Host": parsed.netloc.decode("ascii")},
                           extensions=extensions)


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
        **group_paths(group_id=group.id),
    }
    delivery = WebhookDelivery.objects.create(pool=pool, group=group, event_seq=event_seq, url=pool.webhook_url,
                                              payload=payload)
    payload["delivery_id"] = str(delivery.id)
    delivery.payload = payload
    delivery.save(update_fields=["payload"])
    from batching import tasks  # late: tasks import services, which import this

    delivery_id = str(delivery.id)
    transaction.on_commit(lambda: tasks.webhook_deliver.delay(delivery_id))
    return delivery


def _body(delivery: WebhookDelivery) -> tuple[bytes, int]:
    sent_at = timezone.now()
    body = json.dumps({**delivery.payload, "sent_at": sent_at.isoformat()}, separators=(",", ":"),
                      sort_keys=True).encode()
    return body, int(sent_at.timestamp())


def _headers(delivery: WebhookDelivery, body: bytes, timestamp: int) -> dict[str, str]:
    return _signed_headers(secret=delivery.pool.webhook_secret, body=body, timestamp=timestamp,
                           delivery_id=str(delivery.id), event=str(delivery.payload.get("type", "")))


def _signed_headers(*, secret: str, body: bytes, timestamp: int, delivery_id: str, event: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "poolhub-webhook/1",
               TIMESTAMP_HEADER: str(timestamp), DELIVERY_HEADER: delivery_id, EVENT_HEADER: event}
    if secret:
        headers[SIGNATURE_HEADER] = webhook_signature(secret=secret, body=body)
    return headers


def webhook_send_test(*, pool: Pool) -> dict[str, Any]:
    """A `webhook.test` call to the pool's webhook URL now (a manager's "send test delivery"):
    signed and checked like every delivery, but neither recorded nor retried. Says what the
    receiver answered; a refused address is 400 `invalid` like setting it."""
    if not pool.webhook_url:
        raise Conflict("the pool has no webhook URL", details={"field": "webhook_url"})
    sent_at = timezone.now()
    delivery_id = str(uuid4())
    body = json.dumps({"type": "webhook.test", "pool": str(pool.id), "delivery_id": delivery_id,
                       "sent_at": sent_at.isoformat()}, separators=(",", ":"), sort_keys=True).encode()
    headers = _signed_headers(secret=pool.webhook_secret, body=body, timestamp=int(sent_at.timestamp()),
                              delivery_id=delivery_id, event="webhook.test")
    try:
        response = _post_pinned(pool.webhook_url, body=body, headers=headers)
    except WebhookAddressRefused as exc:
        raise _url_refused(exc) from exc
    except httpx.HTTPError as exc:
        return {"delivered": False, "status": None, "error": f"{type(exc).__name__}: {exc}"}
    delivered = 200 <= response.status_code < 300
    return {"delivered": delivered, "status": response.status_code,
            "error": "" if delivered else f"HTTP {response.status_code}"}


def _record(delivery: WebhookDelivery, **fields: Any) -> None:
    WebhookDelivery.objects.filter(id=delivery.id).update(updated_at=timezone.now(), **fields)


def _claim(delivery_id: UUID | str) -> bool:
    """pending (or sending, by a try that died) → sending, in one conditional UPDATE: one winner."""
    now = timezone.now()
    claimable = Q(status=WebhookDelivery.Status.PENDING) | Q(status=WebhookDelivery.Status.SENDING,
                                                             updated_at__lt=now - timedelta(seconds=CLAIM_SECONDS))
    return WebhookDelivery.objects.filter(claimable, id=delivery_id).update(
        status=WebhookDelivery.Status.SENDING, attempts=F("attempts") + 1, updated_at=now) == 1


def webhook_deliver(*, delivery_id: UUID | str) -> str:
    """One try. Returns the delivery's status; raises WebhookTransientError when a retry may help.
    The try that reaches POOLHUB_WEBHOOK_MAX_ATTEMPTS (counted in the row, so re-drives and
    redelivered tasks count too) marks the delivery failed instead."""
    if not _claim(delivery_id):  # delivered, failed, gone, or another task is sending it now
        row = WebhookDelivery.objects.filter(id=delivery_id).values_list("status", flat=True).first()
        return "gone" if row is None else str(row)
    delivery = WebhookDelivery.objects.select_related("pool").get(id=delivery_id)
    final_attempt = delivery.attempts >= settings.POOLHUB_WEBHOOK_MAX_ATTEMPTS
    body, timestamp = _body(delivery)
    try:
        response = _post_pinned(delivery.url, body=body, headers=_headers(delivery, body, timestamp))
    except WebhookAddressRefused as exc:  # never worth a retry: the address is refused by rule
        logger.warning("webhook %s to %s refused: %s", delivery.id, delivery.url, exc)
        _record(delivery, status=WebhookDelivery.Status.FAILED, last_error=f"refused: {exc}")
        return WebhookDelivery.Status.FAILED
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
    _record(delivery, status=WebhookDelivery.Status.PENDING, response_status=status, last_error=error)
    raise WebhookTransientError(error)


def webhook_redeliver(*, delivery_id: UUID | str) -> None:
    """Admin: try a delivery again, with a fresh set of attempts."""
    WebhookDelivery.objects.filter(id=delivery_id).update(status=WebhookDelivery.Status.PENDING, attempts=0,
                                                          last_error="", updated_at=timezone.now())
    from batching import tasks

    transaction.on_commit(lambda: tasks.webhook_deliver.delay(str(delivery_id)))


def webhooks_redrive_stuck(*, older_than: timedelta | None = None) -> int:
    """Beat: re-send pending deliveries nobody has tried for longer than any retry backoff (their
    task was lost with a broker or a worker), and claimed ones whose try died. Each one is taken
    back with a conditional UPDATE, and each task claims its delivery again before calling, so two
    beats (or a redrive racing a late task) still send it once."""
    older_than = older_than or timedelta(hours=2)

    def stuck_filter() -> Q:
        now = timezone.now()
        return (Q(status=WebhookDelivery.Status.PENDING, updated_at__lt=now - older_than)
                | Q(status=WebhookDelivery.Status.SENDING, updated_at__lt=now - timedelta(seconds=CLAIM_SECONDS)))

    stuck = list(WebhookDelivery.objects.filter(stuck_filter()).values_list("id", flat=True)[:1000])
    from batching import tasks

    sent = 0
    for delivery_id in stuck:
        taken = WebhookDelivery.objects.filter(stuck_filter(), id=delivery_id).update(
            status=WebhookDelivery.Status.PENDING, updated_at=timezone.now())
        if taken:
            tasks.webhook_deliver.delay(str(delivery_id))
            sent += 1
    return sent
