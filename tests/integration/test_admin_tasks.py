"""`listener tasks`: filters, JSON for scripts, payloads only on request."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from listener import cli

SECRET = "hunter2-card-4242"


@pytest.fixture
def seeded(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(
        "INSERT INTO tasks (type, status, payload, created_at, error) VALUES "
        "('send_email', 'pending',   %(p)s, now() - interval '1 minute', NULL),"
        "('send_email', 'failed',    %(p)s, now() - interval '2 hours', "
        " E'SMTPError: 550 mailbox unavailable\\nTraceback ...'),"
        "('resize',     'completed', %(p)s, now() - interval '3 days', NULL)",
        {"p": json.dumps({"card": SECRET})},
    )
    return conn


def run_json(capsys: pytest.CaptureFixture[str], dsn: str, *argv: str) -> list[dict[str, Any]]:
    assert cli.main(["tasks", *argv, "--json", "--dsn", dsn]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


def test_tasks_lists_newest_first_without_payloads(
    seeded: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["tasks", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "TYPE", "TRIES", "AGE", "ERROR"]
    assert [line.split()[1] for line in lines[1:]] == ["pending", "failed", "completed"]
    assert lines[2].endswith("SMTPError: 550 mailbox unavailable")  # first line of the error
    assert SECRET not in out


def test_tasks_json_filters_by_status_and_type(
    seeded: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run_json(
        capsys, dsn, "--status", "failed", "--status", "pending", "--type", "send_email"
    )
    assert [(r["type"], r["status"]) for r in rows] == [
        ("send_email", "pending"),
        ("send_email", "failed"),
    ]
    assert "payload" not in rows[0]
    assert SECRET not in json.dumps(rows)


def test_tasks_filters_by_age(
    seeded: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    older = run_json(capsys, dsn, "--older-than", "1h")
    window = run_json(capsys, dsn, "--older-than", "10m", "--newer-than", "1d")
    assert [r["status"] for r in older] == ["failed", "completed"]
    assert [r["status"] for r in window] == ["failed"]


def test_tasks_shows_payloads_only_when_asked(
    seeded: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = run_json(capsys, dsn, "--payload", "--limit", "1")
    assert [r["payload"] for r in rows] == [{"card": SECRET}]
    assert cli.main(["tasks", "--payload", "--limit", "1", "--dsn", dsn]) == 0
    assert f'payload: {{"card": "{SECRET}"}}' in capsys.readouterr().out


def test_tasks_says_when_the_limit_cut_the_list(
    seeded: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["tasks", "--limit", "2", "--dsn", dsn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[-1] == "(showing the newest 2; use --limit to see more)"


def test_tasks_with_no_match_says_so(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["tasks", "--status", "cancelled", "--dsn", dsn]) == 0
    assert capsys.readouterr().out == "no tasks match\n"
