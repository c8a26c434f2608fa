"""Doctor detects a transaction-mode pooler by behaviour, through a real PgBouncer."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener import cli, doctor
from listener.doctor import Level
from tests.integration.engine_support import free_port
from tests.tools import require_tool, unavailable

LISTEN_TITLE = "LISTEN/NOTIFY works on this connection"


def _run_as(server_host: str) -> pwd.struct_passwd | None:
    """PgBouncer refuses to run as root: as root, run it as the user that can reach
    the server (the owner of the socket folder, else `postgres`)."""
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        return pwd.getpwuid(Path(server_host).stat().st_uid)
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no `postgres` user to run PgBouncer as")


def _write_config(folder: Path, admin_dsn: str, port: int) -> Path:
    server = conninfo_to_dict(admin_dsn)
    target = f"host={server.get('host') or '127.0.0.1'} port={server.get('port') or 5432}"
    if server.get("password"):
        target += f" password={server['password']}"
    user = server.get("user") or "postgres"
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    ini = folder / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    return ini


@pytest.fixture(scope="module")
def via_pgbouncer(pg_admin_dsn: str) -> Iterator[Callable[[str], str]]:
    """A PgBouncer in transaction mode in front of the test server; maps a DSN to the
    same database reached through it."""
    binary = require_tool("pgbouncer")  # skips or fails as LISTENER_TEST_TOOLS says
    folder = Path(tempfile.mkdtemp(prefix="listener-pgbouncer-"))
    port = free_port()
    ini = _write_config(folder, pg_admin_dsn, port)
    user = _run_as(str(conninfo_to_dict(pg_admin_dsn).get("host") or ""))
    if user is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    proc = subprocess.Popen([binary, str(ini)], stderr=subprocess.PIPE, **ids)  # type: ignore[call-overload]
    bouncer = make_conninfo(pg_admin_dsn, host="127.0.0.1", port=str(port))
    try:
        _wait_until_up(proc, bouncer, folder)
        yield lambda dsn: make_conninfo(dsn, host="127.0.0.1", port=str(port))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_up(proc: subprocess.Popen[bytes], dsn: str, folder: Path) -> None:
    end = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log = (
                (folder / "pgbouncer.log").read_text()
                if (folder / "pgbouncer.log").exists()
                else ""
            )
            pytest.fail(
                f"pgbouncer exited: {proc.stderr.read().decode() if proc.stderr else ''}{log}"
            )
        try:
            with psycopg.connect(dsn, connect_timeout=2, prepare_threshold=None):
                return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


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
