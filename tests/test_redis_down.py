"""Redis down under the REST API: the contract's 503 `unavailable` with Retry-After, never a 500.

Login, signup and refresh read their throttles from Redis before anything else; with Redis gone
they answered 500 `server_error`, which tells a client to give up instead of retrying.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from accounts.models import User
from poolhub.throttling import process_cache
from tests.conftest import error_code


@pytest.mark.parametrize("failure", [RedisConnectionError, RedisTimeoutError])
@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/auth/login", {"username": "station-1", "password": "a-long-and-unusual-passphrase"}),
    ("/api/v1/auth/signup", {"username": "station-2", "password": "a-long-and-unusual-passphrase"}),
])
def test_auth_with_redis_down_is_503_unavailable(db: Any, api: Any, monkeypatch: pytest.MonkeyPatch,
                                                 failure: type[Exception], path: str, body: dict[str, str]) -> None:
    def down(*args: Any, **kwargs: Any) -> NoReturn:
        raise failure("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(process_cache, "get", down)
    users_before = User.objects.count()
    response = api(None).post(path, body, format="json")
    assert response.status_code == 503, response.content
    assert error_code(response) == "unavailable"
    assert int(response["Retry-After"]) > 0
    assert User.objects.count() == users_before


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failure", [RedisConnectionError, RedisTimeoutError])
async def test_websocket_with_redis_down_is_refused_with_try_again(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   failure: type[Exception]) -> None:
    """The socket's channel subscribes in Redis first: with Redis gone the handshake was a 500."""
    from channels.layers import channel_layers
    from channels.testing import WebsocketCommunicator

    from notifications.layer import _BoundedLoopLayer
    from poolhub.asgi import application

    async def down(*args: Any, **kwargs: Any) -> NoReturn:
        raise failure("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    channel_layers.backends = {}  # a layer object of this test's own event loop
    monkeypatch.setattr(logging.getLogger("notifications.consumers"), "handlers", [caplog.handler])
    monkeypatch.setattr(_BoundedLoopLayer, "_subscribe_to_channel", down)
    socket = WebsocketCommunicator(application, "/ws/", headers=[(b"origin", b"http://testserver")],
                                   subprotocols=["poolhub"])
    accepted, _ = await socket.connect(timeout=10)
    assert accepted
    assert await socket.receive_json_from(timeout=10) == {
        "type": "error", "code": "unavailable", "message": "the service is unavailable; try again later"}
    assert (await socket.receive_output(timeout=10)) == {"type": "websocket.close", "code": 1013}
    refusals = [r for r in caplog.records if "channel layer's Redis is unreachable" in r.getMessage()]
    assert refusals and all(r.levelname == "WARNING" and r.exc_info is None for r in refusals)


@pytest.mark.parametrize("failure", [RedisConnectionError, RedisTimeoutError])
def test_admin_login_with_redis_down_is_a_plain_503(db: Any, client: Any, monkeypatch: pytest.MonkeyPatch,
                                                    failure: type[Exception]) -> None:
    """The admin's login page reads the same failure counters: with Redis gone it was a 500."""
    def down(*args: Any, **kwargs: Any) -> NoReturn:
        raise failure("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    User.objects.create_superuser(username="root", password="a-long-and-unusual-passphrase")
    monkeypatch.setattr(process_cache, "get_many", down)
    response = client.post("/admin/login/", {"username": "root", "password": "a-long-and-unusual-passphrase"})
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert "try again later" in response.content.decode()
    assert int(response["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session
