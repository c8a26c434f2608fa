"""generate_care_plan (and the email it enqueues) through a real Worker."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from listener import create_task
from tests.integration import llm_support, smtp_support
from tests.integration.engine_support import eventually, running_worker
from tests.integration.llm_support import Reply, chat_server, completion
from tests.integration.worker_registry import bundled

pytestmark = pytest.mark.anyio

FAST_RETRIES = {"backoff_base_s": 0.05, "backoff_max_s": 0.1}
TRANSCRIPT = "Patient: the night sweats started after the new medication in March."
PAYLOAD = {
    "email": "pat@example.com",
    "transcript": TRANSCRIPT,
    "session_id": "sess-7",
    "blueprint_id": "bp-1",
    "host_url": "https://care.example.com",
}


def state(conn: psycopg.Connection[Any], task_id: Any) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status, attempts, error FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def plan_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM care_plans").fetchone()
    return int(row[0]) if row else 0


async def test_plan_is_generated_and_its_link_emailed(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = smtp_support.Mailbox()
    registry = bundled("generate_care_plan", "send_email")
    with (
        chat_server(Reply(body=completion("## Plan"))) as llm,
        smtp_support.smtp_server(mailbox) as port,
        capture_logs() as logs,
    ):
        llm_support.point_at(monkeypatch, llm)
        smtp_support.point_at(monkeypatch, port)
        async with running_worker(dsn, registry, **FAST_RETRIES):
            task_id = create_task("generate_care_plan", PAYLOAD, conn=conn)
            await eventually(lambda: mailbox.messages)
    assert state(conn, task_id) == ("completed", 1, None)
    [(recipients, raw)] = mailbox.messages
    body = message_from_bytes(raw, policy=policy.default).get_body(("plain",))
    assert recipients == ["pat@example.com"]
    assert body is not None
    assert "https://care.example.com/care-plans/sess-7" in body.get_content()
    # The capture saw the run (so the check below is about real lines), and no line
    # holds the transcript.
    events = {event["event"] for event in logs}
    assert {"care_plan.generated", "task.completed", "email.sent"} <= events, events
    assert all("night sweats" not in repr(event) for event in logs)


async def test_rate_limit_with_retry_after_is_retried_without_using_an_attempt(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = Reply(
        status=429, body={"error": {"message": "rate limited"}}, headers={"Retry-After": "1"}
    )
    with chat_server(busy, Reply(body=completion("## Plan"))) as llm:
        llm_support.point_at(monkeypatch, llm)
        async with running_worker(dsn, bundled("generate_care_plan"), **FAST_RETRIES):
            task_id = create_task("generate_care_plan", PAYLOAD, conn=conn)
            await eventually(lambda: state(conn, task_id)[0] == "completed", timeout_s=10)
    assert state(conn, task_id) == ("completed", 1, None)
    assert len(llm.requests) == 2
    assert plan_count(conn) == 1


async def test_client_error_fails_the_task_and_writes_nothing(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = Reply(status=401, body={"error": {"message": "Incorrect API key provided"}})
    with chat_server(denied) as llm:
        llm_support.point_at(monkeypatch, llm)
        async with running_worker(dsn, bundled("generate_care_plan"), **FAST_RETRIES):
            task_id = create_task("generate_care_plan", PAYLOAD, conn=conn)
            await eventually(lambda: state(conn, task_id)[0] == "failed")
    assert state(conn, task_id) == (
        "failed",
        1,
        f"PermanentError: {llm.base_url} answered 401: Incorrect API key provided",
    )
    assert plan_count(conn) == 0


async def test_a_provider_echoing_the_api_key_leaves_it_out_of_the_error_column(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "team-key-7c1d55e0a9b3"  # no provider prefix: shape-based redaction can't see it
    echo = Reply(status=403, body={"error": {"message": f"key {key} is not allowed here"}})
    with chat_server(echo) as llm:
        llm_support.point_at(monkeypatch, llm, LLM_API_KEY=key)
        async with running_worker(dsn, bundled("generate_care_plan"), **FAST_RETRIES):
            task_id = create_task("generate_care_plan", PAYLOAD, conn=conn)
            await eventually(lambda: state(conn, task_id)[0] == "failed")
    assert state(conn, task_id) == ("failed", 1, f"PermanentError: {llm.base_url} answered 403")


async def test_model_slower_than_the_handler_timeout_is_cancelled_and_retried(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = Reply(body=completion("late"), delay_s=3)
    with chat_server(slow, Reply(body=completion("## Plan"))) as llm:
        llm_support.point_at(monkeypatch, llm, LLM_TIMEOUT_S="30")
        settings = {**FAST_RETRIES, "default_timeout_s": 0.5}
        async with running_worker(dsn, bundled("generate_care_plan"), **settings):
            task_id = create_task("generate_care_plan", PAYLOAD, conn=conn)
            await eventually(lambda: state(conn, task_id)[0] == "completed", timeout_s=10)
    assert state(conn, task_id) == ("completed", 2, None)
    rows = conn.execute("SELECT plan FROM care_plans").fetchall()
    assert rows == [("## Plan",)]
