"""The IAM matrix: every persona against every pool endpoint of docs/api.md.

Non-members get 404 `not_found` (a pool they are not in looks exactly like one that does not
exist); members without the role get 403 `forbidden`; a refused request changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, Pool, Role, User
from tests.conftest import error_code, make_user

pytestmark = pytest.mark.django_db

PERSONAS = ["admin_user", "manager", "contributor", "listener", "exporter", "outsider"]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # {pool} and {member} are filled in
    body: dict[str, Any] | None
    allowed: frozenset[str]
    success: int
    pool_scoped: bool = True


MEMBERS = frozenset(PERSONAS) - {"outsider"}
MANAGERS = frozenset({"admin_user", "manager"})

ENDPOINTS = {
    "create pool": Endpoint("post", "/pools", {"name": "new-pool"}, frozenset({"admin_user"}), 201, pool_scoped=False),
    "list pools": Endpoint("get", "/pools", None, frozenset(PERSONAS), 200, pool_scoped=False),
    "get pool": Endpoint("get", "/pools/{pool}", None, MEMBERS, 200),
    "patch pool": Endpoint("patch", "/pools/{pool}", {"grace_seconds": 120}, MANAGERS, 200),
    "list members": Endpoint("get", "/pools/{pool}/members", None, MEMBERS, 200),
    "add member": Endpoint("post", "/pools/{pool}/members", {"username": "newcomer", "role": "listener"}, MANAGERS,
                           201),
    "change member role": Endpoint("patch", "/pools/{pool}/members/{member}", {"role": "listener"}, MANAGERS, 200),
    "remove member": Endpoint("delete", "/pools/{pool}/members/{member}", None, MANAGERS, 204),
}


@pytest.fixture
def everyone(request: pytest.FixtureRequest, pool: Pool) -> dict[str, User]:
    people = {name: request.getfixturevalue(name) for name in PERSONAS}
    make_user("newcomer")
    victim = make_user("victim")
    Membership.objects.create(pool=pool, user=victim, role=Role.CONTRIBUTOR)
    return people


def snapshot(pool: Pool) -> tuple[Any, ...]:
    fresh = Pool.objects.get(id=pool.id)
    members = sorted(Membership.objects.filter(pool=pool).values_list("user__username", "role"))
    return (fresh.name, fresh.grace_seconds, fresh.window_seconds, tuple(members), Pool.objects.count())


def call(client: APIClient, endpoint: Endpoint, pool_id: Any) -> Any:
    path = "/api/v1" + endpoint.path.format(pool=pool_id, member="victim")
    send: Callable[..., Any] = getattr(client, endpoint.method)
    return send(path, endpoint.body, format="json") if endpoint.body is not None else send(path)


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_iam_matrix(api: Callable[[User], APIClient], everyone: dict[str, User], pool: Pool, persona: str,
                    name: str) -> None:
    endpoint = ENDPOINTS[name]
    before = snapshot(pool)

    response = call(api(everyone[persona]), endpoint, pool.id)

    if persona in endpoint.allowed:
        assert response.status_code == endpoint.success, response.content
        return
    expected = (404, "not_found") if persona == "outsider" and endpoint.pool_scoped else (403, "forbidden")
    assert (response.status_code, error_code(response)) == expected
    assert snapshot(pool) == before


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("name", [n for n, e in ENDPOINTS.items() if e.pool_scoped])
def test_unknown_pool_is_not_found_for_everyone(api: Callable[[User], APIClient], everyone: dict[str, User],
                                                persona: str, name: str) -> None:
    response = call(api(everyone[persona]), ENDPOINTS[name], uuid.uuid4())

    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_anonymous_gets_401_everywhere(everyone: dict[str, User], pool: Pool) -> None:
    for endpoint in ENDPOINTS.values():
        response = call(APIClient(), endpoint, pool.id)
        assert response.status_code == 401
        assert error_code(response) == "not_authenticated"


def test_outsider_cannot_tell_a_real_pool_from_a_missing_one(api: Callable[[User], APIClient],
                                                              everyone: dict[str, User], pool: Pool) -> None:
    client = api(everyone["outsider"])

    real = client.get(f"/api/v1/pools/{pool.id}")
    missing = client.get(f"/api/v1/pools/{uuid.uuid4()}")

    assert real.status_code == missing.status_code == 404
    assert real.json() == missing.json()


@pytest.mark.parametrize(
    ("persona", "visible"),
    [("admin_user", {"weather-stations", "other-pool"}), ("manager", {"weather-stations"}),
     ("listener", {"weather-stations"}), ("outsider", {"other-pool"})],
)
def test_pool_list_shows_only_the_callers_pools(api: Callable[[User], APIClient], everyone: dict[str, User],
                                                persona: str, visible: set[str]) -> None:
    response = api(everyone[persona]).get("/api/v1/pools")

    assert {p["name"] for p in response.json()} == visible


def test_pool_has_the_contract_fields(api: Callable[[User], APIClient], everyone: dict[str, User],
                                      pool: Pool) -> None:
    body = api(everyone["listener"]).get(f"/api/v1/pools/{pool.id}").json()

    assert {"id", "name", "window_seconds", "grace_seconds", "max_file_bytes", "allowed_types", "late_policy",
            "created_at"} <= set(body)
    assert body["id"] == str(pool.id)
    assert "webhook_secret" not in body


def test_admin_creates_a_pool(api: Callable[[User], APIClient], admin_user: User) -> None:
    body = {"name": "sensors", "window_seconds": 600, "grace_seconds": 30, "allowed_types": ["application/json"],
            "late_policy": "next"}

    response = api(admin_user).post("/api/v1/pools", body, format="json")

    assert response.status_code == 201
    created = response.json()
    assert {k: created[k] for k in body} == body
    assert Pool.objects.get(id=created["id"]).window_seconds == 600


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "name"), ({"name": "x", "window_seconds": 59}, "window_seconds"),
     ({"name": "x", "window_seconds": 30 * 86400 + 1}, "window_seconds"), ({"name": "x", "late_policy": "drop"},
                                                                            "late_policy"),
     ({"name": "x", "max_file_bytes": 0}, "max_file_bytes"), ({"name": "x", "grace_seconds": -1}, "grace_seconds")],
)
def test_invalid_pool_is_refused_and_not_created(api: Callable[[User], APIClient], admin_user: User,
                                                 body: dict[str, Any], field: str) -> None:
    response = api(admin_user).post("/api/v1/pools", body, format="json")

    assert response.status_code == 400
    assert error_code(response) == "invalid"
    details = response.json()["error"]["details"]
    assert field in details["fields"]
    assert details["field"] == field
    assert not Pool.objects.exists()


def test_duplicate_pool_name_is_a_conflict(api: Callable[[User], APIClient], admin_user: User, pool: Pool) -> None:
    response = api(admin_user).post("/api/v1/pools", {"name": pool.name}, format="json")

    assert response.status_code in {400, 409}
    assert error_code(response) in {"invalid", "conflict"}
    assert Pool.objects.count() == 1


def test_manager_patches_the_pool(api: Callable[[User], APIClient], manager: User, pool: Pool) -> None:
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"window_seconds": 7200}, format="json")

    assert response.status_code == 200
    assert response.json()["window_seconds"] == 7200
    assert Pool.objects.get(id=pool.id).window_seconds == 7200


def test_invalid_patch_changes_nothing(api: Callable[[User], APIClient], manager: User, pool: Pool) -> None:
    response = api(manager).patch(f"/api/v1/pools/{pool.id}", {"window_seconds": 1, "grace_seconds": 5},
                                  format="json")

    assert response.status_code == 400
    assert error_code(response) == "invalid"
    fresh = Pool.objects.get(id=pool.id)
    assert (fresh.window_seconds, fresh.grace_seconds) == (3600, 60)


def test_members_list(api: Callable[[User], APIClient], everyone: dict[str, User], pool: Pool) -> None:
    response = api(everyone["listener"]).get(f"/api/v1/pools/{pool.id}/members")

    assert response.status_code == 200
    assert {"username": "exporter", "role": "exporter"} in response.json()
    assert all(set(m) == {"username", "role"} for m in response.json())
    assert "outsider" not in {m["username"] for m in response.json()}


def test_added_member_sees_the_pool(api: Callable[[User], APIClient], everyone: dict[str, User], pool: Pool) -> None:
    response = api(everyone["manager"]).post(f"/api/v1/pools/{pool.id}/members",
                                             {"username": "newcomer", "role": "contributor"}, format="json")

    assert response.status_code == 201
    assert response.json() == {"username": "newcomer", "role": "contributor"}
    newcomer = User.objects.get(username="newcomer")
    assert api(newcomer).get(f"/api/v1/pools/{pool.id}").status_code == 200


def test_removed_member_no_longer_sees_the_pool(api: Callable[[User], APIClient], everyone: dict[str, User],
                                               pool: Pool) -> None:
    response = api(everyone["manager"]).delete(f"/api/v1/pools/{pool.id}/members/listener")

    assert response.status_code == 204
    gone = api(everyone["listener"]).get(f"/api/v1/pools/{pool.id}")
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [({"username": "nobody", "role": "listener"}, 400, "unknown_user"),
     ({"username": "listener", "role": "manager"}, 409, "conflict"),
     ({"username": "newcomer", "role": "owner"}, 400, "invalid"),
     ({"role": "listener"}, 400, "invalid")],
)
def test_bad_member_add_changes_nothing(api: Callable[[User], APIClient], everyone: dict[str, User], pool: Pool,
                                        body: dict[str, Any], status: int, code: str) -> None:
    before = snapshot(pool)

    response = api(everyone["manager"]).post(f"/api/v1/pools/{pool.id}/members", body, format="json")

    assert (response.status_code, error_code(response)) == (status, code)
    assert snapshot(pool) == before


def test_removing_a_non_member_is_not_found(api: Callable[[User], APIClient], everyone: dict[str, User],
                                            pool: Pool) -> None:
    response = api(everyone["manager"]).delete(f"/api/v1/pools/{pool.id}/members/outsider")

    assert response.status_code == 404
    assert error_code(response) == "not_found"
    assert Membership.objects.filter(user=everyone["outsider"]).count() == 1


@pytest.mark.parametrize(("persona", "sees_webhook"), [("admin_user", True), ("manager", True),
                                                        ("contributor", False), ("listener", False),
                                                        ("exporter", False)])
def test_only_admins_and_managers_see_the_webhook_url(api: Callable[[User], APIClient], everyone: dict[str, User],
                                                      pool: Pool, persona: str, sees_webhook: bool) -> None:
    pool.webhook_url = "https://hooks.example.test/poolhub?key=receiver-credential"
    pool.save(update_fields=["webhook_url"])

    detail = api(everyone[persona]).get(f"/api/v1/pools/{pool.id}").json()
    listed = next(p for p in api(everyone[persona]).get("/api/v1/pools").json() if p["id"] == str(pool.id))

    for body in (detail, listed):
        assert ("webhook_url" in body) is sees_webhook
        assert "webhook_secret" not in body
