"""The built wheel ships the SQL, and a `pip install` outside the checkout can migrate.

Slow (a wheel build and a fresh venv, ~20 s), so it runs once per CI run: in the
PostgreSQL 15 pass (TEST_DATABASE_URL is set) or when LISTENER_TEST_PACKAGING=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.integration.support import cli_env, run_cli

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(
        not (
            os.environ.get("LISTENER_TEST_PACKAGING") == "1" or os.environ.get("TEST_DATABASE_URL")
        ),
        reason="slow packaging test runs once per CI run: set LISTENER_TEST_PACKAGING=1 "
        "(CI runs it in the TEST_DATABASE_URL pass)",
    ),
    pytest.mark.timeout(900),  # builds a wheel and installs it in a fresh venv
]


def _run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=cli_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_wheel_installed_outside_the_checkout_ships_the_sql_and_migrates(
    tmp_path: Path, empty_dsn: str
) -> None:
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, ROOT, cwd=tmp_path)
    (wheel,) = wheels.glob("listener-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(n.startswith("listener/sql/migrations/0001_") and n.endswith(".sql") for n in names)
    assert {"listener/sql/queries/core.sql", "listener/py.typed"} <= names
    assert "listener/sql/queries/engine.sql" in names
    # The dashboard's templates, static files and vendored chart library.
    assert {
        "listener/ui/templates/base.html",
        "listener/ui/templates/overview.html",
        "listener/ui/static/live.js",
        "listener/ui/static/vendor/uPlot.iife.min.js",
        "listener/ui/static/vendor/uPlot.LICENSE",
        "listener/sql/queries/ui.sql",
    } <= names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # our pip installs into it: skips ensurepip
    python = env_dir / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel, cwd=tmp_path)
    installed = _run(
        python,
        "-c",
        "import listener.sqlfiles as s; print(s.sql_dir())",
        cwd=tmp_path,
    ).strip()
    assert installed.startswith(str(env_dir))  # the wheel's copy, not the checkout's

    script = env_dir / "bin" / "listener"
    migrated = run_cli("migrate", "--dsn", empty_dsn, cwd=tmp_path, executable=script)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("applied 0001_")
    verified = run_cli("verify", "--dsn", empty_dsn, cwd=tmp_path, executable=script)
    assert verified.returncode == 0, verified.stdout

    # Installed without the ui extra, the dashboard says in one line what to install.
    no_extra = run_cli("ui", "--dsn", empty_dsn, cwd=tmp_path, executable=script)
    assert no_extra.returncode == 1
    assert no_extra.stderr.splitlines() == [
        "listener: error: the dashboard needs the ui extra (starlette, jinja2, uvicorn "
        "missing): pip install 'listener[ui]'"
    ]
