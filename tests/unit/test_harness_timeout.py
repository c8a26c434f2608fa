"""The suite's own harness: a hung test fails after a timeout instead of hanging CI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.tools import ROOT


def test_the_suite_has_a_per_test_timeout_from_its_test_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(
        dep.startswith("pytest-timeout")
        for dep in project["project"]["optional-dependencies"]["test"]
    )
    assert 0 < project["tool"]["pytest"]["ini_options"]["timeout"] <= 300


def test_a_hung_test_fails_under_the_projects_configuration(tmp_path: Path) -> None:
    hung = tmp_path / "test_hung.py"
    hung.write_text("import time\n\n\ndef test_hangs():\n    time.sleep(3600)\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT),
         "-p", "no:cacheprovider", "-o", "timeout=1", str(hung)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Timeout" in done.stdout
    assert "1 failed" in done.stdout
