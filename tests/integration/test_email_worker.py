"""send_email through a real Worker: the engine's retry, failure and completion contract."""

from __future__ import annotations

from email import message_from_bytes
from typing import Any

import psycopg
import pytest

from listener import create_task
from tests.integration.engine_support import eventually, running_worker
from tests.integration.smtp_support import Mailbox, point_at, smtp_server
from tests.integration.worker_registry import bundled

pytestmark = pytest.mark.anyio

FAST_RETRIES = {"backoff_base_s": 0.05, "backoff_max_s": 0.1}
PAYLOAD = {"to": "pat@example.com", "subject": "Hi", "body": "Hello"}


def task_row(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, error FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def finished(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...] | None:
    row = task_row(conn, task_id)
    return row if row[0] in ("completed", "failed") else None


async def test_smtp_4xx_is_retried_then_delivered_once(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox(defer_times=2)
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        async with running_worker(dsn, bundled("send_email"), **FAST_RETRIES):
            task_id = create_task("send_email", PAYLOAD, conn=conn)
            row = await eventually(lambda: finished(conn, task_id))
    assert row == ("completed", 3, None)
    [(_, raw)] = mailbox.messages
    assert message_from_bytes(raw)["Message-ID"] == f"<{task_id}@clinic.example>"


async def test_smtp_5xx_fails_the_task_at_once_with_the_reason(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox(rcpt_reply="550 5.1.1 user unknown")
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        async with running_worker(dsn, bundled("send_email"), **FAST_RETRIES):
            task_id = create_task("send_email", PAYLOAD, conn=conn)
            row = await eventually(lambda: finished(conn, task_id))
    assert row == (
        "failed",
        1,
        "PermanentError: SMTP server refused every recipient (codes [550])",
    )
    assert mailbox.messages == []


async def test_smtp_4xx_every_time_fails_after_max_attempts(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox(rcpt_reply="451 4.3.0 mailbox busy")
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        async with running_worker(dsn, bundled("send_email"), **FAST_RETRIES):
            task_id = create_task("send_email", PAYLOAD, conn=conn, max_attempts=3)
            row = await eventually(lambda: finished(conn, task_id))
    assert row == (
        "failed",
        3,
        "SmtpTemporaryError: SMTP server deferred the recipients (codes [451])",
    )


async def test_malformed_email_payload_fails_naming_the_field(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(Mailbox()) as port:
        point_at(monkeypatch, port)
        async with running_worker(dsn, bundled("send_email"), **FAST_RETRIES):
            task_id = create_task("send_email", {"to": "pat@example.com"}, conn=conn)
            row = await eventually(lambda: finished(conn, task_id))
    assert row == ("failed", 1, "PermanentError: payload field 'subject' is missing")


# (NUL cannot reach a worker: PostgreSQL's jsonb refuses \u0000, so producers get an
# InvalidTaskError; the handler's own check is unit-tested.)
@pytest.mark.parametrize(
    "subject", ["Hi\u2028Bcc: x@evil.io", "Hi\x85there"], ids=["U+2028", "NEL"]
)
async def test_a_subject_with_a_unicode_line_break_fails_at_once(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch, subject: str
) -> None:
    mailbox = Mailbox()
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        async with running_worker(dsn, bundled("send_email"), **FAST_RETRIES):
            task_id = create_task("send_email", {**PAYLOAD, "subject": subject}, conn=conn)
            row = await eventually(lambda: finished(conn, task_id))
    assert row == (
        "failed",
        1,
        "PermanentError: payload field 'subject' must be one line without control characters",
    )
    assert mailbox.messages == []
