"""Reading Prometheus's text format in tests."""

from __future__ import annotations


def series(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line of the text format."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
