"""The Django admin as an operator meets it: names they use, sizes they read, lists they can narrow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib import admin
from django.test import Client

from accounts.models import Pool, User
from batching.models import Group
from uploads.models import Upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def console() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(username="operator", password="a-long-and-unusual-phrase-7"))
    return client


def test_the_sidebar_names_what_an_operator_works_with(console: Client) -> None:
    page = console.get("/admin/").content.decode()
    assert "poolhub console" in page
    assert "Rounds" in page and "Webhook deliveries" in page
    assert "Webhook deliverys" not in page
    assert "/admin/auth/group/" not in page  # Django's permission groups are unused
    assert console.get("/admin/auth/group/").status_code == 404


def test_sizes_read_as_sizes(console: Client, pool: Pool, contributor: User) -> None:
    at = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    group = Group.objects.create(pool=pool, window_start=at, window_end=at.replace(hour=11))
    Upload.objects.create(pool=pool, uploader=contributor, filename="reading.bin", size=3 * 1024 * 1024,
                          sha256="0" * 64, content_type="application/octet-stream", timestamp=at, group=group)
    assert "3.0\xa0MB" in console.get("/admin/uploads/upload/").content.decode()
    assert "3.0\xa0MB" in console.get("/admin/batching/group/").content.decode()


def test_every_list_can_be_searched_and_filtered() -> None:
    operator_lists = [model_admin for model, model_admin in admin.site._registry.items()
                      if model._meta.app_label in {"accounts", "uploads", "batching"}]
    assert len(operator_lists) >= 8
    for model_admin in operator_lists:
        assert model_admin.search_fields, type(model_admin).__name__
        assert model_admin.list_filter, type(model_admin).__name__


def test_every_list_page_opens_and_searches(console: Client, pool: Pool) -> None:
    for app, model in [("accounts", "user"), ("accounts", "pool"), ("accounts", "membership"), ("uploads", "upload"),
                       ("uploads", "event"), ("batching", "group"), ("batching", "lease"), ("batching", "result"),
                       ("batching", "webhookdelivery")]:
        assert console.get(f"/admin/{app}/{model}/?q=weather").status_code == 200, model
