"""The SDK's authentication, pools and members calls against the live server, and its typed errors."""

from __future__ import annotations

import time

import pytest

from poolhub_client import AuthError, Conflict, Forbidden, NotFound, PoolhubClient, Tokens, ValidationError
from tests import live
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_signup_validate_logout_revokes_both_tokens(sdk):
    client = sdk()
    user = client.signup("new-station", "a-long-enough-passphrase")
    assert user["username"] == "new-station" and user["role"] == "user"
    assert client.validate()["user"]["username"] == "new-station"
    old = client.tokens
    client.logout()
    assert client.tokens is None

    stale = sdk(tokens=Tokens(access=old.access, refresh=old.refresh))
    with pytest.raises(AuthError) as refused:
        stale.validate()
    assert refused.value.status == 401
    assert refused.value.code in {"token_revoked", "invalid_token"}


def test_login_errors_are_typed_with_the_contract_code(sdk, contributor):
    with pytest.raises(AuthError) as wrong:
        sdk().login("contributor", "not-the-password")
    assert (wrong.value.status, wrong.value.code) == (401, "invalid_credentials")

    with pytest.raises(Conflict) as taken:
        sdk().signup("contributor", "another-long-passphrase")
    assert taken.value.code == "username_taken"

    with pytest.raises(ValidationError) as weak:
        sdk().signup("someone-new", "short")
    assert weak.value.status == 400 and "password" in weak.value.details["fields"]

    with pytest.raises(AuthError) as anonymous:
        sdk().list_pools()
    assert anonymous.value.code == "not_authenticated"


def test_pools_and_members_round_trip(sdk, admin_user, contributor):
    admin = sdk(admin_user)
    pool = admin.create_pool("sensors", window_seconds=600, grace_seconds=30)
    assert pool["name"] == "sensors" and pool["window_seconds"] == 600
    assert pool["id"] in {p["id"] for p in admin.list_pools()}
    assert admin.update_pool(pool["id"], grace_seconds=90)["grace_seconds"] == 90

    assert admin.add_member(pool["id"], "contributor", "contributor") == {"username": "contributor",
                                                                          "role": "contributor"}
    member = sdk(contributor)
    assert member.get_pool(pool["id"])["name"] == "sensors"
    assert {"username": "contributor", "role": "contributor"} in member.members(pool["id"])
    assert pool["id"] in {p["id"] for p in member.validate()["pools"]}

    admin.remove_member(pool["id"], "contributor")
    with pytest.raises(NotFound) as gone:
        member.get_pool(pool["id"])
    assert gone.value.code == "not_found"


def test_outsider_sees_nothing_and_members_without_the_role_are_forbidden(sdk, pool, contributor, outsider):
    with pytest.raises(NotFound):
        sdk(outsider).get_pool(str(pool.id))
    with pytest.raises(NotFound):
        sdk(outsider).members(str(pool.id))
    with pytest.raises(Forbidden) as forbidden:
        sdk(contributor).add_member(str(pool.id), "outsider", "listener")
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    with pytest.raises(Forbidden):
        sdk(contributor).create_pool("not-mine")

    with pytest.raises(Forbidden):
        sdk(contributor).update_pool(str(pool.id), grace_seconds=5)


def test_invalid_input_is_a_validation_error_naming_the_field(sdk, admin_user):
    with pytest.raises(ValidationError) as invalid:
        sdk(admin_user).create_pool("too-fast", window_seconds=5)
    assert (invalid.value.status, invalid.value.code) == (400, "invalid")
    assert "window_seconds" in invalid.value.details["fields"]


@pytest.fixture
def short_lived_server(transactional_db):
    process, url = live.start_web(live.child_env(JWT_ACCESS_SECONDS="2"))
    try:
        yield url
    finally:
        live.stop(process)


@pytest.mark.parametrize("refresh_early", [True, False], ids=["before-expiry", "after-401"])
def test_tokens_refresh_by_themselves_and_rotation_is_stored(short_lived_server, contributor, refresh_early):
    saved: list[Tokens | None] = []
    client = PoolhubClient(short_lived_server, on_tokens=saved.append, refresh_early=refresh_early)
    client.login("contributor", PASSWORD)
    first = client.tokens
    assert first is not None
    time.sleep(2.5)  # the access token is now expired

    assert client.validate()["user"]["username"] == "contributor"
    assert client.tokens is not None and client.tokens.refresh != first.refresh  # rotated, and the new one is kept
    assert len(saved) == 2 and saved[-1] is client.tokens  # the login, then the refresh, reached the store

    spent = PoolhubClient(short_lived_server, tokens=Tokens(access=first.access, refresh=first.refresh))
    with pytest.raises(AuthError) as refused:
        spent.refresh()
    assert refused.value.code in {"token_revoked", "invalid_token"}
    client.close()
    spent.close()
