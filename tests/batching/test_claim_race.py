"""Two exporters claim the same group at the same moment: exactly one lease is given."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

from batching.models import Group, GroupStatus, Lease
from batching.services import group_claim
from poolhub.errors import Conflict
from tests.batching.conftest import T0, stored_upload
from uploads.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def _race(group: Group, exporters: list) -> list[object]:
    barrier = threading.Barrier(len(exporters))
    outcomes: list[object] = [None] * len(exporters)

    def claim(index: int) -> None:
        try:
            barrier.wait(10)
            outcomes[index] = group_claim(group_id=group.id, exporter=exporters[index])
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(exporters))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


@pytest.mark.parametrize("round_", range(3))
def test_two_exporters_at_once_one_wins(pool, contributor, exporter, second_exporter, round_):
    stored_upload(pool=pool, uploader=contributor, timestamp=T0 + timedelta(hours=round_), data=b"x")
    group = Group.objects.get(pool=pool)
    Group.objects.filter(id=group.id).update(status=GroupStatus.CLOSED)
    outcomes = _race(group, [exporter, second_exporter])
    leases = [o for o in outcomes if isinstance(o, Lease)]
    refusals = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(leases) == 1, outcomes
    assert [r.code for r in refusals] == ["already_claimed"], outcomes
    assert Lease.objects.filter(group=group).count() == 1
    group.refresh_from_db()
    assert group.status == GroupStatus.EXPORTING
    assert Event.objects.filter(stream_id=group.id, type="group.claimed").count() == 1
