"""Celery adapters for the data lifecycle: they call one service."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task

from lifecycle import services


@shared_task(name="purge_expired", acks_late=True, reject_on_worker_lost=True,
             soft_time_limit=540, time_limit=600)
def purge_expired() -> dict[str, int]:
    """Beat: content past retention and failed uploads kept too long leave the file store."""
    return asdict(services.purge_expired())
