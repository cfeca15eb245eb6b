"""Password rules beyond Django's own validators (listed in AUTH_PASSWORD_VALIDATORS)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


class NotOnlyWhitespaceValidator:
    """Ten spaces pass Django's minimum length and are in no common-password list; refuse them."""

    def validate(self, password: str, user: Any = None) -> None:
        if not password.strip():
            raise ValidationError("This password is only whitespace.", code="password_only_whitespace")

    def get_help_text(self) -> str:
        return "Your password can't be only whitespace."
