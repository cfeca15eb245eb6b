"""Pushing committed events to websocket listeners, and telling live sockets what changed.

Every function here runs after a commit and never raises into its caller: a push that cannot
be delivered (Redis down, a socket too far behind) is not lost, because the event is in the log
and `resume` replays it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any
from uuid import UUID

from channels.layers import get_channel_layer

from notifications.selectors import notification_audience, notification_for_event, user_group
from poolhub.metrics import observe_publish
from uploads.models import Event

logger = logging.getLogger(__name__)
_SEND_TIMEOUT_SECONDS = 5


class _PublishLoop:
    """One event loop per process, in a daemon thread, for pushes from synchronous code.

    `async_to_sync` would start a fresh loop, and so a fresh Redis connection, for every push
    (about 15 ms each, measured; a Redis round trip is under 1 ms). This loop keeps its
    connection pool. It is re-created after a fork (Celery's prefork pool).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self.lock:
            if self.loop is None or self.pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="poolhub-publish", daemon=True).start()
                self.loop, self.pid = loop, os.getpid()
            return self.loop


_publish_loop = _PublishLoop()


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _publish_loop.get())
        future.result(timeout=_SEND_TIMEOUT_SECONDS)
    except Exception:  # the push is best effort; the event log is the record
        logger.warning("websocket push to %s failed; clients catch up with resume", group, exc_info=True)


@observe_publish  # counts uploads, groups and results by event type; times the fan-out
def event_publish(*, event: Event) -> None:
    """Push a committed event to the sockets that should see it: one group_send per audience
    group (the uploader's, the admins', or the pool's), never one per member. The frame's text
    is encoded here, once, not once per socket."""
    frame = notification_for_event(event=event)
    if frame is None:
        return
    audience = notification_audience(event=event)
    message = {"type": "notify", "frame": frame, "text": json.dumps(frame), "pool": audience.pool_id}
    for group in audience.groups():
        _group_send(group, message)


def membership_changed(*, pool_id: object, user_id: object) -> None:
    """A member left a pool or changed role: their sockets re-read their pools and drop the
    pool's group if they are no longer in it."""
    _group_send(user_group(str(user_id)), {"type": "membership.changed", "pool": str(pool_id)})


def access_token_revoked(*, user_id: UUID | str, jti: str | None) -> None:
    """Logout: close the user's sockets that authenticated with this access token (all of the
    user's sockets when `jti` is None)."""
    _group_send(user_group(str(user_id)), {"type": "token.revoked", "jti": jti})
