"""Celery adapters: take ids, call one service, let the service decide whether anything is left to do.

Each task is named like the service it calls (function name and `name=` string alike).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from uploads import services, staging, transfers, tus
from uploads.services import StoreOutcome


@shared_task(name="upload_store", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None,
             soft_time_limit=settings.POOLHUB_STORE_SOFT_TIME_LIMIT,
             time_limit=settings.POOLHUB_STORE_TIME_LIMIT)
def upload_store(self: Any, upload_id: str) -> str:
    """Store one upload in GridFS (a retry after a failed attempt). Attempts are counted in the
    database by the service (so a killed worker's try counts too); Celery's own retry counter is
    only the delivery mechanism."""
    result = services.upload_store(upload_id=upload_id)
    if self.request.is_eager:  # inline (tests, tools): retry at once; a busy lock's holder finishes it
        while result.outcome is StoreOutcome.RETRY:
            result = services.upload_store(upload_id=upload_id)
        return result.outcome.value
    if result.outcome in (StoreOutcome.RETRY, StoreOutcome.BUSY):
        raise self.retry(countdown=result.retry_in)
    return result.outcome.value


@shared_task(name="uploads_store_pending", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=settings.POOLHUB_STORE_SOFT_TIME_LIMIT, time_limit=settings.POOLHUB_STORE_TIME_LIMIT)
def uploads_store_pending(upload_ids: list[str]) -> int:
    """The store kick: store these uploads and other waiting ones, in batches. Returns how many were stored."""
    return services.uploads_store_pending(upload_ids=upload_ids).stored


@shared_task(name="uploads_pending_kick", acks_late=True, soft_time_limit=60, time_limit=90)
def uploads_pending_kick() -> int:
    """Beat, every few seconds (the outbox relay): re-kick uploads still waiting for their first store attempt."""
    return services.uploads_pending_kick()


@shared_task(name="uploads_stuck_redrive", acks_late=True, reject_on_worker_lost=True, soft_time_limit=120,
             time_limit=180)
def uploads_stuck_redrive() -> int:
    """Beat: uploads left `cached` too long (a dead worker after its first attempt) get their store task again."""
    return services.uploads_stuck_redrive()


@shared_task(name="staging_reconcile", acks_late=True, soft_time_limit=120, time_limit=180)
def staging_reconcile() -> int:
    """Beat: give back the staging budget held by staged files whose keys expired."""
    return staging.staging_reconcile()


@shared_task(name="transfers_expire", acks_late=True, reject_on_worker_lost=True, soft_time_limit=60, time_limit=90)
def transfers_expire() -> int:
    """Beat: websocket transfers idle past their deadline lose their staged bytes."""
    return transfers.transfers_expire()


@shared_task(name="tus_uploads_expire", acks_late=True, soft_time_limit=120, time_limit=180)
def tus_uploads_expire() -> int:
    """Beat: drop tus uploads idle past their Upload-Expires, releasing their staged bytes."""
    return tus.tus_uploads_expire()
