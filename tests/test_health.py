"""/healthz, /readyz (naming the dependency that fails), and the error shape of the API's edges."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from poolhub.embedded import free_port
from poolhub.filestore import mongo_client
from poolhub.redis import redis_client
from tests.conftest import error_code


@contextmanager
def pointed_at(setting: str, url: str) -> Iterator[None]:
    """Move one dependency's URL for the duration; the cached Redis and MongoDB clients follow it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, setting, url)
        redis_client.cache_clear()
        mongo_client.cache_clear()
        try:
            yield
        finally:
            mongo_client().close()
            redis_client.cache_clear()
            mongo_client.cache_clear()


def test_healthz_needs_nothing() -> None:
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_when_everything_answers() -> None:
    response = Client().get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "redis": "ok", "broker": "ok", "filestore": "ok"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("dependency", "setting"),
    [("filestore", "MONGO_URL"), ("redis", "REDIS_URL"), ("broker", "CELERY_BROKER_URL")],
)
def test_readyz_names_the_dependency_that_is_down(dependency: str, setting: str) -> None:
    dead = free_port()  # nothing listens there
    scheme = {"MONGO_URL": "mongodb", "REDIS_URL": "redis", "CELERY_BROKER_URL": "redis"}[setting]

    with pointed_at(setting, f"{scheme}://127.0.0.1:{dead}/0"):
        response = Client().get("/readyz")

    assert response.status_code == 503
    assert error_code(response) == "unavailable"
    error = response.json()["error"]
    assert dependency in error["message"]
    assert error["details"]["checks"][dependency].startswith("error")
    assert [name for name, state in error["details"]["checks"].items() if state != "ok"] == [dependency]
    assert int(response["Retry-After"]) > 0


# --- the API's edges: unknown paths, DRF's own errors, the schema -------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/pools/not-a-uuid", "/api/v2/pools", "/api/",
                                  "/api/v1/pools/"])
def test_unknown_api_paths_are_json_404(path: str) -> None:
    response = Client().get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert error_code(response) == "not_found"


def test_unknown_api_path_is_404_for_a_post_without_csrf_token() -> None:
    response = Client(enforce_csrf_checks=True).post("/api/v1/nope", {"a": 1}, content_type="application/json")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


@pytest.mark.django_db
def test_method_not_allowed_in_the_contract_shape(api: Any, listener: Any) -> None:
    response = api(listener).put("/api/v1/pools", {}, format="json")

    assert response.status_code == 405
    assert error_code(response) == "method_not_allowed"


@pytest.mark.django_db
def test_bad_json_in_the_contract_shape() -> None:
    response = APIClient().post("/api/v1/auth/login", b"{not json", content_type="application/json")

    assert response.status_code == 400
    assert error_code(response) == "invalid"


@pytest.mark.django_db
def test_unsupported_media_type_in_the_contract_shape() -> None:
    response = APIClient().post("/api/v1/auth/login", b"<xml/>", content_type="application/xml")

    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_the_api_does_not_render_html_errors() -> None:
    response = APIClient().get("/api/v1/auth/validate", HTTP_ACCEPT="text/html")

    assert response.status_code in {401, 406}
    assert error_code(response) in {"not_authenticated", "not_acceptable"}


@pytest.mark.django_db
def test_openapi_schema_describes_the_contract() -> None:
    response = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path in ["/api/v1/auth/signup", "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout",
                 "/api/v1/auth/validate", "/api/v1/pools", "/api/v1/pools/{pool_id}",
                 "/api/v1/pools/{pool_id}/members", "/api/v1/pools/{pool_id}/members/{username}"]:
        assert path in schema["paths"], path
    login = schema["paths"]["/api/v1/auth/login"]["post"]
    body = login["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][body]["required"]) == {"username", "password"}
    assert {"200", "401", "429"} <= set(login["responses"])
    assert schema["components"]["securitySchemes"]["jwtAuth"]["scheme"] == "bearer"
    assert {"jwtAuth": []} in schema["paths"]["/api/v1/pools"]["get"]["security"]


@pytest.mark.django_db
def test_docs_page_loads_its_assets_from_this_server() -> None:
    response = Client().get("/api/v1/docs/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger" in page.lower()
    assert "/api/v1/schema/" in page
    assert "cdn" not in page.lower()


@pytest.mark.django_db
def test_redis_down_means_503_not_a_crash(api: Any, listener: Any) -> None:
    """Every authenticated request checks the logout denylist in Redis: without it, say so and retry."""
    client = api(listener)

    with pointed_at("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/api/v1/auth/validate")

    assert response.status_code == 503
    assert error_code(response) == "unavailable"
    assert int(response["Retry-After"]) > 0
    assert client.get("/api/v1/auth/validate").status_code == 200


@pytest.mark.django_db
def test_a_crash_in_a_view_is_a_json_500_without_internals(api: Any, listener: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("accounts.selectors.pool_list", broken)
    client = api(listener)
    client.raise_request_exception = False

    response = client.get("/api/v1/pools")

    assert response.status_code == 500
    assert error_code(response) == "server_error"
    assert "secret internals" not in response.content.decode()
