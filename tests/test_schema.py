"""The OpenAPI schema matches what the server accepts: a client generated from it would be right.

A schema-driven client (schemathesis) generates requests for every documented operation from the
schema at /api/v1/schema/ and sends them to a live server, as the caller the operation is for, on
objects that exist. A request that follows the documented shapes may still be refused for a state
reason (409, 404 after a delete, 401 after logout), but not for its shape: if most of an
operation's requests get 400/413/415/422, the schema describes a request the server does not take,
and the test fails. Any 5xx fails it too.

Constraints that JSON Schema cannot state and the schema gives in its descriptions are applied to
each generated request before it is sent (`follow_descriptions`): a declared sha256 matches the
bytes, a timestamp is neither ahead of the server's clock nor older than the pool accepts, each
batch manifest item names a file field of the same form.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.case import Case

from accounts.models import LatePolicy, Membership, Pool, Role, User
from accounts.tokens import token_pair_issue
from tests.conftest import make_user
from tests.live import wait_for

pytestmark = pytest.mark.e2e

EXAMPLES = 15
SHAPE_REFUSALS = {400, 413, 415, 422}
# The role each operation is for (path parameters are filled with objects that role can act on).
ROLE_FOR = {
    "POST /api/v1/pools": "admin",
    "PATCH /api/v1/pools/{pool_id}": "manager",
    "POST /api/v1/pools/{pool_id}/members": "manager",
    "PATCH /api/v1/pools/{pool_id}/members/{username}": "manager",
    "DELETE /api/v1/pools/{pool_id}/members/{username}": "manager",
    "POST /api/v1/pools/{pool_id}/members/provision": "manager",
    "GET /api/v1/pools/{pool_id}/usage": "manager",
    "POST /api/v1/pools/{pool_id}/webhook/test": "manager",
    "POST /api/v1/groups/{group_id}/close": "manager",
    "POST /api/v1/groups/{group_id}/claim": "exporter",
    "GET /api/v1/groups/{group_id}/archive": "exporter",
    "POST /api/v1/groups/{group_id}/result": "exporter",
}


def iso_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def recent(value: Any) -> Any:
    """A timestamp the pool accepts: not ahead of the server's clock, not older than the pool's
    max_timestamp_age_seconds (30 days by default)."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None or not timedelta(0) <= datetime.now(UTC) - parsed <= timedelta(days=29):
        return iso_now()
    return value


def follow_descriptions(case: Case) -> list[tuple[str, tuple[str, bytes]]]:
    """Apply the constraints the schema states in prose (see the module docstring); returns the
    file fields a batch's manifest names, to send beside the generated form."""
    body: Any = case.body
    files: list[tuple[str, tuple[str, bytes]]] = []
    if not isinstance(body, dict):
        return files
    if "timestamp" in body:
        body["timestamp"] = recent(body["timestamp"])
    content = getattr(body.get("file"), "data", body.get("file"))  # schemathesis wraps bytes in Binary
    if isinstance(content, bytes) and body.get("sha256"):
        body["sha256"] = hashlib.sha256(content).hexdigest()
    manifest = body.get("manifest")
    if isinstance(manifest, dict) and isinstance(manifest.get("items"), list):
        for index, item in enumerate(manifest["items"]):
            content = f"item {index} {item.get('timestamp')}".encode()
            item["file"] = f"file{index}"
            item["timestamp"] = recent(item.get("timestamp"))
            if item.get("sha256"):
                item["sha256"] = hashlib.sha256(content).hexdigest()
            files.append((item["file"], (f"{item['file']}.bin", content)))
    return files


def refused_for_state(response: requests.Response) -> bool:
    """A well-formed request refused for what the server holds, not for its shape: it names a user
    who does not exist (like a 404), or a wrong current password (like a 401)."""
    if response.status_code != 400:
        return False
    return '"code":"unknown_user"' in response.text or '"field":"current_password"' in response.text


def path_parameters(world: dict[str, Any], operation: Any) -> dict[str, Any]:
    pool: Pool = world["pools"][operation.label]
    known = {"pool_id": str(pool.id), "group_id": world["group"], "upload_id": world["upload"],
             "result_id": world["result"], "username": world["members"][operation.label]}
    return {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}


