"""Figures (median of runs with min-max) and targets, as printed and as JSON."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One measured quantity: every run's value, summarised as median [min-max]."""

    key: str
    label: str
    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def text(self) -> str:
        if not self.runs:
            return "not measured"
        if len(self.runs) == 1:
            return f"{_num(self.runs[0])} {self.unit}"
        low, high = min(self.runs), max(self.runs)
        return f"{_num(self.median)} {self.unit} [{_num(low)}-{_num(high)}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "median": self.median if self.runs else None,
            "min": min(self.runs) if self.runs else None,
            "max": max(self.runs) if self.runs else None,
            "runs": self.runs,
            "note": self.note,
        }


@dataclass(frozen=True)
class Target:
    """A target from issue 6 and whether this run met it (None: not measured)."""

    name: str
    wanted: str
    measured: str
    met: bool | None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured"}[self.met]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "wanted": self.wanted,
            "measured": self.measured,
            "verdict": self.verdict,
        }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty list (fraction in 0..1)."""
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _num(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"
