"""Pure statistics for the report: summaries of repeated runs, percentiles, ratios, targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


@dataclass(frozen=True)
class Summary:
    """Min, median and max of a figure over several runs."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("summary of no values")
        return cls(min=float(min(values)), median=percentile(values, 50), max=float(max(values)), n=len(values))

    def as_dict(self) -> dict[str, float | int]:
        return {"min": self.min, "median": self.median, "max": self.max, "n": self.n}


def ratios(measured: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per-run ratios measured/baseline, pairing runs made back to back; runs with a zero baseline are skipped."""
    return [m / b for m, b in zip(measured, baseline, strict=False) if b]


@dataclass(frozen=True)
class Target:
    """A target from the issue. kind: 'ratio_min' (ratio >= value), 'max' (value < limit),
    'growth_max' (growth in MB < limit)."""

    kind: str
    value: float
    text: str

    def met(self, observed: float) -> bool:
        if self.kind == "ratio_min":
            return observed >= self.value
        return observed < self.value

    def score(self, observed: float) -> float:
        """How far from the target: above 1 is met, below 1 is missed; smaller is worse."""
        if self.kind == "ratio_min":
            return observed / self.value if self.value else math.inf
        if observed <= 0:
            return math.inf
        return self.value / observed


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table: a few significant digits, no scientific notation for ordinary sizes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"
