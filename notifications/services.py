"""Pushing committed events to websocket listeners."""

from __future__ import annotations

from uploads.models import Event


def event_publish(*, event: Event) -> None:
    """Push a committed event to the sockets that should see it (the realtime gateway fills this in)."""
    return None


def membership_changed(*, pool_id: object, user_id: object) -> None:
    """A member left a pool or changed role: their sockets re-check what they may receive."""
    return None
