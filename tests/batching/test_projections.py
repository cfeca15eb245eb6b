"""The groups' status columns are projections of their events: rebuilt from the log, they match."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from batching import services
from batching.models import Group, GroupStatus, Lease
from tests.batching.conftest import T0, stored_upload

pytestmark = pytest.mark.django_db


def test_rebuild_restores_every_group_status(pool, contributor, exporter, capsys):
    groups = [stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(hours=h), data=b"x").group
              for h in range(5)]
    ids = [g.id for g in groups if g is not None]
    for group_id in ids[1:]:
        services.group_close(group_id=group_id, reason="trigger")
    services.group_claim(group_id=ids[2], exporter=exporter)
    lease = services.group_claim(group_id=ids[3], exporter=exporter)
    Lease.objects.filter(id=lease.id).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.leases_expire()
    services.group_reopen(group_id=ids[4])
    truth = {g.id: (g.status, g.version, g.closed_at) for g in Group.objects.all()}
    assert [truth[i][0] for i in ids] == ["open", "closed", "exporting", "closed", "open"]
    Group.objects.update(status=GroupStatus.COMPLETED, version=0, closed_at=None)  # a projection gone wrong
    call_command("rebuild_groups")
    assert {g.id: (g.status, g.version, g.closed_at) for g in Group.objects.all()} == truth
    assert "5 group(s) rebuilt" in capsys.readouterr().out
