"""Checks on task payloads: a bad field fails the task permanently, naming the field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any
from urllib.parse import urlsplit

from listener import PermanentError

# Deliberately loose: one @, something on each side, no whitespace, control character
# or header break. The SMTP server is the judge of deliverability; this catches
# garbage early.
_ADDRESS = re.compile(
    r"^[^@\s<>,;\x00-\x1f\x7f-\x9f]+@[^@\s<>,;\x00-\x1f\x7f-\x9f]+\.[^@\s<>,;\x00-\x1f\x7f-\x9f]+$"
)
# What can't be in a one-line header value: CR, LF and what Python's email package
# also reads as a line break (VT, FF, FS..US, NEL, U+2028, U+2029), NUL and the other
# control characters. Tab is folding whitespace, so it may stay.
_NOT_ONE_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def reject_unknown(payload: Mapping[str, Any], known: Set[str]) -> None:
    """Fail on fields the handler does not read, so a typo is never silently ignored."""
    unknown = sorted(set(payload) - known)
    if unknown:
        raise PermanentError(f"payload has unknown field(s) {', '.join(map(repr, unknown))}")


def text(payload: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    """A string field; required ones must be non-empty."""
    value = payload.get(name)
    if value is None:
        if required:
            raise PermanentError(f"payload field {name!r} is missing")
        return None
    if not isinstance(value, str):
        raise PermanentError(f"payload field {name!r} must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise PermanentError(f"payload field {name!r} is empty")
    return value


def required_text(payload: Mapping[str, Any], name: str) -> str:
    value = text(payload, name)
    assert value is not None
    return value


def identifier(payload: Mapping[str, Any], name: str) -> str:
    """An id apps may send as a string or an integer; returned as a string."""
    value = payload.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return required_text(payload, name)


def header_text(payload: Mapping[str, Any], name: str) -> str:
    """A required one-line string (it becomes a mail header)."""
    value = required_text(payload, name)
    if _NOT_ONE_LINE.search(value):
        raise PermanentError(f"payload field {name!r} must be one line without control characters")
    return value


def address(value: object, name: str) -> str:
    """One email address."""
    if value is None:
        raise PermanentError(f"payload field {name!r} is missing")
    if not isinstance(value, str):
        raise PermanentError(f"payload field {name!r} must be a string, got {type(value).__name__}")
    if not _ADDRESS.match(value.strip()):
        raise PermanentError(f"payload field {name!r} is not an email address")
    return value.strip()


def addresses(payload: Mapping[str, Any], name: str) -> list[str]:
    """A required address, or a non-empty list of them."""
    value = payload.get(name)
    if value is None:
        raise PermanentError(f"payload field {name!r} is missing")
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PermanentError(f"payload field {name!r} is an empty list")
    return [address(item, name) for item in items]


def http_url(payload: Mapping[str, Any], name: str) -> str:
    """A required http(s) URL with a host."""
    value = required_text(payload, name).strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PermanentError(f"payload field {name!r} must be an http(s) URL with a host")
    return value
