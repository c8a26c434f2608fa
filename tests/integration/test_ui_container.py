"""The image serves the dashboard: `listener ui` in the container, its health check,
and a clean exit on `podman stop`. Heavy like test_observability_container.py (it
builds the image): runs with LISTENER_TEST_CONTAINER=1, from .ci/container-test.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import pytest

from tests.integration.engine_support import free_port, wait_until
from tests.integration.test_observability_container import (  # noqa: F401 - fixtures
    built_image,
    podman,
    podman_env,
    tcp_dsn,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),  # builds the image: minutes, more the first time
    pytest.mark.skipif(
        os.environ.get("LISTENER_TEST_CONTAINER") != "1",
        reason="builds and runs the container image (heavy): set LISTENER_TEST_CONTAINER=1 "
        "or run .ci/container-test",
    ),
]


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - loopback
            return int(response.status)
    except OSError:
        return None


def test_the_image_serves_the_dashboard_is_healthy_and_stops_cleanly(
    podman_env: dict[str, str],  # noqa: F811 - the fixtures imported above
    built_image: str,  # noqa: F811
    tcp_dsn: str,  # noqa: F811
) -> None:
    port = free_port()
    name = f"listener-ui-test-{uuid.uuid4().hex[:8]}"
    podman(
        podman_env, "run", "-d", "--name", name, "--network", "host",
        "-e", f"DATABASE_URL={tcp_dsn}", "-e", f"LISTENER_UI_PORT={port}",
        built_image, "ui", "--host", "127.0.0.1", "--port", str(port), "--log-format", "json",
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _get(f"{base}/healthz") == 200, timeout_s=60)
        with urllib.request.urlopen(f"{base}/api/overview", timeout=5) as response:  # noqa: S310
            assert "counts" in json.load(response)
        assert _get(f"{base}/static/vendor/uPlot.iife.min.js") == 200  # shipped in the wheel
        podman(podman_env, "exec", name, "python3", "-m", "listener.ui.healthcheck")
        podman(podman_env, "stop", "-t", "20", name)
        state = podman(podman_env, "inspect", "--format", "{{.State.ExitCode}}", name)
        assert state == "0", podman(podman_env, "logs", name)
    finally:
        podman(podman_env, "rm", "-f", name, check=False)
