"""The websocket gateway at /ws/ (docs/api.md, "Websocket"); docs/realtime.md describes the protocol.

One consumer per socket. It authenticates (a first `connect` frame, or `bearer.<token>` offered
in `Sec-WebSocket-Protocol`), joins the channel-layer groups of its user (the user's own, the
admins', one per pool), answers the verbs and forwards pushes. Frames are handled one at a
time, in arrival order, pushes included.

The per-socket paths stay on the event loop: a push is one send of text encoded once by the
publisher, the per-frame logout check is one async Redis call, and `connect` makes one thread
hop (token, user and pools together). Only verbs that need the database or the staging writer
run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.exceptions import APIException

from accounts.models import User
from notifications import gateway
from notifications.selectors import ADMINS_GROUP, pool_group, user_group
from poolhub.errors import ApiError, BadRequest, describe_error
from uploads import transfers

logger = logging.getLogger(__name__)
T = TypeVar("T")

SUBPROTOCOL = "poolhub"
BEARER_PREFIX = "bearer."
CLOSE_UNAUTHENTICATED = 4401  # bad, expired, revoked or missing credentials
CLOSE_AUTH_TIMEOUT = 4408  # no credentials within the deadline
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the channel layer's Redis is unreachable
_DELIVERED_MEMORY = 10_000  # seqs remembered per socket, so a push and its replay arrive once
_FRAME_STEPS = 8  # loop turns from a frame read off the socket to its handler (uvicorn, channels dispatch)
_LATE_SECONDS = 0.5  # an auth deadline waking this late means the server, not the client, was slow
_MAX_GRACE = 6  # at most this many auth windows more for a server that keeps running late


def in_thread(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """Run sync work (ORM, Redis) in the executor's threads, not in the one thread Django keeps for
    thread-sensitive code, so sockets of one process do not queue behind each other's chunks.
    The thread's database connection is released afterwards, as after a request."""

    @functools.wraps(func)
    def closing(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(closing, thread_sensitive=False)


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


def _auth_seconds() -> float:
    return float(settings.POOLHUB_WS_AUTH_SECONDS)


def _resync_seconds() -> float:
    """How often an open socket re-reads its pools on `alive` (pools joined since it connected)."""
    return float(settings.POOLHUB_WS_RESYNC_SECONDS)


class GatewayConsumer(AsyncJsonWebsocketConsumer):
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.joined: set[str] = set()  # the groups this socket is in, kept exact at every await
        sent: set[str] = set()

        async def tracked_send(message: dict[str, Any]) -> None:
            sent.add(message["type"])
            await send(message)

        try:
            await super().__call__(scope, receive, tracked_send)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # The channel layer's Redis is gone (its subscribe fails before the handshake is even
            # answered): refuse with "try again later" instead of letting the server answer 500.
            logger.warning("websocket refused: the channel layer's Redis is unreachable: %s", exc)
            await self._refuse_unavailable(tracked_send, sent)
        finally:
            # However the socket ended (even without a disconnect message), it leaves its groups.
            await self._leave_groups()

    @staticmethod
    async def _refuse_unavailable(send: Callable[[dict[str, Any]], Awaitable[None]], sent: set[str]) -> None:
        """Accept (if not yet), an `unavailable` error frame, then close with 1013."""
        if "websocket.close" in sent:
            return
        frame = {"type": "error", "code": "unavailable", "message": "the service is unavailable; try again later"}
        with contextlib.suppress(Exception):  # the peer may already be gone
            if "websocket.accept" not in sent:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": json.dumps(frame)})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN})

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its hop to the sync thread before every message (to close
        stale database connections): that hop ran once per push per socket and queued every
        socket of the process behind one thread. This consumer uses the database only inside
        `in_thread`, which releases the connection itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.user: User | None = None
        self.jti: str | None = None
        self.is_admin = False
        self.pools: set[str] = set()
        self.synced_at = 0.0
        self.delivered: set[int] = set()
        self.delivered_order: deque[int] = deque()
        self.timer: asyncio.Task[None] | None = None
        self.closed = False
        self.writers: transfers.Writers = {}  # open staging writers of this socket, by transfer id
        offered = list(self.scope.get("subprotocols") or [])
        token = next((p[len(BEARER_PREFIX):] for p in offered if p.startswith(BEARER_PREFIX)), None)
        await self.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        if token is not None:
            await self._authenticate(token=token, request_id=None)
        else:
            self._set_timer(self._auth_deadline())

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        await self._leave_groups()

    async def _leave_groups(self) -> None:
        groups, self.joined = self.joined, set()
        for group in groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as exc:  # only the Redis unsubscribe can fail; the membership is gone
                logger.warning("socket left %s, but unsubscribing failed: %s", group, exc)

    # --- frames from the client ------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.closed:
            return  # refused and closing: frames already in flight change nothing
        try:
            content = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # deep nesting too: `invalid`, never a crash
            content = None
        if not isinstance(content, dict):
            await self._send_error("invalid", "frames are JSON objects with a `type`", request_id=None)
            return
        request_id = content.get("request_id")
        handler = self._handlers().get(str(content.get("type")))
        if handler is None:
            await self._send_error("invalid", f"unknown frame type {content.get('type')!r}", request_id=request_id)
            return
        if self.user is None and content.get("type") != "connect":
            await self._refuse("not_authenticated", "authenticate first: send a `connect` frame with your access token",
                               request_id=request_id)
            return
        try:
            if self.user is not None and content.get("type") != "connect" and await self._token_revoked():
                await self._refuse("token_revoked", "this access token was logged out", request_id=request_id)
                return
            reply = await handler(content)
        except APIException as exc:
            code, message, details = describe_error(exc)
            await self._send_error(code, message, request_id=request_id, details=details)
            return
        except Exception:
            logger.exception("websocket frame %s failed", content.get("type"))
            await self._send_error("server_error", "the server failed; nothing was changed", request_id=request_id)
            return
        if reply is not None and not self.closed:
            if request_id is not None:
                reply["request_id"] = request_id
            await self.send_json(reply)

    def _handlers(self) -> dict[str, Handler]:
        return {
            "connect": self._on_connect,
            "alive": self._on_alive,
            "resume": self._on_resume,
            "get-history": self._on_history,
            "start-transfer": self._on_start_transfer,
            "write-chunk": self._on_write_chunk,
            "complete-upload": self._on_complete_upload,
            "get-transfer": self._on_get_transfer,
            "abort-transfer": self._on_abort_transfer,
        }

    async def _on_connect(self, content: dict[str, Any]) -> dict[str, Any] | None:
        token = content.get("access_token")
        if not isinstance(token, str) or not token:
            raise BadRequest("access_token: required", code="not_authenticated")
        if self.user is None and self.timer is not None:
            # Credentials arrived in time; however long the server takes to check them (a
            # thousand devices reconnecting at once), the deadline no longer applies.
            self.timer.cancel()
        await self._authenticate(token=token, request_id=content.get("request_id"))
        return None  # _authenticate replied

    async def _on_alive(self, content: dict[str, Any]) -> dict[str, Any]:
        if time.monotonic() - self.synced_at > _resync_seconds():
            await self._sync_groups()
        return {"type": "alive"}

    async def _on_resume(self, content: dict[str, Any]) -> dict[str, Any]:
        after = content.get("after")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise BadRequest("after: an event seq (an integer >= 0)", details={"fields": {"after": ["invalid"]}})
        await self._sync_groups()
        user = self._user()
        count, last, cursor, more = 0, after, after, True
        while more:
            frames, cursor, more = await in_thread(gateway.notifications_page)(
                user=user, pool_ids=self.pools, after=cursor)
            for frame in frames:
                await self._deliver(frame, replay=True)
                last = int(frame["seq"])
                count += 1
        return {"type": "resumed", "after": after, "last_seq": last, "count": count}

    async def _on_history(self, content: dict[str, Any]) -> dict[str, Any]:
        uploads = await in_thread(gateway.history)(user=self._user(), pool_id=content.get("pool"))
        return {"type": "history", "uploads": uploads}

    async def _on_start_transfer(self, content: dict[str, Any]) -> dict[str, Any]:
        started = await in_thread(transfers.transfer_start)(user=self._user(), frame=content)
        return {"type": "transfer-started", **started}

    async def _on_write_chunk(self, content: dict[str, Any]) -> dict[str, Any]:
        acked = await in_thread(transfers.transfer_write)(
            user=self._user(), frame=content, writers=self.writers)
        return {"type": "chunk-ack", **acked}

    async def _on_complete_upload(self, content: dict[str, Any]) -> dict[str, Any]:
        upload = await in_thread(transfers.transfer_complete)(
            user=self._user(), frame=content, writers=self.writers)
        return {"type": "upload-accepted", "upload": upload}

    async def _on_abort_transfer(self, content: dict[str, Any]) -> dict[str, Any]:
        aborted = await in_thread(transfers.transfer_abort)(user=self._user(), frame=content, writers=self.writers)
        return {"type": "transfer-aborted", **aborted}

    async def _on_get_transfer(self, content: dict[str, Any]) -> dict[str, Any]:
        state = await in_thread(transfers.transfer_status)(user=self._user(), frame=content)
        return {"type": "transfer", **state}

    # --- authentication ---------------------------------------------------------------------

    async def _authenticate(self, *, token: str, request_id: Any) -> None:
        try:
            user, claims, pools = await in_thread(gateway.socket_open)(token=token)
        except ApiError as exc:
            await self._refuse(exc.code, exc.message, request_id=request_id)
            return
        if self.user is not None and self.user.pk != user.pk:
            raise BadRequest("this socket belongs to another user; open a new socket", code="forbidden")
        self.user, self.jti, self.is_admin = user, str(claims["jti"]), bool(user.is_poolhub_admin)
        self._set_timer(self._expire_at(float(claims["exp"])))
        await self._join_groups(pools)
        reply: dict[str, Any] = {"type": "connected", "user": gateway.user_json(user)}
        if request_id is not None:
            reply["request_id"] = request_id
        await self.send_json(reply)

    async def _token_revoked(self) -> bool:
        user_id = self.user.pk if self.user is not None else None
        return bool(self.jti) and await gateway.jti_is_denied_async(jti=str(self.jti), user_id=user_id)

    def _set_timer(self, coroutine: Awaitable[None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.ensure_future(coroutine)

    async def _auth_deadline(self) -> None:
        """Close a socket that sent no credentials in time. Time the server itself was too busy
        to notice a frame (its event loop running late, as in a storm of reconnections) does not
        count against the client: a late wake-up grants that much again, up to a limit."""
        loop = asyncio.get_running_loop()
        wait, granted = _auth_seconds(), 0.0
        while True:
            due = loop.time() + wait
            await asyncio.sleep(wait)
            for _ in range(_FRAME_STEPS):  # a frame the server has already read is handled first
                await asyncio.sleep(0)
            if self.user is not None:
                return
            late = loop.time() - due
            if late < _LATE_SECONDS or granted >= _MAX_GRACE * _auth_seconds():
                break
            wait = late
            granted += late
        if self.user is None:
            await self._refuse("not_authenticated", "no credentials within the time allowed", request_id=None,
                               close_code=CLOSE_AUTH_TIMEOUT)

    async def _expire_at(self, exp: float) -> None:
        await asyncio.sleep(max(0.0, exp - time.time()))
        await self._refuse("invalid_token", "the access token expired; reconnect with a fresh one", request_id=None)

    async def _refuse(self, code: str, message: str, *, request_id: Any,
                      close_code: int = CLOSE_UNAUTHENTICATED) -> None:
        """An error frame, then the socket closes: the only way out for credential problems."""
        if self.closed:
            return
        await self._send_error(code, message, request_id=request_id)
        self.closed = True
        with contextlib.suppress(Exception):
            await self.close(code=close_code)

    # --- groups and pushes ------------------------------------------------------------------

    async def _sync_groups(self) -> None:
        """Re-read the user's pools: join new ones, leave pools they left."""
        await self._join_groups(await in_thread(gateway.user_pool_ids)(user=self._user()))

    async def _join_groups(self, pools: set[str]) -> None:
        user = self._user()
        self.pools = pools
        wanted = {user_group(user.pk), *(pool_group(p) for p in pools)}
        if self.is_admin:
            wanted.add(ADMINS_GROUP)
        for group in self.joined - wanted:
            self.joined.discard(group)
            await self.channel_layer.group_discard(group, self.channel_name)
        for group in wanted - self.joined:
            self.joined.add(group)
            await self.channel_layer.group_add(group, self.channel_name)
        self.synced_at = time.monotonic()

    async def notify(self, message: dict[str, Any]) -> None:
        pool = message.get("pool")
        if self.user is None or (pool is not None and pool not in self.pools):
            return  # a push for a pool this socket has just left
        await self._deliver(message["frame"], replay=False, text=message.get("text"))

    async def membership_changed(self, message: dict[str, Any]) -> None:
        if self.user is not None:
            await self._sync_groups()

    async def token_revoked(self, message: dict[str, Any]) -> None:
        if self.user is not None and message.get("jti") in (None, self.jti):
            await self._refuse("token_revoked", "this access token was logged out", request_id=None)

    async def _deliver(self, frame: dict[str, Any], *, replay: bool, text: str | None = None) -> None:
        """Send a notification once per socket; `text` is the frame already encoded by the publisher."""
        seq = int(frame["seq"])
        if seq in self.delivered and not replay:
            return  # already sent by a replay, or pushed to two of this socket's groups
        if self.closed:
            return
        await self.send(text_data=text or json.dumps(frame))
        if seq not in self.delivered:
            self.delivered.add(seq)
            self.delivered_order.append(seq)
            if len(self.delivered_order) > _DELIVERED_MEMORY:
                self.delivered.discard(self.delivered_order.popleft())

    # --- helpers ----------------------------------------------------------------------------

    def _user(self) -> User:
        assert self.user is not None  # receive() refuses every other frame before authentication
        return self.user

    async def _send_error(self, code: str, message: str, *, request_id: Any,
                          details: dict[str, Any] | None = None) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if details:
            frame["details"] = details
        if request_id is not None:
            frame["request_id"] = request_id
        with contextlib.suppress(Exception):  # the peer may already be gone
            await self.send_json(frame)

