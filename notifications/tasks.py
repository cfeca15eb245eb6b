"""Celery adapters for the websocket gateway."""

from __future__ import annotations

from celery import shared_task

from notifications import transfers


@shared_task(name="notifications.transfers_expire", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=60, time_limit=90)
def transfers_expire() -> int:
    """Beat: chunked transfers idle past their deadline lose their staged bytes."""
    return transfers.transfers_expire()
