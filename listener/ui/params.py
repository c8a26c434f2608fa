"""Query parameters of the tasks page and API: parsed strictly, one clear error each."""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from listener.cli import parse_duration
from listener.store import ui as store

DEFAULT_STATUS = "failed"  # the page answers "what failed?" first
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_TEXT = 256


class BadRequest(ValueError):
    """A parameter the dashboard cannot use; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TaskSearch:
    """What the tasks page or /api/tasks was asked for."""

    query: store.TaskQuery
    text: str  # the "id or dedupe key" box, stripped
    raw: dict[str, str]  # the parameters as given, to rebuild links


def task_search(params: Mapping[str, str], now: datetime) -> TaskSearch:
    """Parse status, type, from, to, after, limit and q."""
    raw = {k: v.strip() for k, v in params.items() if k in _KNOWN and v.strip()}
    for key, value in raw.items():
        if len(value) > MAX_TEXT:
            raise BadRequest(f"{key} is longer than {MAX_TEXT} characters")
    status = raw.get("status", DEFAULT_STATUS)
    if status not in store.STATUSES:
        raise BadRequest(f"status must be one of {', '.join(store.STATUSES)}, got {status!r}")
    since = parse_time("from", raw.get("from"), now)
    until = parse_time("to", raw.get("to"), now)
    if since is not None and until is not None and until <= since:
        raise BadRequest("'to' must be later than 'from'")
    task_query = store.TaskQuery(
        status=status,
        type=raw.get("type"),
        since=since,
        until=until,
        cursor=decode_cursor(status, raw["after"]) if "after" in raw else None,
        limit=parse_limit(raw.get("limit")),
    )
    return TaskSearch(task_query, raw.get("q", ""), raw)


_KNOWN = ("status", "type", "from", "to", "after", "limit", "q")


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    return int(text)


def parse_time(name: str, text: str | None, now: datetime) -> datetime | None:
    """An ISO-8601 time with a zone (2026-12-01T09:00:00+00:00), or a duration ago (2h)."""
    if text is None:
        return None
    try:
        return now - parse_duration(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text.replace(" ", "T"))
    except ValueError:
        raise BadRequest(
            f"{name!r} must be an ISO time with a zone (2026-12-01T09:00:00+00:00) "
            f"or a duration ago (30m, 2h, 7d), got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise BadRequest(f"{name!r} needs a time zone, e.g. {text}+00:00 or {text}Z")
    return when


def task_id(text: str) -> uuid.UUID | None:
    """The UUID in ``text``, or None if it is not one."""
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def path_task_id(text: str) -> uuid.UUID:
    """The task id of a URL path, or BadRequest."""
    found = task_id(text)
    if found is None:
        raise BadRequest(f"{text!r} is not a task id (a UUID)")
    return found


def encode_cursor(cursor: store.Cursor) -> str:
    """An opaque, URL-safe form of a keyset cursor."""
    values = [v.isoformat() if isinstance(v, datetime) else str(v) for v in cursor]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(status: str, text: str) -> store.Cursor:
    """The cursor ``encode_cursor`` made for a page of ``status``."""
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        return _cursor_values(status, values)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest(
            "'after' is not a cursor of this listing: follow the page's own Next link"
        ) from None


def _cursor_values(status: str, values: Any) -> store.Cursor:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("not a list of strings")
    if status == "pending":
        priority, run_at, ident = values
        return (int(priority), _aware(run_at), uuid.UUID(ident))
    when, ident = values
    return (_aware(when), uuid.UUID(ident))


def _aware(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("naive time")
    return when


def query_string(raw: Mapping[str, str], **changes: str | None) -> str:
    """``raw`` with ``changes`` applied (None removes a key), as a query string."""
    from urllib.parse import urlencode

    merged = {**raw, **changes}
    return urlencode({k: v for k, v in merged.items() if v})
