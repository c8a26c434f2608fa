"""Fleet-wide limits of a task type, parsed: ``global_concurrency=N``, ``rate_limit="30/m"``.

Pure parsing. Where the claim enforces them: listener/store and the claim function.
``listener run --limit TYPE=global:N,rate:30/m`` overrides a handler's values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_RATE = re.compile(r"([1-9][0-9]*)/(s|m|h)")
WINDOW_S = {"s": 1, "m": 60, "h": 3600}
_UNIT = {size: unit for unit, size in WINDOW_S.items()}
MAX_GLOBAL_CONCURRENCY = 100_000

# In a --limit override, "off" removes the handler's limit.
OFF = "off"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` tasks of a type start in any ``window_s`` seconds, fleet-wide."""

    count: int
    window_s: int  # 1, 60 or 3600

    def __str__(self) -> str:
        return f"{self.count}/{_UNIT[self.window_s]}"

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "window_s": self.window_s}


def parse_rate_limit(text: object, option: str = "rate_limit") -> RateLimit:
    """``"30/m"`` -> RateLimit(30, 60); ValueError names ``option`` and the rule."""
    if isinstance(text, RateLimit):
        return text
    if not isinstance(text, str):
        raise ValueError(f"{option} must be a string like '30/m', got {type(text).__name__}")
    match = _RATE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{option}={text!r} is not a rate like '30/m': a whole number > 0, '/', and s, m or h"
        )
    return RateLimit(int(match[1]), WINDOW_S[match[2]])


def parse_global_concurrency(value: object, option: str = "global_concurrency") -> int:
    """A whole number from 1 to 100,000; ValueError names ``option``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be a whole number, got {value!r}")
    if not 1 <= value <= MAX_GLOBAL_CONCURRENCY:
        raise ValueError(f"{option} must be between 1 and {MAX_GLOBAL_CONCURRENCY}, got {value}")
    return value


def parse_global_concurrency_text(text: str, option: str) -> int:
    """``global_concurrency`` given as text (a flag, an environment variable)."""
    if not re.fullmatch(r"\s*-?[0-9]+\s*", text):
        raise ValueError(f"{option}={text!r} is not a whole number")
    return parse_global_concurrency(int(text), option)


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """One ``--limit TYPE=global:N,rate:30/m``. Keys not given keep the handler's value.

    ``clear_global`` / ``clear_rate`` come from ``global:off`` / ``rate:off``.
    """

    type: str
    global_concurrency: int | None = None
    rate_limit: RateLimit | None = None
    clear_global: bool = False
    clear_rate: bool = False


def parse_limit_override(text: str) -> LimitOverride:
    """``TYPE=global:N,rate:30/m`` (either or both keys); ValueError says what is wrong."""
    task_type, sep, spec = text.partition("=")
    task_type = task_type.strip()
    if not sep or not task_type or not spec.strip():
        raise ValueError(f"{text!r} is not TYPE=global:N,rate:N/s|m|h")
    values: dict[str, str] = {}
    for item in spec.split(","):
        key, colon, value = (part.strip() for part in item.partition(":"))
        if not colon or key not in ("global", "rate") or not value:
            raise ValueError(
                f"{text!r}: {item.strip()!r} is not global:N or rate:N/s|m|h (or KEY:off)"
            )
        if key in values:
            raise ValueError(f"{text!r}: {key} is given twice")
        values[key] = value
    g, r = values.get("global"), values.get("rate")
    return LimitOverride(
        type=task_type,
        global_concurrency=None if g in (None, OFF) else parse_global_concurrency_text(g, "global"),
        rate_limit=None if r in (None, OFF) else parse_rate_limit(r, "rate"),
        clear_global=g == OFF,
        clear_rate=r == OFF,
    )
