"""The `listener` command run as a real subprocess against a real database."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from tests.integration.support import cli_env, run_cli


def _one_line_error(result: subprocess.CompletedProcess[str], exit_code: int = 1) -> str:
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    return result.stderr.strip()


def test_enqueue_adds_a_pending_task_and_prints_its_id(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    result = run_cli("enqueue", "send_email", "--payload", '{"to": "a@b.c"}', "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    task_id = uuid.UUID(result.stdout.strip())
    row = conn.execute(
        "SELECT type, payload, status, priority FROM tasks WHERE id = %s", (task_id,)
    )
    assert row.fetchone() == ("send_email", {"to": "a@b.c"}, "pending", 0)


def test_enqueue_with_run_at_delay_and_priority(dsn: str, conn: psycopg.Connection[Any]) -> None:
    result = run_cli("enqueue", "report", "--run-at", "10m", "--priority", "7", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    row = conn.execute(
        "SELECT payload, priority, run_at BETWEEN now() + interval '9 min' "
        "AND now() + interval '11 min' FROM tasks"
    ).fetchone()
    assert row == ({}, 7, True)


def test_enqueue_with_an_iso_run_at(dsn: str, conn: psycopg.Connection[Any]) -> None:
    result = run_cli("enqueue", "t", "--run-at", "2030-01-01T09:00:00+00:00", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    row = conn.execute("SELECT run_at = '2030-01-01T09:00:00Z' FROM tasks").fetchone()
    assert row == (True,)


def test_enqueue_with_a_dedupe_key_twice_prints_the_same_id(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    runs = [run_cli("enqueue", "t", "--dedupe-key", "k1", "--dsn", dsn) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    first, second = (r.stdout.strip() for r in runs)
    assert first == second
    assert conn.execute("SELECT id::text FROM tasks").fetchall() == [(first,)]


def test_enqueue_uses_database_url_when_no_dsn_flag(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    result = run_cli("enqueue", "from_env", env=cli_env(DATABASE_URL=dsn))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no embedded-server announcement
    assert conn.execute("SELECT type FROM tasks").fetchall() == [("from_env",)]


def test_unreachable_server_is_one_line_naming_host_port_and_reason() -> None:
    result = run_cli("migrate", "--dsn", "postgresql://postgres@127.0.0.1:1/x")
    assert _one_line_error(result) == (
        "listener: error: cannot connect to postgres at 127.0.0.1:1: connection refused"
    )


@pytest.mark.parametrize("command", ["verify", "status", "enqueue"])
def test_every_database_command_reports_an_unreachable_server_in_one_line(command: str) -> None:
    args = [command, "t"] if command == "enqueue" else [command]
    result = run_cli(*args, env=cli_env(DATABASE_URL="postgresql://postgres@127.0.0.1:1/x"))
    assert _one_line_error(result).endswith("127.0.0.1:1: connection refused")


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        # libpq quotes the token it could not decode: here, the password itself.
        ("postgresql://app:pw%zz@127.0.0.1/x", "invalid percent-encoded token: [redacted]"),
        # ... or the whole URI.
        ("postgresql://app:s3cr3t-pw@[::1/x", "end of string reached when looking for"),
        ("host=127.0.0.1 password=s3cr3t-pw bogus=1", 'invalid connection option "bogus"'),
    ],
)
def test_a_malformed_dsn_is_one_line_without_its_password(dsn: str, reason: str) -> None:
    result = run_cli("verify", "--dsn", dsn)
    line = _one_line_error(result)
    assert line.startswith("listener: error: invalid database DSN: ")
    assert reason in line
    assert "s3cr3t" not in line
    assert "pw%zz" not in line


def test_missing_database_is_one_line(pg_admin_dsn: str) -> None:
    missing = psycopg.conninfo.make_conninfo(pg_admin_dsn, dbname="listener_no_such_db_x")
    result = run_cli("verify", "--dsn", missing)
    assert _one_line_error(result).endswith('database "listener_no_such_db_x" does not exist')


def test_bad_json_payload_is_a_one_line_usage_error(dsn: str) -> None:
    result = run_cli("enqueue", "t", "--payload", "{oops", "--dsn", dsn)
    assert "--payload is not valid JSON" in _one_line_error(result, exit_code=2)


def test_non_object_payload_is_a_one_line_usage_error(dsn: str) -> None:
    result = run_cli("enqueue", "t", "--payload", "[1]", "--dsn", dsn)
    assert "must be a JSON object, got list" in _one_line_error(result, exit_code=2)


def test_invalid_type_is_one_line_and_writes_nothing(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    result = run_cli("enqueue", "no spaces", "--dsn", dsn)
    assert "task type 'no spaces' has characters outside" in _one_line_error(result)
    assert conn.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_out_of_range_priority_is_one_line(dsn: str) -> None:
    result = run_cli("enqueue", "t", "--priority", "99999", "--dsn", dsn)
    assert "priority must be between -32768 and 32767" in _one_line_error(result)


def test_naive_run_at_is_one_line_usage_error(dsn: str) -> None:
    result = run_cli("enqueue", "t", "--run-at", "2030-01-01T09:00:00", "--dsn", dsn)
    assert "needs a time zone" in _one_line_error(result, exit_code=2)


def test_status_on_an_unmigrated_database_says_to_migrate(empty_dsn: str) -> None:
    result = run_cli("status", "--dsn", empty_dsn)
    line = _one_line_error(result)
    assert 'relation "public.tasks" does not exist' in line
    assert "listener migrate" in line


def _seed_status(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, run_at) VALUES "
        "('send_email', 'pending', now() - interval '90 seconds'),"
        "('send_email', 'pending', now()),"
        "('resize', 'pending', now() - interval '10 seconds'),"
        "('resize', 'processing', now()),"
        "('later', 'pending', now() + interval '1 hour')"
    )
    conn.execute(
        "INSERT INTO tasks (type, status, completed_at) VALUES "
        "('send_email', 'completed', now()), ('send_email', 'failed', now()),"
        "('ancient', 'completed', now() - interval '3 days'),"
        # Finished over an hour ago: outside the window finished work is counted in.
        "('send_email', 'completed', now() - interval '61 minutes')"
    )
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency) "
        "VALUES ('w1', 'host-a', 123, ARRAY['send_email'], 4)"
    )
    conn.execute(
        "INSERT INTO listener.workers (id, hostname, pid, types, concurrency, last_seen_at) "
        "VALUES ('dead', 'host-b', 9, ARRAY['resize'], 4, now() - interval '1 hour')"
    )


def test_status_json_counts_per_status_and_type_with_age_and_unhandled_types(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    _seed_status(conn)
    result = run_cli("status", "--json", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == [
        {"status": "completed", "type": "send_email", "count": 1},
        {"status": "failed", "type": "send_email", "count": 1},
        {"status": "pending", "type": "later", "count": 1},
        {"status": "pending", "type": "resize", "count": 1},
        {"status": "pending", "type": "send_email", "count": 2},
        {"status": "processing", "type": "resize", "count": 1},
    ]
    assert 85 <= report["oldest_pending_age_s"] < 300
    # Only the live worker counts: nobody handles resize or later.
    assert report["unhandled_pending"] == [
        {"type": "later", "count": 1},
        {"type": "resize", "count": 1},
    ]
    assert [w["id"] for w in report["workers"]] == ["w1"]


def test_status_text_shows_the_same_facts(dsn: str, conn: psycopg.Connection[Any]) -> None:
    _seed_status(conn)
    result = run_cli("status", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "tasks (pending and processing: all; finished: last 60 min)"
    assert any(line.split() == ["pending", "send_email", "2"] for line in lines)
    assert any(line.startswith("oldest due pending task: ") for line in lines)
    assert "live workers: 1" in lines
    assert "  w1 on host-a pid 123: send_email" in lines
    assert lines[-3:] == ["pending types no live worker handles:", "  later: 1", "  resize: 1"]


def test_status_of_an_empty_queue(dsn: str) -> None:
    result = run_cli("status", "--json", "--dsn", dsn)
    assert json.loads(result.stdout) == {
        "counts": [],
        "oldest_pending_age_s": None,
        "unhandled_pending": [],
        "workers": [],
        "limits": [],
        "schedules": [],
    }


def test_python_dash_m_listener_cli_works_like_the_console_script(dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "listener.cli", "verify", "--dsn", dsn],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ migrations current" in result.stdout


def test_version_flag() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("listener ")
