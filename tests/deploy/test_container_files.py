"""Dockerfile (hadolint) and docker-compose.yml (compose's own validator), and how they fit.

Building and running the image is tests/deploy/test_container_image.py (heavy, run once).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import ROOT, require_tool

# What an operator sets (compose refuses to start without it); never the real one here.
COMPOSE_ENV = {"GRAFANA_ADMIN_PASSWORD": "test-only-grafana-password"}


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=cwd, check=False, env=env
    )


def compose_env(**settings: str) -> dict[str, str]:
    """This environment without the developer's GRAFANA_*/POSTGRES_* settings, plus ``settings``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GRAFANA_", "POSTGRES_"))}
    return {**keep, **settings}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml as compose itself resolves it."""
    binary = require_tool("docker-compose")
    result = run(
        binary, "-f", "docker-compose.yml", "config", "--format", "json",
        env=compose_env(**COMPOSE_ENV),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_dockerfile_passes_hadolint() -> None:
    result = run(require_tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_shell_form_entrypoint(tmp_path: Path) -> None:
    bad = (
        (ROOT / "Dockerfile")
        .read_text()
        .replace('ENTRYPOINT ["listener"]', "ENTRYPOINT listener run")
    )
    (tmp_path / "Dockerfile").write_text(bad)
    result = run(require_tool("hadolint"), str(tmp_path / "Dockerfile"))
    assert result.returncode != 0
    assert "DL3025" in result.stdout  # "Use arguments JSON notation for CMD and ENTRYPOINT"


def test_compose_file_is_valid() -> None:
    result = run(
        require_tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q",
        env=compose_env(**COMPOSE_ENV),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_grafana_password() -> None:
    result = run(
        require_tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q",
        env=compose_env(),
    )  # fmt: skip
    assert result.returncode != 0
    assert "set GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_grafana_takes_its_admin_password_from_the_operator(compose: dict[str, Any]) -> None:
    environment = compose["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == COMPOSE_ENV["GRAFANA_ADMIN_PASSWORD"]


WEB_UIS = ["grafana", "prometheus", "ui"]


@pytest.mark.parametrize("service", WEB_UIS)
def test_web_uis_are_published_on_loopback_only(compose: dict[str, Any], service: str) -> None:
    ports = compose["services"][service]["ports"]
    assert ports
    assert {port.get("host_ip") for port in ports} == {"127.0.0.1"}


def test_only_the_web_uis_publish_a_port(compose: dict[str, Any]) -> None:
    published = sorted(name for name, svc in compose["services"].items() if svc.get("ports"))
    assert published == WEB_UIS


def test_worker_is_scalable_and_starts_after_the_one_shot_migration(
    compose: dict[str, Any],
) -> None:
    worker, migrate = compose["services"]["worker"], compose["services"]["migrate"]
    assert "ports" not in worker  # a host port would make --scale worker=2 collide
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert worker["image"] == migrate["image"]


def test_prometheus_scrapes_every_worker_replica_on_the_metrics_port(
    compose: dict[str, Any],
) -> None:
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"]
    assert discovery["port"] == 9108
    assert "worker" in compose["services"]
    assert compose["services"]["worker"]["expose"] == ["9108"]
    mounts = {v["target"]: v["source"] for v in compose["services"]["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == str(ROOT / "prometheus.yml")
    assert mounts["/etc/prometheus/alerts.yml"] == str(ROOT / "alerts.yml")


def test_grafana_mounts_provisioning_and_the_dashboards_where_the_provider_looks(
    compose: dict[str, Any],
) -> None:
    provider_file = ROOT / "deploy/grafana/provisioning/dashboards/listener.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    mounts = {v["target"]: v["source"] for v in compose["services"]["grafana"]["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == str(ROOT / "deploy/grafana/provisioning")
    assert mounts[provider["options"]["path"]] == str(ROOT / "deploy/grafana/dashboards")


def test_dockerfile_runs_the_worker_as_pid_1_non_root_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert lines.count("ARG BASE_IMAGE=python:3.12-slim") == 1
    assert sum(line.startswith("FROM ") for line in lines) == 2  # build stage + runtime
    assert 'ENTRYPOINT ["listener"]' in lines  # exec form: no shell in between
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert any(line.startswith("HEALTHCHECK ") for line in lines)


def test_the_image_serves_metrics_on_every_interface_whatever_its_command() -> None:
    """A container's port is reached through its own interface; loopback (the default of
    a plain `listener run`) would hide it. ENV, not CMD: it survives `args:` overrides."""
    text = (ROOT / "Dockerfile").read_text()
    env_block = text[text.index("\nENV PATH=") : text.index("\nWORKDIR /app")]
    assert "LISTENER_METRICS_HOST=0.0.0.0" in env_block
