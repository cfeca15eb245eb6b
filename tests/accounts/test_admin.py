"""IAM at scale: the admin's bulk "add many members" page and the provision_clients command."""

from __future__ import annotations

import csv
import logging
import stat
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Membership, Pool, Role, User
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client() -> Client:
    admin = User.objects.create_superuser(username="boss", password="a-long-and-unusual-passphrase-41")
    client = Client()
    client.force_login(admin)
    return client


def test_admin_lists_users_pools_and_memberships(staff_client: Client, pool: Pool, manager: User) -> None:
    for page in ["/admin/accounts/user/", "/admin/accounts/pool/", "/admin/accounts/membership/",
                 f"/admin/accounts/pool/{pool.id}/change/"]:
        response = staff_client.get(page)
        assert response.status_code == 200, page
    assert b"Add many members" in staff_client.get(f"/admin/accounts/pool/{pool.id}/change/").content


def test_bulk_add_members(staff_client: Client, pool: Pool, listener: User) -> None:
    for index in range(30):
        make_user(f"client-{index:02d}")
    names = "\n".join(f"client-{index:02d}" for index in range(30))

    response = staff_client.post(f"/admin/accounts/pool/{pool.id}/add-members/",
                                 {"usernames": f"{names}\nlistener, ghost-1 ghost-2", "role": "contributor"},
                                 follow=True)

    assert response.status_code == 200
    text = response.content.decode()
    assert "Added 30 member(s)" in text
    assert "ghost-1" in text and "ghost-2" in text
    roles = dict(Membership.objects.filter(pool=pool).values_list("user__username", "role"))
    assert all(roles[f"client-{index:02d}"] == "contributor" for index in range(30))
    assert roles["listener"] == "listener"  # an existing member keeps their role
    assert not User.objects.filter(username__startswith="ghost").exists()


def test_bulk_add_page_needs_staff(pool: Pool) -> None:
    user = make_user("station-1")
    client = Client()
    client.force_login(user)

    response = client.post(f"/admin/accounts/pool/{pool.id}/add-members/", {"usernames": "station-1",
                                                                           "role": "manager"})

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert not Membership.objects.filter(user=user).exists()


def test_bulk_add_form_shows_errors(staff_client: Client, pool: Pool) -> None:
    response = staff_client.post(f"/admin/accounts/pool/{pool.id}/add-members/", {"usernames": "", "role": "x"})

    assert response.status_code == 200
    assert b"This field is required" in response.content
    assert not Membership.objects.exists()


