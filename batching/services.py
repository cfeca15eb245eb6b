"""Groups: the timestamp windows that uploads join."""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction

from accounts.models import Pool
from batching.models import Group
from batching.windows import window_bounds


def group_for_upload(*, pool: Pool, timestamp: datetime) -> Group:
    """The group an upload with this timestamp joins: its window's group, created on first use.

    (The rounds work adds the pool's late policy here: a closed window may send the upload to the
    next open group, or refuse it with 409.)
    """
    start, end = window_bounds(origin=pool.origin, window_seconds=pool.window_seconds, at=timestamp)
    group = Group.objects.filter(pool=pool, window_start=start).first()
    if group is not None:
        return group
    try:
        with transaction.atomic():
            return Group.objects.create(pool=pool, window_start=start, window_end=end)
    except IntegrityError:  # another request created it first
        return Group.objects.get(pool=pool, window_start=start)
