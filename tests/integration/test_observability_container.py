"""The real image, built with podman and run against the host's PostgreSQL.

Heavy (builds an image: ~1 min, plus ~45 s for the Debian base the first time), so
it runs only with LISTENER_TEST_CONTAINER=1: CI runs it once, from .ci/container-test.
The container uses host networking to reach the test database on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict

from tests.deploy import image
from tests.integration.engine_support import free_port, wait_until
from tests.tools import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),  # builds the image: minutes, and the Debian base the first time
    pytest.mark.skipif(
        os.environ.get("LISTENER_TEST_CONTAINER") != "1",
        reason="builds and runs the container image (heavy): set LISTENER_TEST_CONTAINER=1 "
        "or run .ci/container-test",
    ),
]


HEALTH_FORMAT = "{{.State.Health.Status}}"


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return image.podman_env(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def built_image(podman_env: dict[str, str]) -> str:
    return image.build_image(podman_env)


@pytest.fixture
def tcp_dsn(dsn: str) -> str:
    """The test database's DSN, which the container reaches over host networking."""
    host = str(conninfo_to_dict(dsn).get("host") or "")
    if not host or host.startswith("/"):
        pytest.fail("the container test needs a TCP database: set TEST_DATABASE_URL")
    return dsn


def podman(env: dict[str, str], *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout.strip()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class Container:
    """A detached worker container; removed at the end whatever happened."""

    def __init__(self, env: dict[str, str], tag: str, dsn: str, port: int) -> None:
        self.env, self.port = env, port
        self.name = f"listener-test-{uuid.uuid4().hex[:8]}"
        podman(
            env, "run", "-d", "--name", self.name, "--network", "host",
            "-v", f"{ROOT / 'tests'}:/app/tests:ro", "-e", "PYTHONPATH=/app",
            "-e", f"DATABASE_URL={dsn}", "-e", f"LISTENER_METRICS_PORT={port}",
            tag, "run", "--metrics-host", "127.0.0.1", "--metrics-port", str(port),
            "--log-format", "json", "--handlers", "tests.observability_handlers",
        )  # fmt: skip

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        return podman(self.env, "logs", self.name, check=False)

    def remove(self) -> None:
        podman(self.env, "rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def container(podman_env: dict[str, str], built_image: str, tcp_dsn: str) -> Iterator[Container]:
    running = Container(podman_env, built_image, tcp_dsn, free_port())
    try:
        yield running
    finally:
        running.remove()


def insert(conn: psycopg.Connection[Any], kind: str, payload: dict[str, Any]) -> Any:
    row = conn.execute(
        "INSERT INTO tasks (type, payload) VALUES (%s, %s) RETURNING id",
        (kind, json.dumps(payload)),
    ).fetchone()
    assert row is not None
    return row[0]


def status_of(conn: psycopg.Connection[Any], task_id: Any) -> str:
    row = conn.execute("SELECT status FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_migrate_is_a_one_shot_command(
    podman_env: dict[str, str], built_image: str, pg_admin_dsn: str, empty_dsn: str
) -> None:
    if str(conninfo_to_dict(empty_dsn).get("host") or "/").startswith("/"):
        pytest.fail("the container test needs a TCP database: set TEST_DATABASE_URL")
    out = podman(
        podman_env, "run", "--rm", "--no-healthcheck", "--network", "host",
        "-e", f"DATABASE_URL={empty_dsn}", built_image, "migrate",
    )  # fmt: skip
    assert "applied 0001_tasks_and_transactions" in out
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.tasks') IS NOT NULL").fetchone() == (True,)


def test_container_serves_metrics_is_healthy_runs_a_task_and_drains_on_sigterm(
    conn: psycopg.Connection[Any], container: Container
) -> None:
    wait_until(lambda: http_get(container.url("/healthz"))[0] == 200, timeout_s=30)
    podman(container.env, "healthcheck", "run", container.name)  # the image's HEALTHCHECK
    health = podman(container.env, "inspect", container.name, "--format", HEALTH_FORMAT)
    assert health == "healthy"
    wait_until(lambda: http_get(container.url("/readyz"))[0] == 200, timeout_s=15)

    done = insert(conn, "obs_ok", {"email": "c.d@example.net"})
    wait_until(lambda: status_of(conn, done) == "completed", timeout_s=15)
    status, body = http_get(container.url("/metrics"))
    assert status == 200
    samples = {
        (s.name, s.labels.get("outcome")): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }
    assert samples[("listener_tasks_finished_total", "completed")] == 1
    assert samples[("listener_listening", None)] == 1

    running = insert(conn, "obs_slow", {"s": 2})
    # In flight in the worker, not only marked processing: a signal between the
    # claim's commit and its reply would (correctly) release the task instead.
    in_flight = "\nlistener_tasks_in_flight 1.0\n"
    wait_until(lambda: in_flight in http_get(container.url("/metrics"))[1], timeout_s=15)
    podman(container.env, "stop", "-t", "30", container.name)  # SIGTERM, then waits
    exit_code = podman(container.env, "inspect", container.name, "--format", "{{.State.ExitCode}}")
    assert exit_code == "0", container.logs()
    assert status_of(conn, running) == "completed"  # drained, not abandoned
    processing = conn.execute("SELECT count(*) FROM tasks WHERE status = 'processing'")
    assert processing.fetchone() == (0,)
    assert "example.net" not in container.logs()


def test_container_runs_the_worker_as_pid_1_and_not_as_root(container: Container) -> None:
    wait_until(lambda: http_get(container.url("/healthz"))[0] == 200, timeout_s=30)
    top = podman(container.env, "top", container.name, "pid", "user", "args")
    pid_1 = next(line for line in top.splitlines()[1:] if line.split()[0] == "1")
    assert pid_1.split()[1] != "root"
    assert "/opt/listener/bin/listener run" in pid_1
