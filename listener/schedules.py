"""When a schedule fires: 5-field cron (cronsim) in a time zone, or a fixed interval.

Pure: no database, no clock of its own. Every instant is an aware UTC datetime, so
two workers given the same ``now`` compute the same instants.

DST, for a cron with ``cron_tz`` (Debian cron's rules, which cronsim follows): a
time that does not exist on the spring-forward day (``30 2 * * *`` in Europe/Berlin
on the last Sunday of March) fires once, at the first valid time after the gap
(03:00 CEST); a time that happens twice on the fall-back day fires once, at its
first occurrence (02:30 CEST, not again at 02:30 CET). Expressions whose minute or
hour field starts with ``*`` (``*/30 * * * *``) keep their real-time spacing and fire
in both passes of the repeated hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

_EVERY = re.compile(r"([1-9][0-9]*)(s|m|h)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# cronsim's instants near a DST change can sit a day off (see _next_cron_after);
# a handful of steps always settles them.
_MAX_CORRECTION_STEPS = 10


@dataclass(frozen=True, slots=True)
class Schedule:
    """One schedule, parsed. Exactly one of ``cron`` and ``every_s`` is set.

    ``every_s`` instants are whole multiples of the interval since the Unix epoch
    (``every="15m"`` fires at :00, :15, :30 and :45 UTC), so every worker agrees on
    them without talking to the others.
    """

    cron: str | None = None
    every_s: int | None = None
    tz: str = "UTC"  # the cron's time zone (IANA name); every_s ignores it

    @property
    def description(self) -> str:
        """``cron 0 8 * * * (Europe/Berlin)`` or ``every 15s``: for humans and status."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.tz})"
        return f"every {_format_interval(self.every_s or 0)}"

    def as_json(self) -> dict[str, Any]:
        """What a worker publishes about this schedule (listener.workers.schedules)."""
        if self.cron is not None:
            return {"cron": self.cron, "tz": self.tz}
        return {"every_s": self.every_s}

    def next_after(self, when: datetime) -> datetime:
        """The first instant strictly after ``when`` (aware), in UTC."""
        when = when.astimezone(UTC)
        if self.every_s is not None:
            step = self.every_s
            elapsed = (when - _EPOCH) // timedelta(seconds=step)
            return _EPOCH + timedelta(seconds=(elapsed + 1) * step)
        return _next_cron_after(self._cron(), self._zone(), when)

    def latest_at_or_before(self, when: datetime) -> datetime:
        """The last instant at or before ``when`` (aware), in UTC."""
        when = when.astimezone(UTC)
        if self.every_s is not None:
            step = self.every_s
            elapsed = (when - _EPOCH) // timedelta(seconds=step)
            return _EPOCH + timedelta(seconds=elapsed * step)
        cron, zone = self._cron(), self._zone()
        # Reverse iteration starts from the wall clock too, and can land a day early
        # inside the repeated hour; walking forward from there settles it.
        start = (when.replace(microsecond=0) + _SECOND).astimezone(zone)
        latest = next(CronSim(cron, start, reverse=True)).astimezone(UTC)
        for _ in range(_MAX_CORRECTION_STEPS):
            following = _next_cron_after(cron, zone, latest)
            if following > when:
                return latest
            latest = following
        raise RuntimeError(f"cron {cron!r} in {zone}: no settled instant before {when}")

    def _cron(self) -> str:
        assert self.cron is not None
        return self.cron

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


def _next_cron_after(cron: str, zone: ZoneInfo, when: datetime) -> datetime:
    # cronsim walks the local wall clock. Started inside the repeated hour of a
    # fall-back day (02:15 CET, second pass) it answers 02:30 on the same wall clock
    # at its first occurrence (02:30 CEST), which is already past: step on.
    start = when.astimezone(zone)
    instants = CronSim(cron, start)
    for _ in range(_MAX_CORRECTION_STEPS):
        instant = next(instants).astimezone(UTC)
        if instant > when:
            return instant
    raise RuntimeError(f"cron {cron!r} in {zone}: no instant after {when}")


def parse_schedule(cron: str | None, every: str | None, cron_tz: str | None) -> Schedule | None:
    """The decorator's ``cron=``, ``every=`` and ``cron_tz=``; ValueError names the option."""
    if cron is not None and every is not None:
        raise ValueError("give cron= or every=, not both")
    if cron_tz is not None and cron is None:
        raise ValueError("cron_tz= applies to cron= only")
    if cron is not None:
        zone = "UTC" if cron_tz is None else parse_time_zone(cron_tz)
        return Schedule(cron=parse_cron(cron), tz=zone)
    if every is not None:
        return Schedule(every_s=parse_every(every))
    return None


def parse_cron(expression: object) -> str:
    """A 5-field cron expression, normalised to single spaces; ValueError says why not."""
    if not isinstance(expression, str):
        raise ValueError(f"cron= must be a string, got {type(expression).__name__}")
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron={expression!r} must have 5 fields (minute hour day month weekday), "
            f"got {len(fields)}"
        )
    normalised = " ".join(fields)
    try:
        instants = CronSim(normalised, datetime(2000, 1, 1, tzinfo=UTC))
        next(instants)
    except CronSimError as exc:
        raise ValueError(f"cron={expression!r} is not a valid cron expression: {exc}") from None
    except StopIteration:
        raise ValueError(f"cron={expression!r} never fires") from None
    return normalised


def parse_every(text: object) -> int:
    """``"15s"``, ``"5m"``, ``"2h"`` -> seconds; ValueError says why not."""
    if not isinstance(text, str):
        raise ValueError(f"every= must be a string like '15s', got {type(text).__name__}")
    match = _EVERY.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"every={text!r} is not an interval like '15s', '5m' or '2h' "
            "(a whole number > 0 and s, m or h)"
        )
    return int(match[1]) * _UNIT_S[match[2]]


def parse_time_zone(name: object) -> str:
    """An IANA time zone name (``Europe/Berlin``); ValueError if unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"cron_tz={name!r} must be a time zone name such as 'Europe/Berlin'")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder name
        raise ValueError(f"cron_tz={name!r} is not a known time zone") from None
    return name


def _format_interval(seconds: int) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