@pytest.fixture
def world(live_server_url: str, celery_worker: Any) -> dict[str, Any]:
    """An admin, and per operation its own pool (PATCH and DELETE may change it) with a manager,
    a contributor and an exporter; one upload stored, its group closed, claimed and answered."""
    schema = schemathesis.openapi.from_url(f"{live_server_url}/api/v1/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    admin = make_user("schema-admin", admin=True)
    users: dict[str, User] = {"admin": admin}
    for role in ("manager", "contributor", "exporter"):
        users[role] = make_user(f"schema-{role}")
    pools: dict[str, Pool] = {}
    members: dict[str, str] = {}
    for index, operation in enumerate(operations):
        pool = Pool.objects.create(name=f"schema-{index}", late_policy=LatePolicy.ACCEPT)
        for role in ("manager", "contributor", "exporter"):
            Membership.objects.create(pool=pool, user=users[role], role=Role(role))
        spare = make_user(f"schema-spare-{index}")
        Membership.objects.create(pool=pool, user=spare, role=Role.LISTENER)
        pools[operation.label], members[operation.label] = pool, spare.username
    base = f"{live_server_url}/api/v1"
    shared = pools[operations[0].label]

    def client(role: str) -> httpx.Client:
        token = token_pair_issue(user=users[role])["access"]
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    with client("contributor") as contributor, client("exporter") as exporter, client("manager") as manager:
        upload = contributor.post(f"/pools/{shared.id}/uploads", files={"file": ("a.bin", b"schema bytes")},
                                  data={"timestamp": iso_now()}).json()
        group = upload["group"]
        wait_for(lambda: contributor.get(f"/uploads/{upload['id']}").json()["status"] == "stored", timeout=60,
                 what="the upload stored")
        assert manager.post(f"/groups/{group}/close").status_code == 200
        lease = exporter.post(f"/groups/{group}/claim").json()["lease_id"]
        result = exporter.post(f"/groups/{group}/result", files={"file": ("r.bin", b"result")},
                               data={"lease_id": lease}).json()
    return {"base": base, "users": users, "pools": pools, "members": members, "operations": operations,
            "group": group, "upload": upload["id"], "result": result["id"]}


def exercise(world: dict[str, Any], operation: Any) -> tuple[Counter[int], list[str]]:
    """The statuses of generated requests, and why some were refused (for the failure message)."""
    role = ROLE_FOR.get(operation.label, "contributor")
    statuses: Counter[int] = Counter()
    reasons: list[str] = []
    strategy = operation.as_strategy(path_parameters=path_parameters(world, operation))

    @settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.generate], database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def send(case: Case) -> None:
        files = follow_descriptions(case)
        token = token_pair_issue(user=world["users"][role])["access"]
        request = case.as_transport_kwargs(base_url=world["base"].removesuffix("/api/v1"),
                                           headers={"Authorization": f"Bearer {token}"})
        if files:
            request["files"] = [*(request.get("files") or []), *files]
        response = requests.request(**request, timeout=60)
        statuses[0 if refused_for_state(response) else response.status_code] += 1
        if response.status_code >= 500 or (response.status_code in SHAPE_REFUSALS and not refused_for_state(response)):
            reasons.append(f"{response.status_code} {response.text[:200]} for {str(case.body)[:300]}")

    send()
    return statuses, reasons[:3]


def test_every_documented_operation_accepts_its_documented_shapes(world: dict[str, Any]) -> None:
    report: dict[str, dict[int, int]] = {}
    why: dict[str, list[str]] = {}
    for operation in world["operations"]:
        statuses, why[operation.label] = exercise(world, operation)
        report[operation.label] = dict(statuses)
    server_errors = {label: counts for label, counts in report.items() if any(code >= 500 for code in counts)}
    refused = {label: counts for label, counts in report.items()
               if sum(n for code, n in counts.items() if code in SHAPE_REFUSALS) * 2 > sum(counts.values())}
    assert len(report) >= 25, report
    if server_errors or refused:
        pytest.fail(json.dumps({"5xx": {label: (counts, why[label]) for label, counts in server_errors.items()},
                                "refused": {label: (counts, why[label]) for label, counts in refused.items()}},
                               indent=1))
