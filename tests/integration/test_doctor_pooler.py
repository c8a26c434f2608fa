"""Doctor detects a transaction-mode pooler by behaviour, through a real PgBouncer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from listener import cli, doctor
from listener.doctor import Level
from tests.integration.pgbouncer_support import pgbouncer

LISTEN_TITLE = "LISTEN/NOTIFY works on this connection"


@pytest.fixture(scope="module")
def via_pgbouncer(pg_admin_dsn: str) -> Iterator[Callable[[str], str]]:
    """A PgBouncer in transaction mode in front of the test server; maps a DSN to the
    same database reached through it."""
    with pgbouncer(pg_admin_dsn, "transaction") as through:
        yield through


def test_listen_through_a_transaction_mode_pooler_fails_with_the_fix(
    dsn: str, via_pgbouncer: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["doctor", "--dsn", via_pgbouncer(dsn)])

    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0].startswith(f"✗ {LISTEN_TITLE} — a notification sent from a second ")
    assert "transaction-mode pooler" in lines[0]
    assert "direct database connection, or a session-mode pooler (port 5432" in lines[0]


def test_listen_on_the_direct_connection_to_the_same_database_passes(
    dsn: str, via_pgbouncer: Callable[[str], str]
) -> None:
    through_pooler = doctor.diagnose(via_pgbouncer(dsn))[0]
    direct = doctor.diagnose(dsn)[0]
    assert (through_pooler.title, through_pooler.level) == (LISTEN_TITLE, Level.FAIL)
    assert (direct.title, direct.level) == (LISTEN_TITLE, Level.OK)


def test_other_checks_still_run_through_the_pooler(
    dsn: str, via_pgbouncer: Callable[[str], str]
) -> None:
    findings = doctor.diagnose(via_pgbouncer(dsn))
    assert [f.level for f in findings if f.title.startswith("claim index")] == [Level.OK]
    assert not [f for f in findings if "could not check" in f.title]
