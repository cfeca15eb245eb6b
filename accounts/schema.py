"""OpenAPI: our bearer authentication, described once so every view's schema shows it."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object


class DenylistJWTScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.DenylistJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return dict(build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer",
                                                        bearer_format="JWT"))
