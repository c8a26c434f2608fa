"""Gating for tests that drive external tools (promtool, prometheus, hadolint, ...).

LISTENER_TEST_TOOLS decides, so CI runs these tests once and never skips them there:
  unset -> run if the tool is installed, else skip saying which tool is missing;
  "1"   -> the tool is required: a missing tool fails the test (CI sets this);
  "0"   -> skip (CI's other run, which runs the same checks already).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = "LISTENER_TEST_TOOLS"


def require_tool(name: str) -> str:
    """The tool's path, or skip / fail according to LISTENER_TEST_TOOLS."""
    mode = os.environ.get(ENV)
    if mode == "0":
        pytest.skip(f"{ENV}=0: tool tests run in the other CI run")
    venv_bin = Path(sys.executable).parent / name  # hadolint, docker-compose: pip-installed
    found = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (run .ci/install-tools, or pip install -e '.[test]')"
    if mode == "1":
        pytest.fail(f"{ENV}=1 but {message}")
    pytest.skip(message)


def unavailable(reason: str) -> NoReturn:
    """What a tool test needs is missing: fail under LISTENER_TEST_TOOLS=1, else skip."""
    if os.environ.get(ENV) == "1":
        pytest.fail(f"{ENV}=1 but {reason}")
    pytest.skip(reason)
