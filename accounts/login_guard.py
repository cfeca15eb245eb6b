"""Login limits that count failures, per account and per client address (docs/api.md "Limits and abuse").

A plain per-address rate either lets thousands of devices behind one NAT log in (and hands an
attacker with many addresses the same rate against any account) or refuses them. What
django-axes and the OWASP authentication guidance do instead is count *failed* attempts, keyed
by the account and, separately, by the address: after `POOLHUB_LOGIN_FAILURES_PER_ACCOUNT`
failures on one account within the window, that account's logins get 429 `throttled` from every
address; after `POOLHUB_LOGIN_FAILURES_PER_ADDRESS` failures from one address, that address's
logins do. Successful logins count nothing, so a fleet logging in to many accounts from one
address is not refused (the per-address request rate `THROTTLE_LOGIN` only bounds the hashing
cost). The API and the admin's login page share the counters.

Why not django-axes itself: it records every attempt as a database row and needs `request` in
every `authenticate()` call and its own middleware and backend; the counters here are two Redis
keys per failure on the throttle cache that every web replica already shares, in fixed windows.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework.throttling import BaseThrottle

from poolhub.errors import ApiError, Unavailable
from poolhub.throttling import process_cache

logger = logging.getLogger(__name__)

_PREFIX = "login-failures"


class LoginThrottled(ApiError):
    status_code = 429
    default_code = "throttled"
    default_detail = "too many failed logins; try again later"


def username_key(username: str) -> str:
    """One account, however its name is typed: Unicode compatibility forms and case fold together."""
    return unicodedata.normalize("NFKC", username).casefold()


def _window() -> tuple[int, int]:
    """(this window's number, seconds until the next one)."""
    length = int(settings.POOLHUB_LOGIN_FAILURE_WINDOW_SECONDS)
    now = int(time.time())
    return now // length, length - now % length


def _keys(*, username: str, address: str) -> dict[str, tuple[str, int]]:
    number, _ = _window()
    return {
        "account": (f"{_PREFIX}:{number}:u:{username_key(username)}", int(settings.POOLHUB_LOGIN_FAILURES_PER_ACCOUNT)),
        "address": (f"{_PREFIX}:{number}:a:{address}", int(settings.POOLHUB_LOGIN_FAILURES_PER_ADDRESS)),
    }


def login_guard_check(*, username: str, address: str) -> None:
    """429 before the password is even checked, if the account or the address failed too often."""
    keys = _keys(username=username, address=address)
    counts = process_cache.get_many([key for key, _ in keys.values()])
    for scope, (key, limit) in keys.items():
        if int(counts.get(key) or 0) >= limit:
            raise LoginThrottled(f"too many failed logins for this {scope}; try again later",
                                 details={"scope": scope}, retry_after=_window()[1])


def login_failure_record(*, username: str, address: str) -> None:
    ttl = _window()[1] + 1
    for key, _ in _keys(username=username, address=address).values():
        process_cache.add(key, 0, timeout=ttl)
        try:
            process_cache.incr(key)
        except ValueError:  # expired between add and incr: start the new window's count
            process_cache.add(key, 1, timeout=ttl)


def request_address(request: HttpRequest) -> str:
    """The address throttles key on: the peer, or X-Forwarded-For only through NUM_PROXIES."""
    return str(BaseThrottle().get_ident(request))  # type: ignore[arg-type]


class AdminLoginGuard:
    """The admin's login page under the same counters: 429 past a limit, a failure counted when the
    form comes back (a successful login redirects)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or request.path != reverse("admin:login"):
            return self.get_response(request)
        username, address = str(request.POST.get("username", "")), request_address(request)
        try:
            login_guard_check(username=username, address=address)
        except LoginThrottled as exc:
            return _plain(exc.message, status=429, retry_after=exc.retry_after)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # The counters are unreachable: the API's answer (503, Retry-After) as a plain page.
            logger.warning("admin login refused: Redis unavailable: %s", exc)
            unavailable = Unavailable()
            return _plain(str(unavailable.detail), status=503, retry_after=unavailable.retry_after)
        response = self.get_response(request)
        if response.status_code == 200:  # the form again: the credentials were refused
            try:
                login_failure_record(username=username, address=address)
            except (RedisConnectionError, RedisTimeoutError) as exc:  # gone since the check: not counted
                logger.warning("admin login failure not counted: Redis unavailable: %s", exc)
        return response


def _plain(message: str, *, status: int, retry_after: int | None) -> HttpResponse:
    response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(retry_after)
    return response
