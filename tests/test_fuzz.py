"""No input gives a 5xx: property-based requests (hypothesis) against every operation of the OpenAPI
schema, and against every websocket verb.

Each HTTP operation gets hostile path ids, query strings (huge numbers, `1e30`, negative,
year-1 timestamps, malformed ids) and bodies (deeply nested JSON, wrong types, odd strings),
anonymous or as an admin, a manager or a contributor. Whatever the answer, it is never 5xx.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from accounts.models import Pool, User
from accounts.tokens import token_pair_issue
from poolhub.filestore import Bucket, mongo_db
from tests.batching.conftest import T0, stored_upload
from tests.notifications.conftest import connected

HOSTILE_TEXT = ["1e30", "-1", "99999999999999999999999", "", "null", "0", "x", "%00", "\x00", "🙂" * 3,
                "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "[" * 3000, "true", "NaN",
                "00000000-0000-0000-0000-000000000000", "../../etc/passwd", "a" * 5000]
text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40))
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), text)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(path, method.upper(), operation) for path, item in sorted(schema["paths"].items())
            for method, operation in sorted(item.items()) if method in {"get", "post", "put", "patch", "delete"}]


OPERATIONS = _operations()


def _body_fields(operation: dict[str, Any]) -> list[str]:
    content = (operation.get("requestBody") or {}).get("content") or {}
    fields: set[str] = set()
    for media in content.values():
        ref = (media.get("schema") or {}).get("$ref", "")
        fields.update(_COMPONENT_FIELDS.get(ref.rsplit("/", 1)[-1], []))
    return sorted(fields) or ["username", "password", "refresh", "name", "role", "timestamp"]


def _component_fields() -> dict[str, list[str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return {name: sorted((component.get("properties") or {}).keys())
            for name, component in schema.get("components", {}).get("schemas", {}).items()}


_COMPONENT_FIELDS = _component_fields()


@pytest.fixture
def world(db: Any, pool: Pool, manager: User, contributor: User, exporter: User,
          admin_user: User) -> Iterator[dict[str, Any]]:
    upload = stored_upload(pool=pool, uploader=contributor, timestamp=T0, data=b"some bytes")
    tokens = [None, *(token_pair_issue(user=user)["access"] for user in [admin_user, manager, contributor, exporter])]
    yield {"ids": [str(pool.id), str(upload.id), str(upload.group_id), str(uuid.uuid4()), "x", "0", "manager"],
           "tokens": tokens}
    store = mongo_db()  # later test directories count what the file store holds
    for bucket in Bucket:
        store[f"{bucket}.files"].delete_many({})
        store[f"{bucket}.chunks"].delete_many({})


def _client(token: str | None) -> APIClient:
    client = APIClient(REMOTE_ADDR="198.51.100.20")
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS, ids=[f"{m} {p}" for p, m, _ in OPERATIONS])
def test_no_input_gives_a_server_error(world: dict[str, Any], path: str, method: str,
                                       operation: dict[str, Any]) -> None:
    names = sorted({p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
                   | {"limit", "offset", "pool", "status"})
    fields = _body_fields(operation)

    @settings(max_examples=8, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        url = path
        for segment in [s for s in path.split("/") if s.startswith("{")]:
            url = url.replace(segment, data.draw(st.sampled_from(world["ids"]) | text.filter(
                lambda t: t and "/" not in t and "?" not in t and "#" not in t and "%" not in t)), 1)
        query = data.draw(st.dictionaries(st.sampled_from(names), text, max_size=3))
        body = data.draw(st.one_of(json_values, st.fixed_dictionaries({}, optional={f: json_values for f in fields})))
        client = _client(data.draw(st.sampled_from(world["tokens"])))
        if method == "GET" or method == "DELETE":
            response = client.generic(method, url, QUERY_STRING=urlencode(query))
        else:
            raw = data.draw(st.sampled_from(["json", "deep", "text"]))
            payload = {"json": json.dumps(body), "deep": "[" * 3000 + "]" * 3000, "text": "not json {"}[raw]
            response = client.generic(method, url, payload, content_type="application/json")
        assert response.status_code < 500, (method, url, query, response.status_code, response.content[:500])

    check()


# --- websocket verbs ---------------------------------------------------------------------------------------

VERBS = ["connect", "start-transfer", "write-chunk", "complete-upload", "abort-transfer", "get-history", "alive",
         "resume"]
FRAME_FIELDS = ["pool", "filename", "size", "timestamp", "sha256", "transfer_id", "offset", "data", "after",
                "access_token", "request_id"]


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("frame", [
    {"type": "get-history", "pool": "not-a-uuid"},
    {"type": "get-history", "pool": {"nested": [1]}},
    {"type": "get-history", "pool": 12},
    {"type": "start-transfer", "pool": "{pool}", "filename": "a.bin", "size": 10,
     "timestamp": "0001-01-01T00:00:00+01:00"},
    {"type": "start-transfer", "pool": "{pool}", "filename": "a.bin", "size": 10 ** 30, "timestamp": "{now}"},
    {"type": "start-transfer", "pool": "{pool}", "filename": ["a"], "size": "ten", "timestamp": 5},
    {"type": "write-chunk", "transfer_id": "x", "offset": -1, "data": "!!!"},
    {"type": "complete-upload", "transfer_id": {"a": 1}},
    {"type": "resume", "after": 10 ** 30},
])
async def test_socket_verbs_answer_bad_input_with_the_contracts_errors(pool, contributor, frame):
    from datetime import UTC, datetime

    socket = await connected(contributor)
    filled = {key: (value.replace("{pool}", str(pool.id)).replace("{now}", datetime.now(UTC).isoformat())
                    if isinstance(value, str) else value) for key, value in frame.items()}
    reply = await socket.ask({**filled, "request_id": "fuzz"})
    assert reply.get("code") != "server_error", reply
    assert "closed" not in reply, reply
    assert (await socket.ask({"type": "alive"}))["type"] == "alive"
    await socket.close()


@pytest.mark.anyio
@pytest.mark.django_db(transaction=True)
async def test_random_socket_frames_never_give_a_server_error(pool, contributor):
    """Frames of every verb with fields drawn from hostile values (seeded: the same run each time)."""
    rng = random.Random(11)
    values: list[Any] = [*HOSTILE_TEXT, None, True, -1, 2**70, 1.5, [], {}, {"a": [1]}, str(pool.id)]
    socket = await connected(contributor)
    for _ in range(80):
        frame = {"type": rng.choice([verb for verb in VERBS if verb != "connect"])}  # re-auth with junk closes
        frame.update({field: rng.choice(values) for field in rng.sample(FRAME_FIELDS, rng.randint(0, 5))
                      if field != "access_token"})
        reply = await socket.ask(frame)
        assert reply.get("code") != "server_error", (frame, reply)
        assert "closed" not in reply, (frame, reply)
    await socket.close()
