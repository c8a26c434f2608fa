"""Where `listener run` serves /metrics when nobody says: loopback on a plain host."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.engine_support import WorkerProcess, free_port, wait_until

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the image asks for, on purpose


def listening_addresses(pid: int, port: int) -> list[str]:
    return [
        c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]


@pytest.fixture
def port() -> int:
    return free_port()


@contextlib.contextmanager
def started(dsn: str, port: int, env: dict[str, str] | None = None) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(dsn, "--metrics-port", str(port), env=env)
    try:
        worker.wait_started()
        yield worker
    finally:
        worker.stop()


def test_run_serves_metrics_on_loopback_only_by_default(dsn: str, port: int) -> None:
    with started(dsn, port) as worker:
        assert wait_until(lambda: listening_addresses(worker.proc.pid, port)) == ["127.0.0.1"]


def test_the_environment_chooses_the_bind_address_as_the_image_does(dsn: str, port: int) -> None:
    with started(dsn, port, env={"LISTENER_METRICS_HOST": ALL_INTERFACES}) as worker:
        assert wait_until(lambda: listening_addresses(worker.proc.pid, port)) == [ALL_INTERFACES]
