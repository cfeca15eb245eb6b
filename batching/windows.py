"""Window arithmetic: [origin + k*window, origin + (k+1)*window), half-open, in UTC."""

from __future__ import annotations

from datetime import datetime, timedelta


def window_bounds(*, origin: datetime, window_seconds: int, at: datetime) -> tuple[datetime, datetime]:
    """The window that contains `at`. Integer microseconds, so no float rounding at the edges."""
    width = timedelta(seconds=window_seconds)
    k = (at - origin) // width  # floor division of timedeltas: negative offsets floor correctly
    start = origin + k * width
    return start, start + width
