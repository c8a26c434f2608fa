"""The producer API: create_task / create_task_async / create_tasks against a real database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import listener
from listener import producer
from listener.errors import DatabaseUnavailableError, InvalidTaskError


@pytest.fixture
def database_url(dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DATABASE_URL points at this test's database; the producer's pools are closed after."""
    monkeypatch.setenv("DATABASE_URL", dsn)
    yield dsn
    producer.close_pools()


def _tasks(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT id, type, payload, status, priority, max_attempts, dedupe_key FROM tasks "
        "ORDER BY created_at, id"
    ).fetchall()


def test_create_task_as_apps_call_it_commits_a_pending_task(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    task_id = listener.create_task("generate_care_plan", {"email": "test@example.com"})
    assert isinstance(task_id, uuid.UUID)
    assert _tasks(conn) == [
        (task_id, "generate_care_plan", {"email": "test@example.com"}, "pending", 0, None, None)
    ]


def test_create_task_async_without_a_connection_commits_a_task(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def enqueue() -> uuid.UUID:
        try:
            return await listener.create_task_async("send_email", {"to": "a"}, priority=3)
        finally:
            await producer.aclose_pools()

    task_id = asyncio.run(enqueue())
    assert _tasks(conn) == [(task_id, "send_email", {"to": "a"}, "pending", 3, None, None)]


def _listener_backends(conn: psycopg.Connection[Any]) -> set[int]:
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'listener'"
    ).fetchall()
    return {r[0] for r in rows}


def test_create_task_reuses_pooled_connections_instead_of_one_per_call(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    listener.create_task("t", {"i": 0})
    pooled = _listener_backends(conn)
    for i in range(1, 30):
        listener.create_task("t", {"i": i})
    assert _listener_backends(conn) == pooled
    assert 1 <= len(pooled) <= 4
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (30,)


def test_the_first_create_task_opens_one_pooled_connection_not_two(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    # A pool opened without waiting for its first connection made the first caller
    # wait, and grew by a second connection for it, which connected later (the test
    # above then saw a backend appear between two of its calls).
    listener.create_task("t", {"i": 0})
    time.sleep(0.5)  # what was opened for the first call has connected by now
    assert len(_listener_backends(conn)) == 1


def test_the_first_create_task_async_opens_one_pooled_connection_not_two(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def enqueue_once() -> set[int]:
        try:
            await listener.create_task_async("t", {"i": 0})
            await asyncio.sleep(0.5)
            return _listener_backends(conn)
        finally:
            await producer.aclose_pools()

    assert len(asyncio.run(enqueue_once())) == 1


def test_create_task_async_reuses_pooled_connections(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    async def enqueue_many() -> tuple[set[int], set[int]]:
        try:
            await listener.create_task_async("t", {"i": 0})
            first = _listener_backends(conn)
            await asyncio.gather(*(listener.create_task_async("t", {"i": i}) for i in range(30)))
            return first, _listener_backends(conn)
        finally:
            await producer.aclose_pools()

    first, after = asyncio.run(enqueue_many())
    assert len(first) >= 1
    assert len(after) <= 4  # 30 concurrent calls share the pool's few connections
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (31,)


def test_create_task_with_conn_joins_the_callers_transaction(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(dsn) as app:
        rolled_back = listener.create_task("t", {"n": 1}, conn=app)
        app.rollback()
        committed = listener.create_task("t", {"n": 2}, conn=app)
        assert _tasks(conn) == []  # not visible before the caller commits
        app.commit()
    ids = [row[0] for row in _tasks(conn)]
    assert ids == [committed]
    assert rolled_back != committed


def test_create_task_async_with_conn_joins_the_callers_transaction(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    async def enqueue() -> tuple[uuid.UUID, uuid.UUID]:
        async with await psycopg.AsyncConnection.connect(dsn) as app:
            lost = await listener.create_task_async("t", {"n": 1}, conn=app)
            await app.rollback()
            kept = await listener.create_task_async("t", {"n": 2}, conn=app)
            await app.commit()
            return lost, kept

    lost, kept = asyncio.run(enqueue())
    assert [row[0] for row in _tasks(conn)] == [kept]
    assert lost != kept


def test_dedupe_key_returns_the_unfinished_task_then_a_new_one_after_it_completes(
    conn: psycopg.Connection[Any],
) -> None:
    first = listener.create_task("charge", {"order": 1}, conn=conn, dedupe_key="order-1")
    again = listener.create_task("charge", {"order": 1}, conn=conn, dedupe_key="order-1")
    assert again == first
    conn.execute("UPDATE tasks SET status = 'processing' WHERE id = %s", (first,))
    assert listener.create_task("charge", {}, conn=conn, dedupe_key="order-1") == first
    conn.execute(
        "UPDATE tasks SET status = 'completed', completed_at = now() WHERE id = %s", (first,)
    )
    later = listener.create_task("charge", {"order": 1}, conn=conn, dedupe_key="order-1")
    assert later != first
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (2,)


def test_dedupe_key_in_async_create_task(dsn: str, conn: psycopg.Connection[Any]) -> None:
    async def enqueue_twice() -> list[uuid.UUID]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as app:
            return [
                await listener.create_task_async("t", {}, conn=app, dedupe_key="k")
                for _ in range(2)
            ]

    first, second = asyncio.run(enqueue_twice())
    assert first == second
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_create_tasks_inserts_all_in_one_statement_with_ids_in_input_order(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    batch = [listener.new_task("t", {"i": i}, priority=i % 3) for i in range(500)]
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute("LISTEN listener_tasks")
        ids = listener.create_tasks(batch, conn=conn)
        conn.execute("SELECT pg_notify('listener_tasks', 'marker')")
        payloads = []
        for note in listening.notifies(timeout=10):
            if note.payload == "marker":
                break
            payloads.append(note.payload)
    assert payloads == [""]  # one statement, one wake-up
    assert len(ids) == len(set(ids)) == 500
    rows = dict(conn.execute("SELECT id, (payload->>'i')::int FROM tasks").fetchall())
    assert [rows[task_id] for task_id in ids] == list(range(500))


def test_create_tasks_resolves_dedupe_keys_to_existing_and_in_batch_holders(
    conn: psycopg.Connection[Any],
) -> None:
    existing = listener.create_task("t", {}, conn=conn, dedupe_key="a")
    ids = listener.create_tasks(
        [
            listener.new_task("t", {"n": 1}, dedupe_key="a"),
            listener.new_task("t", {"n": 2}, dedupe_key="b"),
            listener.new_task("t", {"n": 3}, dedupe_key="b"),
            listener.new_task("t", {"n": 4}),
        ],
        conn=conn,
    )
    assert ids[0] == existing
    assert ids[1] == ids[2] != existing
    assert len(set(ids)) == 3
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (3,)


def test_create_tasks_with_database_url_and_async(
    database_url: str, conn: psycopg.Connection[Any]
) -> None:
    sync_ids = listener.create_tasks([listener.new_task("s", {"i": i}) for i in range(3)])

    async def enqueue() -> list[uuid.UUID]:
        try:
            return await listener.create_tasks_async(
                [listener.new_task("a", {"i": i}) for i in range(3)]
            )
        finally:
            await producer.aclose_pools()

    async_ids = asyncio.run(enqueue())
    assert listener.create_tasks([]) == []
    stored = {row[0] for row in _tasks(conn)}
    assert stored == set(sync_ids) | set(async_ids)


def test_run_at_and_priority_are_stored(conn: psycopg.Connection[Any]) -> None:
    when = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
    task_id = listener.create_task("t", {}, conn=conn, run_at=when, priority=-5, max_attempts=2)
    row = conn.execute(
        "SELECT run_at, priority, max_attempts FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert row == (when, -5, 2)
    assert conn.execute("SELECT * FROM claim_next_task()").fetchall() == []


def test_delayed_task_by_timedelta_is_not_due_yet(conn: psycopg.Connection[Any]) -> None:
    listener.create_task("t", {}, conn=conn, run_at=timedelta(minutes=5))
    row = conn.execute("SELECT run_at > now() + interval '4 minutes' FROM tasks").fetchone()
    assert row == (True,)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "problem"),
    [
        (("t", {}), {"delay": 5}, TypeError, "unexpected keyword argument 'delay'"),
        (("t", {"when": datetime.now()}), {}, InvalidTaskError, "not JSON-serialisable"),
        (("t", {"tags": {1, 2}}), {}, InvalidTaskError, "not JSON-serialisable"),
        (("t", {"x": float("nan")}), {}, InvalidTaskError, "not JSON-serialisable"),
        (("t", [1, 2]), {}, InvalidTaskError, "must be a JSON object"),
        (("t", {"b": "x" * (1 << 20)}), {}, InvalidTaskError, "over the 1048576-byte limit"),
        (("bad type", {}), {}, InvalidTaskError, "characters outside"),
        (("t", {}), {"run_at": datetime(2030, 1, 1)}, InvalidTaskError, "timezone-aware"),
        (("t", {}), {"priority": True}, InvalidTaskError, "priority must be an integer"),
    ],
)
def test_bad_input_raises_a_clear_error_and_writes_nothing(
    module_conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    problem: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", module_conn.info.dsn)
    try:
        with pytest.raises(error, match=problem):
            listener.create_task(*args, conn=module_conn, **kwargs)
        with pytest.raises(error, match=problem):
            listener.create_task(*args, **kwargs)
        with pytest.raises(error, match=problem):
            asyncio.run(listener.create_task_async(*args, **kwargs))
    finally:
        producer.close_pools()
    assert module_conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_bulk_with_one_bad_task_writes_none_of_them(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(InvalidTaskError, match="must be a JSON object"):
        listener.create_tasks(
            [listener.new_task("t", {"ok": 1}), listener.new_task("t", ["bad"])],  # type: ignore[arg-type]
            conn=conn,
        )
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_unreachable_database_url_fails_fast_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailableError) as raised:
            listener.create_task("t", {})
        with pytest.raises(DatabaseUnavailableError):
            asyncio.run(listener.create_task_async("t", {}))
    finally:
        producer.close_pools()
    assert str(raised.value) == "cannot connect to postgres at 127.0.0.1:1: connection refused"
    assert time.monotonic() - started < 10  # not a 30-second pool timeout


def test_payload_small_as_text_but_over_the_limit_as_jsonb_is_a_clear_error(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    payload = {"ids": [1] * 300_000}  # ~600 KB of JSON text, several MB as jsonb
    listener.new_task("t", payload)  # passes the Python-side size check
    with psycopg.connect(dsn) as app:
        with pytest.raises(InvalidTaskError, match="over the database's 1 MiB limit"):
            listener.create_task("t", payload, conn=app)
        app.rollback()
    with pytest.raises(InvalidTaskError, match="over the database's 1 MiB limit"):
        listener.create_tasks([listener.new_task("t", payload)], conn=conn)
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
