"""Unattended: a real Celery beat and worker close due windows and end expired leases."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts.models import Pool
from batching.models import Group, GroupStatus, Lease, LeaseEnd
from tests import live
from tests.conftest import make_user
from uploads.models import Event

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_beat_closes_due_windows_and_expires_leases(celery_worker, tmp_path: Path):
    pool = Pool.objects.create(name="unattended", window_seconds=60, grace_seconds=0)
    now = timezone.now()
    due = Group.objects.create(pool=pool, window_start=now - timedelta(minutes=3),
                               window_end=now - timedelta(minutes=2))
    current = Group.objects.create(pool=pool, window_start=now - timedelta(seconds=1),
                                   window_end=now + timedelta(hours=1))
    exporting = Group.objects.create(pool=pool, window_start=now - timedelta(minutes=10),
                                     window_end=now - timedelta(minutes=9), status=GroupStatus.EXPORTING)
    lease = Lease.objects.create(group=exporting, exporter=make_user("gone-exporter"),
                                 expires_at=now - timedelta(seconds=1))
    beat = subprocess.Popen(
        [str(live.BIN / "celery"), "-A", "celery_app", "beat", "--loglevel", "WARNING",
         "-s", str(tmp_path / "schedule"), "--pidfile", ""],
        cwd=live.BASE_DIR, env=live.child_env(POOLHUB_ROUNDS_BEAT_SECONDS="1"), start_new_session=True,
    )
    try:
        live.wait_for(lambda: Group.objects.get(id=due.id).status == GroupStatus.CLOSED, timeout=60,
                      what="beat closing the due window")
        live.wait_for(lambda: Group.objects.get(id=exporting.id).status == GroupStatus.CLOSED, timeout=60,
                      what="beat ending the expired lease")
    finally:
        live.stop(beat)
    assert Group.objects.get(id=current.id).status == GroupStatus.OPEN
    lease.refresh_from_db()
    assert lease.end_reason == LeaseEnd.EXPIRED
    assert Event.objects.filter(stream_id=due.id, type="group.closed").count() == 1
    assert Event.objects.filter(stream_id=exporting.id, type="group.lease_expired").count() == 1
