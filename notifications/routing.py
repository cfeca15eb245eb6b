from __future__ import annotations

from typing import Any

from django.urls import path

from notifications.consumers import GatewayConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/", GatewayConsumer.as_asgi()),
]
