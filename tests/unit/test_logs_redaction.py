"""Log configuration and the redaction processor, asserted on parsed JSON lines."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from listener import logs

EMAIL = "asha.rao+orders@example.co.in"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("info", "json", out)
    yield out
    logs.reset()


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_events_are_json_lines_with_fixed_names_and_fields(json_lines: io.StringIO) -> None:
    structlog.get_logger("t").info("task.completed", task_id="7f3c", type="send_email", attempt=1)
    (line,) = parsed(json_lines)
    assert line["event"] == "task.completed"
    assert (line["task_id"], line["type"], line["attempt"]) == ("7f3c", "send_email", 1)
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")


def test_context_bound_with_contextvars_appears_on_every_line(json_lines: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(worker_id="w-1"):
        structlog.get_logger("t").info("worker.started")
    assert parsed(json_lines)[0]["worker_id"] == "w-1"


def test_events_below_the_configured_level_are_dropped() -> None:
    out = io.StringIO()
    logs.configure("warning", "json", out)
    try:
        structlog.get_logger("t").info("task.claimed")
        structlog.get_logger("t").warning("listener.reconnecting")
    finally:
        logs.reset()
    assert [e["event"] for e in parsed(out)] == ["listener.reconnecting"]


def test_an_unknown_level_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        logs.configure("loud", "json", io.StringIO())


def test_console_format_is_not_json() -> None:
    out = io.StringIO()
    logs.configure("info", "console", out)
    try:
        structlog.get_logger("t").info("worker.started", concurrency=4)
    finally:
        logs.reset()
    text = out.getvalue()
    assert "worker.started" in text
    assert "concurrency=4" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_an_email_in_any_field_never_reaches_the_output(json_lines: io.StringIO) -> None:
    log = structlog.get_logger("t")
    log.error("task.failed", error=f"SMTPRecipientsRefused: {EMAIL} rejected", type="send_email")
    log.info("task.completed", extra={"to": [EMAIL]}, note=(EMAIL,))
    text = json_lines.getvalue()
    assert EMAIL not in text
    assert "example.co.in" not in text
    assert parsed(json_lines)[0]["error"] == "SMTPRecipientsRefused: [email] rejected"


def test_a_payload_field_is_redacted_whole(json_lines: io.StringIO) -> None:
    structlog.get_logger("t").info("task.claimed", payload={"to": "x", "amount": 42})
    assert parsed(json_lines)[0]["payload"] == "[redacted]"


def test_an_exception_traceback_is_redacted(json_lines: io.StringIO) -> None:
    try:
        raise ValueError(f"bad recipient {EMAIL}")
    except ValueError:
        structlog.get_logger("t").exception("task.failed")
    line = parsed(json_lines)[0]
    assert "ValueError: bad recipient [email]" in line["exception"]
    assert EMAIL not in json_lines.getvalue()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://app:s3cr3t@db:5432/q", "postgresql://app:[redacted]@db:5432/q"),
        ("host=db password=s3cr3t user=app", "host=db password=[redacted] user=app"),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [redacted]"),
        ("api_key='k-123 456' left", "api_key=[redacted] left"),
        ("no secrets in here: 42 tasks", "no secrets in here: 42 tasks"),
        ("postgresql://db:5432/q", "postgresql://db:5432/q"),
    ],
)
def test_secrets_inside_strings_are_masked(text: str, expected: str) -> None:
    assert logs.redact_text(text) == expected


@pytest.mark.parametrize("key", ["password", "db_password", "api_key", "Authorization", "token"])
def test_secret_named_fields_are_redacted_whatever_they_hold(key: str) -> None:
    event = logs.redact(None, "info", {"event": "x", key: "plain-looking-value"})
    assert event[key] == "[redacted]"


def test_redaction_keeps_ordinary_fields_and_types() -> None:
    event = {"event": "task.completed", "task_id": "7f3c", "attempt": 2, "duration_s": 0.25}
    assert logs.redact(None, "info", dict(event)) == event
