"""Which websocket handshakes are let in, by their Origin header (docs/api.md "Websocket").

A browser always sends Origin; a page on another site must not open a socket with the visitor's
ambient credentials (cross-site websocket hijacking), so a present Origin must be one of ours
(`ALLOWED_HOSTS`) or allowed (`CSRF_TRUSTED_ORIGINS`). Devices, SDKs and other non-browser
clients send no Origin at all; poolhub authenticates sockets by token, never by cookie, so there
is nothing ambient to hijack and such a handshake is let in. Channels' own validator refuses a
missing Origin, which locked every non-browser client out; this one differs only there.
"""

from __future__ import annotations

from typing import Any

from channels.security.websocket import OriginValidator
from django.conf import settings


class TokenClientOriginValidator(OriginValidator):
    def __init__(self, application: Any) -> None:
        super().__init__(application, [*settings.ALLOWED_HOSTS, *settings.CSRF_TRUSTED_ORIGINS])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if not any(name == b"origin" for name, _ in scope.get("headers", [])):
            return await self.application(scope, receive, send)
        return await super().__call__(scope, receive, send)