def read_credentials(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_provision_clients(pool: Pool, tmp_path: Path) -> None:
    out = tmp_path / "clients.csv"
    stdout = StringIO()

    call_command("provision_clients", "--pool", pool.name, "--count", "5", "--role", "listener",
                 "--out", str(out), stdout=stdout)

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    rows = read_credentials(out)
    assert len(rows) == 5
    assert len({row["username"] for row in rows}) == 5
    for row in rows:
        assert row["password"] not in stdout.getvalue()  # credentials go to the file, never to the log
        response = APIClient().post("/api/v1/auth/login", {"username": row["username"], "password": row["password"]},
                                    format="json")
        assert response.status_code == 200
        assert response.json()["user"]["role"] == "user"
        assert Membership.objects.get(pool=pool, user__username=row["username"]).role == Role.LISTENER
        assert row["pool"] == str(pool.id)
        assert row["role"] == "listener"
        assert row["url"] == ""


def test_provision_clients_writes_the_columns_of_poolhub_provision(pool: Pool, tmp_path: Path) -> None:
    """One credentials file format for devices, however the accounts were provisioned."""
    out = tmp_path / "clients.csv"
    call_command("provision_clients", "--pool", pool.name, "--count", "2", "--out", str(out),
                 "--url", "https://poolhub.example.org", stdout=StringIO())

    with out.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["username", "password", "role", "pool", "url"]
    rows = read_credentials(out)
    assert [(row["role"], row["pool"], row["url"]) for row in rows] == [
        ("contributor", str(pool.id), "https://poolhub.example.org")] * 2


def test_provision_clients_again_adds_new_accounts(pool: Pool, tmp_path: Path) -> None:
    call_command("provision_clients", "--pool", str(pool.id), "--count", "3", "--out", str(tmp_path / "a.csv"),
                 stdout=StringIO())
    call_command("provision_clients", "--pool", str(pool.id), "--count", "2", "--out", str(tmp_path / "b.csv"),
                 stdout=StringIO())

    first, second = read_credentials(tmp_path / "a.csv"), read_credentials(tmp_path / "b.csv")
    assert not {r["username"] for r in first} & {r["username"] for r in second}
    assert Membership.objects.filter(pool=pool, role=Role.CONTRIBUTOR).count() == 5


def test_provision_does_not_overwrite_an_existing_file(pool: Pool, tmp_path: Path) -> None:
    out = tmp_path / "clients.csv"
    out.write_text("earlier credentials")

    with pytest.raises(CommandError, match="exists"):
        call_command("provision_clients", "--pool", pool.name, "--count", "1", "--out", str(out), stdout=StringIO())

    assert out.read_text() == "earlier credentials"
    assert User.objects.count() == 0


def test_provision_overwrite_makes_an_old_world_readable_file_private(pool: Pool, tmp_path: Path) -> None:
    out = tmp_path / "clients.csv"
    out.write_text("old")
    out.chmod(0o644)

    call_command("provision_clients", "--pool", pool.name, "--count", "1", "--out", str(out), "--overwrite",
                 stdout=StringIO())

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert len(read_credentials(out)) == 1


@pytest.mark.parametrize("pool_arg", ["no-such-pool", "00000000-0000-0000-0000-000000000000"])
def test_provision_unknown_pool(pool: Pool, tmp_path: Path, pool_arg: str) -> None:
    with pytest.raises(CommandError):
        call_command("provision_clients", "--pool", pool_arg, "--count", "2", "--out", str(tmp_path / "c.csv"))

    assert not (tmp_path / "c.csv").exists()
    assert User.objects.count() == 0


def test_provision_zero_is_refused(pool: Pool, tmp_path: Path) -> None:
    with pytest.raises(CommandError):
        call_command("provision_clients", "--pool", pool.name, "--count", "0", "--out", str(tmp_path / "c.csv"))

    assert User.objects.count() == 0


def test_provision_unwritable_file_creates_no_accounts(pool: Pool, tmp_path: Path) -> None:
    with pytest.raises(CommandError):
        call_command("provision_clients", "--pool", pool.name, "--count", "2",
                     "--out", str(tmp_path / "missing-dir" / "c.csv"), stdout=StringIO())

    assert User.objects.count() == 0


def test_provisioned_passwords_work_with_the_production_hasher(pool: Pool, tmp_path: Path, settings: Any) -> None:
    """Generated secrets keep their one-iteration hash (accounts/hashers.py says why); a password
    the account chooses later gets the production hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "accounts.hashers.GeneratedSecretHasher"]
    out = tmp_path / "clients.csv"
    call_command("provision_clients", "--pool", pool.name, "--count", "3", "--out", str(out), stdout=StringIO())
    row = read_credentials(out)[0]

    assert login_status(row["username"], row["password"]) == 200
    assert login_status(row["username"], row["password"]) == 200
    assert login_status(row["username"], row["password"] + "x") == 401
    user = User.objects.get(username=row["username"])
    assert user.password.startswith("generated_pbkdf2_sha256$1$")
    assert row["password"] not in user.password

    user.set_password("a-password-someone-chose")
    user.save()
    assert user.password.startswith("pbkdf2_sha256$")
    assert int(user.password.split("$")[1]) == PBKDF2PasswordHasher.iterations
    assert login_status(row["username"], "a-password-someone-chose") == 200
    assert login_status(row["username"], row["password"]) == 401


def test_provision_does_not_reuse_a_username_in_another_case(pool: Pool, tmp_path: Path) -> None:
    make_user("CLIENT-00001")

    call_command("provision_clients", "--pool", pool.name, "--count", "1", "--out", str(tmp_path / "c.csv"),
                 stdout=StringIO())

    assert read_credentials(tmp_path / "c.csv")[0]["username"] == "client-00002"


def login_status(username: str, password: str) -> int:
    response = APIClient().post("/api/v1/auth/login", {"username": username, "password": password}, format="json")
    return int(response.status_code)


def test_ensure_admin_generates_a_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POOLHUB_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("POOLHUB_ADMIN_PASSWORD", raising=False)
    first, second = StringIO(), StringIO()

    call_command("ensure_admin", stdout=first)
    call_command("ensure_admin", stdout=second)

    password = first.getvalue().split("password ")[1].split("'")[1]
    assert login_status("admin", password) == 200
    assert password not in second.getvalue()
    admin = User.objects.get(username="admin")
    assert (admin.role, admin.is_staff, admin.is_superuser) == ("admin", True, True)
    assert User.objects.count() == 1


def test_ensure_admin_takes_the_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOLHUB_ADMIN_USERNAME", "root")
    monkeypatch.setenv("POOLHUB_ADMIN_PASSWORD", "first-long-password-1")
    call_command("ensure_admin", stdout=StringIO())
    monkeypatch.setenv("POOLHUB_ADMIN_PASSWORD", "second-long-password-2")

    out = StringIO()
    call_command("ensure_admin", stdout=out)

    assert "second-long-password-2" not in out.getvalue()
    assert login_status("root", "second-long-password-2") == 200
    assert login_status("root", "first-long-password-1") == 401


def test_ensure_admin_with_json_logs_puts_the_password_in_a_private_file(
        monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """JSON logs are collected and kept: the generated password is never in them nor on stdout."""
    monkeypatch.delenv("POOLHUB_ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("POOLHUB_ADMIN_PASSWORD", raising=False)
    settings.LOG_FORMAT, settings.VAR_DIR = "json", tmp_path
    monkeypatch.setattr(logging.getLogger("accounts.management.commands.ensure_admin"), "handlers", [caplog.handler])
    out = StringIO()

    call_command("ensure_admin", stdout=out)

    path = tmp_path / "admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert login_status("admin", password) == 200
    assert out.getvalue() == ""
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert str(path) in logged
    assert password not in logged
