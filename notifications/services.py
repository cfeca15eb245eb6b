"""Pushing committed events to websocket listeners, and telling live sockets what changed.

Every function here runs after a commit and never raises into its caller: a push that cannot
be delivered (Redis down, a socket too far behind) is not lost, because the event is in the log
and `resume` replays it.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from notifications.selectors import notification_audience, notification_for_event, user_group
from uploads.models import Event

logger = logging.getLogger(__name__)


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception:  # the push is best effort; the event log is the record
        logger.warning("websocket push to %s failed; clients catch up with resume", group, exc_info=True)


def event_publish(*, event: Event) -> None:
    """Push a committed event to the sockets that should see it: one group_send per audience
    group (the uploader's, the admins', or the pool's), never one per member."""
    frame = notification_for_event(event=event)
    if frame is None:
        return
    audience = notification_audience(event=event)
    for group in audience.groups():
        _group_send(group, {"type": "notify", "frame": frame, "pool": audience.pool_id})


def membership_changed(*, pool_id: object, user_id: object) -> None:
    """A member left a pool or changed role: their sockets re-read their pools and drop the
    pool's group if they are no longer in it."""
    _group_send(user_group(str(user_id)), {"type": "membership.changed", "pool": str(pool_id)})


def access_token_revoked(*, user_id: UUID | str, jti: str | None) -> None:
    """Logout: close the user's sockets that authenticated with this access token (all of the
    user's sockets when `jti` is None)."""
    _group_send(user_group(str(user_id)), {"type": "token.revoked", "jti": jti})
