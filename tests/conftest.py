"""Shared test settings. Database fixtures live in tests/integration/conftest.py."""

from __future__ import annotations

import os

import pytest

from tests.integration.support import is_developer_setting


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _without_developer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process handlers see only the settings a test sets (subprocesses: see
    tests/integration/support.py, subprocess_environ)."""
    for name in [n for n in os.environ if is_developer_setting(n)]:
        monkeypatch.delenv(name)
