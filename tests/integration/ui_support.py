"""Helpers for the dashboard's tests: the app in-process, tasks in given states."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from starlette.testclient import TestClient

from listener.ui.app import UiSettings, create_app

TOKEN = "test-token-0123456789abcdef"


@contextlib.contextmanager
def client(dsn: str, token: str | None = TOKEN, **settings: Any) -> Iterator[TestClient]:
    """The dashboard app on a real database, through Starlette's TestClient."""
    app = create_app(UiSettings(dsn=dsn, token=token, **settings))
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as http:
        yield http


def add_task(
    conn: psycopg.Connection[Any], task_type: str = "send_email", **columns: Any
) -> uuid.UUID:
    """Insert one task with these columns (status, error, completed_at, ...)."""
    columns = {"type": task_type, **columns}
    names = ", ".join(columns)
    values = ", ".join(f"%({k})s" for k in columns)
    row = conn.execute(
        f"INSERT INTO tasks ({names}) VALUES ({values}) RETURNING id",
        columns,
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def add_failed(
    conn: psycopg.Connection[Any],
    task_type: str = "send_email",
    error: str = "ValueError: boom",
    **columns: Any,
) -> uuid.UUID:
    return add_task(
        conn, task_type, status="failed", attempts=5, error=error,
        started_at=columns.pop("started_at", None) or _now(conn),
        completed_at=columns.pop("completed_at", None) or _now(conn), **columns,
    )  # fmt: skip


def _now(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


def status_of(conn: psycopg.Connection[Any], task_id: uuid.UUID) -> str:
    row = conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return str(row[0])


def login(http: TestClient, token: str = TOKEN) -> str:
    """Log in through the form; returns the session's CSRF token (from a page)."""
    form = http.get("/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce is not None, form.text
    done = http.post("/login", data={"csrf": nonce[1], "token": token, "next": "/"})
    assert done.status_code == 303, done.text
    return csrf_of(http.get("/").text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    assert found[1], "no CSRF token on the page"
    return found[1]
