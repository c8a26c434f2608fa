"""generate_care_plan against a real chat-completions server on loopback and real PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from handlers.care_plan import generate_care_plan
from handlers.llm import LlmUnavailableError
from listener import PermanentError, RetryLater
from listener.errors import ConfigError
from tests.handler_tasks import make_task
from tests.integration import handler_db
from tests.integration.llm_support import Reply, chat_server, completion, point_at

pytestmark = pytest.mark.anyio

TRANSCRIPT = (
    "Clinician: How have you been sleeping? Patient: Badly, I wake at 3am most nights "
    "and my knee aches when I climb the stairs to the flat on the fourth floor."
)
PAYLOAD = {
    "email": "pat@example.com",
    "transcript": TRANSCRIPT,
    "session_id": "sess-42",
    "blueprint_id": "bp-sleep-v2",
    "host_url": "https://care.example.com/",
}


@pytest.fixture(scope="module")
def module_dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    yield from handler_db.module_database(pg_admin_dsn, template_db)


@pytest.fixture
def dsn(module_dsn: str) -> str:
    """Overrides conftest's per-test database: this module's, emptied."""
    return handler_db.empty_tables(module_dsn)


@pytest.fixture
async def aconn(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(dsn) as connection:
        yield connection


async def run(aconn: psycopg.AsyncConnection[Any], payload: dict[str, Any] = PAYLOAD) -> None:
    """Run the handler as the engine does: inside the transaction that completes the task."""
    async with aconn.transaction():
        await generate_care_plan(make_task("generate_care_plan", payload), aconn)


def plans(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT session_id, email, blueprint_id, plan, model FROM care_plans"
    ).fetchall()


def emails(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT payload FROM tasks WHERE type = 'send_email' ORDER BY created_at")
    return [row[0] for row in rows.fetchall()]


async def test_plan_is_stored_and_a_link_email_enqueued(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
) -> None:
    with chat_server(Reply(body=completion("## Your plan\n- Walk daily"))) as server:
        point_at(monkeypatch, server)
        await run(aconn)
    assert plans(conn) == [
        ("sess-42", "pat@example.com", "bp-sleep-v2", "## Your plan\n- Walk daily", "test-model")
    ]
    [email] = emails(conn)
    assert email["to"] == "pat@example.com"
    assert email["subject"] == "Your care plan is ready"
    assert "https://care.example.com/care-plans/sess-42" in email["body"]
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test-key"
    assert request["json"]["model"] == "test-model"
    user = request["json"]["messages"][-1]["content"]
    assert TRANSCRIPT in user
    assert "bp-sleep-v2" in user


async def test_link_path_and_subject_follow_settings(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
) -> None:
    with chat_server() as server:
        point_at(
            monkeypatch,
            server,
            CARE_PLAN_LINK_PATH="/app/plans/{session_id}/view",
            CARE_PLAN_EMAIL_SUBJECT="Plan ready",
        )
        await run(aconn, {**PAYLOAD, "session_id": "a b/c"})
    [email] = emails(conn)
    assert email["subject"] == "Plan ready"
    assert "https://care.example.com/app/plans/a%20b%2Fc/view" in email["body"]


async def test_the_link_base_url_comes_from_the_setting_when_set(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
) -> None:
    without_host = {k: v for k, v in PAYLOAD.items() if k != "host_url"}
    with chat_server() as server:
        point_at(monkeypatch, server, CARE_PLAN_BASE_URL="https://clinic.example.org/")
        await run(aconn, without_host)
        await run(aconn, {**without_host, "host_url": "https://clinic.example.org"})
    assert ["https://clinic.example.org/care-plans/sess-42" in e["body"] for e in emails(conn)] == [
        True,
        True,
    ]


async def test_a_producers_host_url_unlike_the_setting_fails_before_the_model_runs(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server, CARE_PLAN_BASE_URL="https://clinic.example.org")
        with pytest.raises(PermanentError, match="differs from CARE_PLAN_BASE_URL"):
            await run(aconn, {**PAYLOAD, "host_url": "https://phish.example.net"})
    assert server.requests == []
    assert (plans(conn), emails(conn)) == ([], [])


async def test_repeated_task_overwrites_the_plan_for_its_session(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
) -> None:
    with chat_server(Reply(body=completion("first")), Reply(body=completion("second"))) as server:
        point_at(monkeypatch, server)
        await run(aconn)
        await run(aconn)
    assert [(row[0], row[3]) for row in plans(conn)] == [("sess-42", "second")]


async def test_plan_and_email_roll_back_with_the_completing_transaction(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
) -> None:
    class CommitFailed(Exception):
        """Stands in for the engine failing to mark the task completed."""

    async def run_then_fail() -> None:
        async with aconn.transaction():
            await generate_care_plan(make_task("generate_care_plan", PAYLOAD), aconn)
            raise CommitFailed

    with chat_server() as server:
        point_at(monkeypatch, server)
        with pytest.raises(CommitFailed):
            await run_then_fail()
        assert (plans(conn), emails(conn)) == ([], [])
        await run(aconn)  # the retry
    assert len(plans(conn)) == 1
    assert len(emails(conn)) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_busy_api_with_retry_after_seconds_retries_after_that_delay(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
    status: int,
) -> None:
    busy = Reply(
        status=status, body={"error": {"message": "slow down"}}, headers={"Retry-After": "7"}
    )
    with chat_server(busy) as server:
        point_at(monkeypatch, server)
        with pytest.raises(RetryLater) as err:
            await run(aconn)
    assert err.value.delay_s == 7.0
    assert f"answered {status}: slow down" in str(err.value)
    assert (plans(conn), emails(conn)) == ([], [])


async def test_retry_after_as_http_date_is_honoured_and_capped(
    monkeypatch: pytest.MonkeyPatch, aconn: psycopg.AsyncConnection[Any]
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    with chat_server(Reply(status=429, body={}, headers={"Retry-After": later})) as server:
        point_at(monkeypatch, server, LLM_MAX_RETRY_AFTER_S="900")
        with pytest.raises(RetryLater) as err:
            await run(aconn)
    assert err.value.delay_s == 900.0


@pytest.mark.parametrize("status", [429, 500, 502])
async def test_busy_api_without_retry_after_is_retried_with_backoff(
    monkeypatch: pytest.MonkeyPatch, aconn: psycopg.AsyncConnection[Any], status: int
) -> None:
    with chat_server(Reply(status=status, body=b"upstream trouble")) as server:
        point_at(monkeypatch, server)
        with pytest.raises(LlmUnavailableError, match=f"answered {status}$"):
            await run(aconn)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "context length exceeded"),
        (401, "Incorrect API key provided"),
        (404, "The model 'test-model' does not exist"),
    ],
)
async def test_client_error_fails_permanently_with_the_provider_message(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    conn: psycopg.Connection[Any],
    status: int,
    message: str,
) -> None:
    with chat_server(Reply(status=status, body={"error": {"message": message}})) as server:
        point_at(monkeypatch, server)
        with pytest.raises(PermanentError) as err:
            await run(aconn)
    assert str(err.value) == f"{server.base_url} answered {status}: {message}"
    assert (plans(conn), emails(conn)) == ([], [])


async def test_unreachable_api_is_retried(
    monkeypatch: pytest.MonkeyPatch, aconn: psycopg.AsyncConnection[Any]
) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server)
    # The server is gone now: its port refuses connections.
    with pytest.raises(LlmUnavailableError, match=r"cannot reach http://127\.0\.0\.1"):
        await run(aconn)


async def test_slow_api_times_out_and_is_retried(
    monkeypatch: pytest.MonkeyPatch, aconn: psycopg.AsyncConnection[Any]
) -> None:
    with chat_server(Reply(body=completion("late"), delay_s=5)) as server:
        point_at(monkeypatch, server, LLM_TIMEOUT_S="0.3")
        with pytest.raises(LlmUnavailableError, match="timed out"):
            await run(aconn)


@pytest.mark.parametrize(
    "body", [b"not json", {"choices": []}, completion("   "), {"choices": [{"message": {}}]}]
)
async def test_unusable_answer_is_retried(
    monkeypatch: pytest.MonkeyPatch, aconn: psycopg.AsyncConnection[Any], body: Any
) -> None:
    with chat_server(Reply(body=body)) as server:
        point_at(monkeypatch, server)
        with pytest.raises(LlmUnavailableError, match="the API"):
            await run(aconn)


async def test_missing_llm_settings_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch, aconn: psycopg.AsyncConnection[Any]
) -> None:
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="LLM_BASE_URL is not set"):
        await run(aconn)


async def test_transcript_never_appears_in_logs_or_errors(
    monkeypatch: pytest.MonkeyPatch,
    aconn: psycopg.AsyncConnection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The 400 echoes the prompt back, as some servers do.
    echo = Reply(status=400, body={"error": {"message": f"bad input: {TRANSCRIPT}"}})
    errors: list[str] = []
    with chat_server(Reply(body=completion("plan")), echo) as server, capture_logs() as logs:
        point_at(monkeypatch, server)
        await run(aconn)
        with pytest.raises(PermanentError) as err:
            await run(aconn)
        errors.append(str(err.value))
    assert any(e["event"] == "care_plan.generated" for e in logs)  # something was logged
    assert errors == [f"{server.base_url} answered 400"]
    fragment = "wake at 3am"
    assert all(fragment not in repr(event) for event in logs)
    assert fragment not in caplog.text
