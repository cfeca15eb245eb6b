"""ASGI entry point: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "poolhub.settings")
django.setup(set_prefix=False)

from uploads.api.hotpath import UploadHotPath  # noqa: E402

django_asgi_app = UploadHotPath()  # Django's ASGI handler; upload POSTs take one hop to a kept thread

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from notifications.routing import websocket_urlpatterns  # noqa: E402
from poolhub.logs import RequestContext  # noqa: E402
from poolhub.origins import TokenClientOriginValidator  # noqa: E402
from uploads.asgi import BodyLimit  # noqa: E402

application = RequestContext(ProtocolTypeRouter(  # request ids in logs and responses, open sockets counted
    {
        "http": BodyLimit(django_asgi_app),  # 413 before any oversized body is read, on every endpoint
        "websocket": TokenClientOriginValidator(URLRouter(websocket_urlpatterns)),
    }
))
