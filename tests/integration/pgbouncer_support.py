"""A real PgBouncer on loopback in front of the test server, in the pool mode asked for.

PgBouncer refuses to run as root: as root, it runs as the user that can reach the
server (the owner of the socket folder, else `postgres`).
"""

from __future__ import annotations

import contextlib
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

from tests.integration.engine_support import free_port
from tests.tools import require_tool, unavailable


def _run_as(server_host: str) -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        return pwd.getpwuid(Path(server_host).stat().st_uid)
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root and there is no `postgres` user to run PgBouncer as")


def _write_config(folder: Path, admin_dsn: str, port: int, pool_mode: str) -> Path:
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
        f"pool_mode = {pool_mode}\n"
        "max_client_conn = 200\n"
        "default_pool_size = 50\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
    )
    return ini


@contextlib.contextmanager
def pgbouncer(admin_dsn: str, pool_mode: str) -> Iterator[Callable[[str], str]]:
    """Run PgBouncer; yields a function mapping a DSN to the same database through it."""
    binary = require_tool("pgbouncer")  # skips or fails as LISTENER_TEST_TOOLS says
    folder = Path(tempfile.mkdtemp(prefix="listener-pgbouncer-"))
    port = free_port()
    ini = _write_config(folder, admin_dsn, port, pool_mode)
    user = _run_as(str(conninfo_to_dict(admin_dsn).get("host") or ""))
    if user is not None:
        for path in (folder, *folder.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
    ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    proc = subprocess.Popen([binary, str(ini)], stderr=subprocess.PIPE, **ids)  # type: ignore[call-overload]
    try:
        _wait_until_up(proc, make_conninfo(admin_dsn, host="127.0.0.1", port=str(port)), folder)
        yield lambda dsn: make_conninfo(dsn, host="127.0.0.1", port=str(port))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_up(proc: subprocess.Popen[bytes], dsn: str, folder: Path) -> None:
    end = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            log = folder / "pgbouncer.log"
            text = log.read_text() if log.exists() else ""
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"pgbouncer exited: {stderr}{text}")
        try:
            with psycopg.connect(dsn, connect_timeout=2, prepare_threshold=None):
                return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)
