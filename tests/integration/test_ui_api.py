"""The dashboard's JSON API and its auth, without a browser: the app on a real database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from listener.store import ui as store
from tests.integration.support import run_cli
from tests.integration.ui_support import (
    TOKEN,
    add_failed,
    add_task,
    client,
    csrf_of,
    login,
    status_of,
)


def _status_counts(dsn: str) -> dict[str, dict[str, int]]:
    done = run_cli("status", "--json", "--dsn", dsn)
    assert done.returncode == 0, done.stderr
    counts: dict[str, dict[str, int]] = {}
    for c in json.loads(done.stdout)["counts"]:
        counts.setdefault(c["status"], {})[c["type"]] = c["count"]
    return counts


def test_overview_counts_match_listener_status_json(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    add_task(conn, "send_email")
    add_task(
        conn, "report", run_at=None or conn.execute("SELECT now() + interval '1 h'").fetchone()[0]
    )  # type: ignore[index]
    add_task(
        conn, "report", status="processing", started_at=conn.execute("SELECT now()").fetchone()[0]
    )  # type: ignore[index]
    add_failed(conn, "send_email")
    add_task(
        conn,
        "send_email",
        status="completed",
        completed_at=conn.execute("SELECT now()").fetchone()[0],
    )  # type: ignore[index]
    with client(dsn) as http:
        overview = http.get("/api/overview").json()
    assert overview["counts"] == _status_counts(dsn)
    assert overview["counts"]["pending"] == {"report": 1, "send_email": 1}
    assert len(overview["throughput"]) == 60
    assert sum(m["completed"] for m in overview["throughput"]) == 1
    assert sum(m["failed"] for m in overview["throughput"]) == 1
    assert overview["oldest_due_pending"]["type"] == "send_email"  # the report is not due yet
    assert {f["level"] for f in overview["health"]} == {"fail", "warn"}  # no worker; a failure


def test_tasks_api_lists_failed_tasks_with_id_type_status_attempts_and_error(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn, "send_email", error="SMTPRecipientsRefused: 550 no such user")
    add_task(conn, "send_email")
    with client(dsn) as http:
        rows = http.get("/api/tasks", params={"status": "failed", "type": "send_email"}).json()
    assert [(r["id"], r["type"], r["status"], r["attempts"], r["error"]) for r in rows] == [
        (str(failed), "send_email", "failed", 5, "SMTPRecipientsRefused: 550 no such user")
    ]


def test_pages_follow_the_link_header_through_ties_without_a_gap_or_a_repeat(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    # One transaction: every row has the same completed_at, as a group commit gives.
    conn.execute(
        "INSERT INTO tasks (type, status, attempts, error, completed_at) "
        "SELECT 'send_email', 'failed', 1, 'boom', now() FROM generate_series(1, 7)"
    )
    expected = [str(r[0]) for r in conn.execute(
        "SELECT id FROM tasks ORDER BY completed_at DESC, id DESC"
    ).fetchall()]  # fmt: skip
    seen: list[str] = []
    with client(dsn) as http:
        url: str | None = "/api/tasks?status=failed&limit=3"
        while url:
            response = http.get(url)
            assert response.status_code == 200, response.text
            seen += [r["id"] for r in response.json()]
            link = response.headers.get("link")
            url = link.split(">")[0].lstrip("<") if link else None
    assert seen == expected


def test_pending_pages_are_in_claim_order_across_priorities(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    for priority in (0, 5, 0, -3, 5, 0):
        add_task(conn, "report", priority=priority)
    expected = [str(r[0]) for r in conn.execute(
        "SELECT id FROM tasks ORDER BY priority DESC, run_at, id"
    ).fetchall()]  # fmt: skip
    seen: list[str] = []
    with client(dsn) as http:
        url: str | None = "/api/tasks?status=pending&limit=2"
        while url:
            response = http.get(url)
            seen += [r["id"] for r in response.json()]
            link = response.headers.get("link")
            url = link.split(">")[0].lstrip("<") if link else None
    assert seen == expected


def test_a_filter_matching_few_rows_gives_short_pages_that_go_on_to_every_match(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, completed_at) "
        "SELECT CASE WHEN g % 4 = 0 THEN 'rare' ELSE 'common' END, 'completed', "
        "       now() - g * interval '1 s' FROM generate_series(1, 20) AS g"
    )
    query = store.TaskQuery(status="completed", type="rare", limit=10)
    found, pages = [], 0
    while True:
        page = store.list_tasks(conn, query, budget=6)  # looks at 6 rows per page at most
        pages += 1
        assert page.looked_at <= 6
        found += [t["id"] for t in page.tasks]
        if page.next_cursor is None:
            break
        query = store.TaskQuery(status="completed", type="rare", limit=10, cursor=page.next_cursor)
    assert len(found) == 5 == len(set(found))
    assert pages == 4  # 20 rows, 6 per page


def test_actions_without_credentials_are_401_and_with_a_wrong_token_403(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn)
    pending = add_task(conn)
    with client(dsn) as http, capture_logs() as logs:
        for path in (f"/api/tasks/{failed}/retry", f"/api/tasks/{pending}/cancel"):
            anonymous = http.post(path)
            assert anonymous.status_code == 401, anonymous.text
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            wrong = http.post(path, headers={"Authorization": "Bearer not-the-token-at-all"})
            assert (wrong.status_code, wrong.json()) == (403, {"error": "wrong token"})
    assert (status_of(conn, failed), status_of(conn, pending)) == ("failed", "pending")
    assert [e["status"] for e in logs if e["event"] == "ui.action_refused"] == [401, 403] * 2


def test_retry_with_the_token_moves_a_failed_task_to_pending_and_logs_what_changed(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn, "send_email")
    with client(dsn) as http, capture_logs() as logs:
        response = http.post(
            f"/api/tasks/{failed}/retry", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 200, response.text
    assert response.json()["changed"] == {"send_email": 1}
    row = conn.execute(
        "SELECT status, attempts, error FROM tasks WHERE id = %s", (failed,)
    ).fetchone()
    assert row == ("pending", 0, None)
    (event,) = [e for e in logs if e["event"] == "ui.task_retried"]
    assert (event["task_id"], event["changed"], event["via"]) == (
        failed,
        {"send_email": 1},
        "bearer",
    )


def test_actions_follow_the_cli_rules_a_task_in_another_state_is_409_and_unchanged(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    completed = add_task(
        conn, status="completed", completed_at=conn.execute("SELECT now()").fetchone()[0]
    )  # type: ignore[index]
    processing = add_task(conn, status="processing")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client(dsn) as http:
        retried = http.post(f"/api/tasks/{completed}/retry", headers=auth)
        cancelled = http.post(f"/api/tasks/{processing}/cancel", headers=auth)
        missing = http.post(f"/api/tasks/{uuid.uuid4()}/retry", headers=auth)
    assert retried.status_code == 409
    assert "is completed, not failed" in retried.json()["message"]
    assert cancelled.status_code == 409
    assert "is processing, not pending" in cancelled.json()["message"]
    assert missing.status_code == 404
    assert (status_of(conn, completed), status_of(conn, processing)) == ("completed", "processing")


def test_cancel_with_the_token_cancels_a_pending_task(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    pending = add_task(conn, "report")
    with client(dsn) as http:
        response = http.post(
            f"/api/tasks/{pending}/cancel", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 200
    assert status_of(conn, pending) == "cancelled"


def test_a_read_only_dashboard_shows_no_buttons_and_refuses_every_action(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn)
    with client(dsn, token=None) as http:
        page = http.get(f"/tasks/{failed}")
        api = http.post(f"/api/tasks/{failed}/retry", headers={"Authorization": f"Bearer {TOKEN}"})
        form = http.post(f"/tasks/{failed}/retry", data={"csrf": "x"})
        bulk = http.post("/api/types/send_email/retry-failed")
    assert page.status_code == 200
    assert 'id="retry"' not in page.text
    assert "read-only" in page.text
    assert (api.status_code, form.status_code, bulk.status_code) == (403, 403, 403)
    assert "LISTENER_UI_TOKEN" in api.json()["error"]
    assert status_of(conn, failed) == "failed"


def test_a_logged_in_browser_needs_the_csrf_token_to_retry(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn)
    with client(dsn) as http:
        csrf = login(http)
        forged = http.post(f"/tasks/{failed}/retry", data={"note": "no csrf field"})
        wrong = http.post(f"/tasks/{failed}/retry", data={"csrf": "0" * 64})
        assert (forged.status_code, wrong.status_code) == (403, 403)
        assert status_of(conn, failed) == "failed"
        done = http.post(f"/tasks/{failed}/retry", data={"csrf": csrf})
        assert done.status_code == 303
        assert done.headers["location"].endswith(f"/tasks/{failed}")
        page = http.get(done.headers["location"])
    assert status_of(conn, failed) == "pending"
    assert "retried: back to pending" in page.text  # the flash message


def test_a_form_posted_from_another_site_is_refused_even_with_the_session(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn)
    with client(dsn) as http:
        csrf = login(http)
        response = http.post(
            f"/tasks/{failed}/retry",
            data={"csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
    assert response.status_code == 403
    assert status_of(conn, failed) == "failed"


def test_a_wrong_token_at_login_is_refused_and_repeated_failures_are_throttled(dsn: str) -> None:
    with client(dsn) as http, capture_logs() as logs:
        codes = []
        for _ in range(7):
            nonce = csrf_of(http.get("/login").text)
            codes.append(
                http.post("/login", data={"csrf": nonce, "token": "wrong" * 4}).status_code
            )
        nonce = csrf_of(http.get("/login").text)
        right = http.post("/login", data={"csrf": nonce, "token": TOKEN})
    assert codes == [403] * 5 + [429] * 2
    assert right.status_code == 429  # throttled for a minute, even with the right token
    assert sum(e["event"] == "ui.login_failed" for e in logs) == 5


def test_the_login_form_refuses_a_post_without_its_own_cookie(dsn: str) -> None:
    with client(dsn) as http:
        response = http.post("/login", data={"csrf": "made-up", "token": TOKEN})
    assert response.status_code == 403
    assert "listener_ui_session" not in response.headers.get("set-cookie", "")


def test_payload_values_are_masked_unless_revealed_and_revealing_needs_the_token(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    task = add_task(conn, payload=json.dumps({"to": "alice@example.com", "tags": [1, 2]}))
    with client(dsn) as http, capture_logs() as logs:
        page = http.get(f"/tasks/{task}")
        masked = http.get(f"/api/tasks/{task}").json()
        refused = http.get(f"/api/tasks/{task}?reveal=1")
        redirected = http.get(f"/tasks/{task}?reveal=1")
        revealed = http.get(
            f"/api/tasks/{task}?reveal=1", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert "alice@example.com" not in page.text
    assert "<code>to</code>" in page.text
    assert "payload" not in masked
    assert masked["payload_keys"] == [
        {"key": "tags", "kind": "array", "size": 2},
        {"key": "to", "kind": "string", "size": 17},
    ]
    assert refused.status_code == 401
    assert redirected.status_code == 303
    assert "/login?next=" in redirected.headers["location"]
    assert revealed.json()["payload"] == {"to": "alice@example.com", "tags": [1, 2]}
    assert [e["task_id"] for e in logs if e["event"] == "ui.payload_revealed"] == [task]


def test_retry_all_failed_of_a_type_counts_first_then_retries_only_that_type(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    emails = [add_failed(conn, "send_email") for _ in range(3)]
    other = add_failed(conn, "report")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with client(dsn) as http, capture_logs() as logs:
        dry = http.post("/api/types/send_email/retry-failed?dry_run=1", headers=auth).json()
        assert (dry["dry_run"], dry["total"]) == (True, 3)
        assert all(status_of(conn, t) == "failed" for t in emails)
        done = http.post("/api/types/send_email/retry-failed", headers=auth).json()
    assert done["changed"] == {"send_email": 3}
    assert [status_of(conn, t) for t in emails] == ["pending"] * 3
    assert status_of(conn, other) == "failed"
    (event,) = [e for e in logs if e["event"] == "ui.failed_type_retried"]
    assert (event["type"], event["total"]) == ("send_email", 3)


def test_the_retry_all_page_previews_and_its_form_retries(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn, "report")
    with client(dsn) as http:
        csrf = login(http)
        preview = http.get("/actions/retry-failed?type=report")
        assert "would retry 1 failed report task" in preview.text
        assert status_of(conn, failed) == "failed"
        done = http.post("/actions/retry-failed", data={"csrf": csrf, "type": "report"})
    assert done.status_code == 303
    assert status_of(conn, failed) == "pending"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=bogus", "status must be one of"),
        ("after=not-a-cursor", "'after' is not a cursor"),
        ("from=yesterday", "'from' must be an ISO time"),
        ("from=2026-01-01T00:00:00", "needs a time zone"),
        ("limit=0", "limit must be a whole number"),
        ("from=1h&to=2h", "'to' must be later than 'from'"),
    ],
)
def test_a_bad_parameter_is_a_400_with_one_line_saying_why(
    dsn: str, query: str, message: str
) -> None:
    with client(dsn) as http:
        api = http.get(f"/api/tasks?{query}")
        page = http.get(f"/tasks?{query}")
    assert api.status_code == 400
    assert message in api.json()["error"]
    assert "\n" not in api.json()["error"]
    assert page.status_code == 400
    assert message.replace("'", "&#39;") in page.text


def test_the_search_box_finds_a_task_by_id_or_by_dedupe_key(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    old = add_task(
        conn,
        dedupe_key="evt_42",
        status="completed",
        completed_at=conn.execute("SELECT now()").fetchone()[0],
    )  # type: ignore[index]
    new = add_task(conn, dedupe_key="evt_42")
    with client(dsn) as http:
        by_id = http.get(f"/tasks?q={old}")
        by_key = http.get("/tasks?q=evt_42")
        unknown = http.get(f"/tasks?q={uuid.uuid4()}")
    assert by_id.status_code == 303
    assert by_id.headers["location"].endswith(f"/tasks/{old}")
    assert by_key.text.index(str(new)[:8]) < by_key.text.index(str(old)[:8])  # unfinished first
    assert "No task has the id" in unknown.text


def test_a_database_that_does_not_answer_is_a_503_with_the_reason(unused_port: int) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{unused_port}/postgres"
    with client(dsn, pool_timeout_s=1.0) as http:
        api = http.get("/api/overview")
        page = http.get("/")
    assert api.status_code == 503
    assert api.json()["error"].startswith("no connection to postgres at 127.0.0.1:")
    assert page.status_code == 503
    assert "no connection to postgres" in page.text


def test_a_dashboard_without_actions_cannot_write_even_through_its_own_sessions(dsn: str) -> None:
    from listener.ui.database import Database

    database = Database(dsn, store.SessionLimits(read_only=True))
    database.open()
    try:
        with (
            database.pool.connection() as conn,
            pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
        ):
            conn.execute("INSERT INTO tasks (type) VALUES ('x')")
    finally:
        database.close()


@pytest.fixture
def unused_port() -> int:
    from tests.integration.engine_support import free_port

    return free_port()


def test_a_page_showing_a_revealed_payload_does_not_refresh_itself(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    task = add_task(conn, payload=json.dumps({"to": "alice@example.com"}))
    with client(dsn, token=None) as http:
        masked = http.get(f"/tasks/{task}")
        revealed = http.get(f"/tasks/{task}?reveal=1")
    assert 'data-poll-ms="3000"' in masked.text
    assert 'data-poll-ms="0"' in revealed.text  # live.js would fetch and log it again
    assert "alice@example.com" in revealed.text


def test_a_form_body_larger_than_a_form_needs_is_refused(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn)
    with client(dsn) as http:
        response = http.post(f"/tasks/{failed}/retry", data={"csrf": "x" * 20_000})
    assert response.status_code == 413
    assert status_of(conn, failed) == "failed"


def test_an_unexpected_error_is_a_500_page_and_a_logged_event(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault no real part can be made to produce on demand: a store function that
    # raises. The app's own handling of it is what is under test.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(store, "read_overview", broken)
    from starlette.testclient import TestClient

    from listener.ui.app import UiSettings, create_app

    app = create_app(UiSettings(dsn=dsn))
    with TestClient(app, raise_server_exceptions=False) as http, capture_logs() as logs:
        page = http.get("/")
        api = http.get("/api/overview")
    assert page.status_code == 500
    assert "unexpected error" in page.text
    assert api.json() == {"error": "unexpected error: the dashboard's log says more"}
    assert [e["path"] for e in logs if e["event"] == "ui.request_failed"] == ["/", "/api/overview"]


def test_the_pages_are_complete_without_javascript(dsn: str, conn: psycopg.Connection[Any]) -> None:
    failed = add_failed(conn, "send_email", error="SMTPRecipientsRefused: 550 no such user")
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency) "
        "VALUES ('w-1', 'host-a', 42, ARRAY['send_email'], 8)"
    )
    with client(dsn) as http:
        overview, listing, detail = (http.get(p).text for p in ("/", "/tasks", f"/tasks/{failed}"))
    # What a browser without JavaScript shows: the HTML as served, every number in it.
    assert 'data-status="failed" data-type="send_email"' in overview
    assert "w-1" in overview
    assert "host-a" in overview
    assert "Per minute, as a table" in overview  # the chart's numbers, readable as text
    assert "SMTPRecipientsRefused: 550 no such user" in listing
    assert str(failed)[:8] in listing
    assert "SMTPRecipientsRefused: 550 no such user" in detail
    assert "attempt 5 claimed" in detail


def test_the_dashboards_sessions_hold_no_transaction_and_have_short_timeouts(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    add_failed(conn)
    with client(dsn) as http:
        for path in ("/", "/tasks", "/tasks?status=completed", "/api/overview"):
            assert http.get(path).status_code == 200
        sessions = conn.execute(
            "SELECT state, xact_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'listener:ui'"
        ).fetchall()
        settings = http.app.state.ui.database.pool  # type: ignore[attr-defined]
        with settings.connection() as ui_conn:
            shown = [ui_conn.execute(f"SHOW {name}").fetchone()[0] for name in (
                "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout",
                "default_transaction_read_only", "TimeZone", "jit",
            )]  # fmt: skip
            assert ui_conn.autocommit
    assert sessions
    assert all(state == "idle" and xact_start is None for state, xact_start in sessions)
    assert shown == ["5s", "2s", "10s", "off", "UTC", "off"]  # actions enabled: not read-only


def test_wrong_bearer_tokens_are_throttled_like_failed_logins(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    failed = add_failed(conn)
    with client(dsn) as http:
        codes = [
            http.post(
                f"/api/tasks/{failed}/retry",
                headers={"Authorization": "Bearer guess-" + str(i) * 12},
            ).status_code
            for i in range(6)
        ]
        right = http.post(
            f"/api/tasks/{failed}/retry", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert codes == [403] * 5 + [429]
    assert right.status_code == 429  # for the rest of the minute, from this address
    assert right.headers["retry-after"] == "60"
    assert status_of(conn, failed) == "failed"
