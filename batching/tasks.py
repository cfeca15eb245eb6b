"""Celery adapters for rounds: they take ids, re-fetch, and call one service, whose name each task bears."""

from __future__ import annotations

import random
from typing import Any

from celery import shared_task
from django.conf import settings

from batching import services, webhooks


@shared_task(name="groups_close_due", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180)
def groups_close_due() -> list[str]:
    """Beat: close windows past their end plus grace (and groups whose close rule is met)."""
    return [str(group_id) for group_id in services.groups_close_due()]


@shared_task(name="leases_expire", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=120, time_limit=180)
def leases_expire() -> list[str]:
    """Beat: leases past their time end; their groups return to `closed`."""
    return [str(lease_id) for lease_id in services.leases_expire()]


@shared_task(name="group_close_if_rules_met", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=90)
def group_close_if_rules_met(group_id: str) -> None:
    services.group_close_if_rules_met(group_id=group_id)


def _backoff(retries: int) -> float:
    """Exponential, capped, with jitter so a receiver coming back is not hit by every retry at once."""
    base = settings.POOLHUB_WEBHOOK_BACKOFF_SECONDS * (2 ** retries)
    return min(base, 3600) * random.uniform(0.5, 1.0)


@shared_task(bind=True, name="webhook_deliver", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=90)
def webhook_deliver(self: Any, delivery_id: str) -> str:
    try:
        return webhooks.webhook_deliver(delivery_id=delivery_id)
    except webhooks.WebhookTransientError as exc:
        # The row counts the attempts and fails the delivery on the last one; Celery's own limit
        # is only a guard.
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries),
                         max_retries=settings.POOLHUB_WEBHOOK_MAX_ATTEMPTS) from exc


@shared_task(name="webhooks_redrive_stuck", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=90)
def webhooks_redrive_stuck() -> int:
    """Beat: re-send webhook deliveries whose task was lost."""
    return webhooks.webhooks_redrive_stuck()
