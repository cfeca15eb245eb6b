"""POST /pools/{pool}/members/provision and the Django admin action that downloads a CSV."""

from __future__ import annotations

import csv
import io
import logging
from typing import Any

import pytest
from django.contrib.auth import authenticate

from accounts.models import Membership, Pool, Role, User
from tests.conftest import PASSWORD, error_code

pytestmark = pytest.mark.django_db


def provision(client: Any, pool: Pool, body: dict[str, Any], key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/api/v1/pools/{pool.id}/members/provision", body, format="json", headers=headers)


def test_a_thousand_accounts_in_one_call_can_all_log_in(api, pool, manager, caplog):
    caplog.set_level(logging.DEBUG)
    response = provision(api(manager), pool, {"count": 1000, "prefix": "station-", "role": "contributor"})

    assert response.status_code == 201, response.json()
    assert response["Cache-Control"] == "no-store"
    members = response.json()["members"]
    assert len(members) == 1000
    assert len({m["username"] for m in members}) == 1000
    assert {m["role"] for m in members} == {"contributor"}
    assert Membership.objects.filter(pool=pool, role=Role.CONTRIBUTOR, user__username__startswith="station-").count() \
        == 1000
    for member in members:
        assert authenticate(username=member["username"], password=member["password"]) is not None
    for member in members[::250]:  # and through the login endpoint
        login = api(None).post("/api/v1/auth/login", {"username": member["username"],
                                                      "password": member["password"]}, format="json")
        assert login.status_code == 200
    stored = set(User.objects.filter(username__startswith="station-").values_list("password", flat=True))
    logged = caplog.text
    for member in members:
        assert member["password"] not in logged
        assert not any(member["password"] in hashed for hashed in stored)


def test_same_idempotency_key_returns_the_same_accounts_and_creates_nothing(api, pool, manager):
    body = {"count": 3, "prefix": "dev-", "role": "listener"}
    first = provision(api(manager), pool, body, key="provision-1")
    users = User.objects.count()

    again = provision(api(manager), pool, body, key="provision-1")

    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()  # a client that lost the first response gets its credentials
    assert User.objects.count() == users
    other = provision(api(manager), pool, {**body, "count": 4}, key="provision-1")
    assert other.status_code == 409
    assert error_code(other) == "idempotency_conflict"
    assert User.objects.count() == users
    fresh = provision(api(manager), pool, body, key="provision-2")
    assert {m["username"] for m in fresh.json()["members"]} == {"dev-00004", "dev-00005", "dev-00006"}


def test_the_replay_record_does_not_hold_the_passwords_in_clear(api, pool, manager):
    from poolhub.redis import redis_client

    response = provision(api(manager), pool, {"count": 2}, key="k")
    client = redis_client()
    stored = "".join(str(client.get(key) or "") for key in client.scan_iter(match="poolhub:idempotency:*"))
    assert stored
    for member in response.json()["members"]:
        assert member["password"] not in stored
        assert member["username"] not in stored


@pytest.mark.parametrize("persona", ["contributor", "listener", "exporter"])
def test_refused_for_members_who_are_not_managers(request, api, pool, persona):
    user = request.getfixturevalue(persona)
    users = User.objects.count()

    response = provision(api(user), pool, {"count": 2})

    assert response.status_code == 403
    assert error_code(response) == "forbidden"
    assert User.objects.count() == users


def test_outsiders_get_not_found_and_admins_may(api, pool, outsider, admin_user):
    assert provision(api(outsider), pool, {"count": 1}).status_code == 404
    assert provision(api(None), pool, {"count": 1}).status_code == 401
    response = provision(api(admin_user), pool, {"count": 1, "role": "exporter"})
    assert response.status_code == 201
    assert Membership.objects.get(pool=pool, user__username=response.json()["members"][0]["username"]).role \
        == Role.EXPORTER


@pytest.mark.parametrize("body", [{"count": 0}, {"count": 1001}, {}, {"count": 2, "prefix": "bad prefix"},
                                  {"count": 2, "role": "owner"}],
                         ids=["zero", "too-many", "missing", "prefix", "role"])
def test_bad_requests_create_nothing(api, pool, manager, body):
    users = User.objects.count()
    response = provision(api(manager), pool, body)
    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert User.objects.count() == users


def test_a_member_named_provision_can_still_be_managed(api, pool, manager):
    user = User.objects.create_user(username="provision", password=PASSWORD)
    Membership.objects.create(pool=pool, user=user, role=Role.CONTRIBUTOR)
    client = api(manager)
    assert client.patch(f"/api/v1/pools/{pool.id}/members/provision", {"role": "listener"},
                        format="json").status_code == 200
    assert client.delete(f"/api/v1/pools/{pool.id}/members/provision").status_code == 204
    assert not Membership.objects.filter(pool=pool, user=user).exists()


def test_admin_action_downloads_the_credentials_as_csv(client, pool, admin_user):
    admin_user.is_staff = True
    admin_user.is_superuser = True
    admin_user.save()
    client.force_login(admin_user)
    url = "/admin/accounts/pool/"
    form = client.post(url, {"action": "provision_members", "_selected_action": [str(pool.id)]})
    assert form.status_code == 200
    assert b"Provision and download" in form.content

    response = client.post(url, {"action": "provision_members", "_selected_action": [str(pool.id)], "apply": "1",
                                 "count": "5", "name_prefix": "kiosk-", "role": "listener"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    assert response.content.decode().splitlines()[0] == "username,password,role,pool,url"  # as `poolhub provision`
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [row["username"] for row in rows] == [f"kiosk-0000{i}" for i in range(1, 6)]
    for row in rows:
        assert (row["role"], row["pool"], row["url"]) == ("listener", str(pool.id), "http://testserver")
        assert authenticate(username=row["username"], password=row["password"]) is not None
