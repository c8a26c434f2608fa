"""Build the listener image with podman, offline: local Debian base + host wheelhouse.

No container registry is reachable here (see /work/shared/ENVIRONMENT.md), so the
Dockerfile's BASE_IMAGE is a debootstrap'd Debian with Python, imported once and
reused, and WHEELHOUSE is a folder of wheels downloaded on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.tools import ROOT

BASE_IMAGE = "localhost/debian-python:bookworm"
TEST_IMAGE = "localhost/listener:test"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""


def podman_env(workdir: Path) -> dict[str, str]:
    """Environment for podman: runc as runtime (crun fails here), sane ulimits."""
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def sh(*args: str, env: dict[str, str], timeout_s: float = 600) -> str:
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def ensure_base_image(env: dict[str, str]) -> None:
    """Import a minimal Debian with python3 as BASE_IMAGE, unless it is already there."""
    exists = subprocess.run(["podman", "image", "exists", BASE_IMAGE], env=env, check=False)
    if exists.returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="listener-rootfs-") as rootfs:
        sh(
            "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            "bookworm", rootfs, "http://deb.debian.org/debian", env=env,
        )  # fmt: skip
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", BASE_IMAGE], stdin=tar.stdout, env=env,
            capture_output=True, check=False,
        )  # fmt: skip
        tar.wait()
        assert imported.returncode == 0, imported.stderr.decode()


def build_wheelhouse(wheels: Path, env: dict[str, str]) -> None:
    """listener's wheel and every dependency's (the ui extra's too: the image serves
    the dashboard), for the base image's Python (3.11)."""
    shutil.rmtree(wheels, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    sh(*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT), env=env)
    (wheel,) = wheels.glob("listener-*.whl")
    sh(
        *pip, "download", "--only-binary=:all:", "--python-version", "3.11",
        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
        "-d", str(wheels), f"{wheel}[ui]", env=env,
    )  # fmt: skip


def build_image(env: dict[str, str]) -> str:
    """Build TEST_IMAGE from the checkout's Dockerfile; returns its tag."""
    ensure_base_image(env)
    wheels = ROOT / "wheels" / "test-image"  # inside the build context; ignored by git
    build_wheelhouse(wheels, env)
    try:
        sh(
            "podman", "build", "--format", "docker",  # docker format keeps HEALTHCHECK
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
            "--build-arg", "WHEELHOUSE=wheels/test-image",
            "-t", TEST_IMAGE, str(ROOT), env=env,
        )  # fmt: skip
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    return TEST_IMAGE
