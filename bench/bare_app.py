"""The baseline: a bare ASGI app served by the same server software (uvicorn) as poolhub.

HTTP: any request body is read in full and discarded; the answer is a small JSON document, so
the client does the same work as against poolhub. `POST /broadcast` sends its body, as one text
frame, to every websocket connected at `/ws/`; the answer says how many were sent.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_sockets: set[Send] = set()


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> tuple[int, bytes]:
    """Read the whole body, keeping only what a broadcast needs (small bodies); count the rest."""
    size = 0
    kept = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if len(kept) < 65536:
            kept += chunk[: 65536 - len(kept)]
        if not message.get("more_body"):
            break
    return size, bytes(kept)


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    size, kept = await _read_body(receive)
    if scope["method"] == "POST" and scope["path"] == "/broadcast":
        text = kept.decode()
        sent = 0
        for socket_send in list(_sockets):
            with contextlib.suppress(Exception):  # a socket closing mid-broadcast is not an error
                await socket_send({"type": "websocket.send", "text": text})
                sent += 1
        await _respond(send, 200, {"sent": sent})
        return
    if scope["path"] == "/healthz":
        await _respond(send, 200, {"status": "ok", "sockets": len(_sockets)})
        return
    await _respond(send, 202, {"received": size})


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    _sockets.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        _sockets.discard(send)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
