"""The LISTEN connection reports each change of state as it happens (for /readyz)."""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from listener.config import NOTIFY_CHANNEL
from listener.metrics import Metrics
from listener.notifier import Notifier
from tests.integration.engine_support import eventually

pytestmark = pytest.mark.anyio


async def test_a_killed_listen_session_is_reported_down_then_up_again(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    changes: list[bool] = []
    metrics = Metrics(CollectorRegistry())
    notifier = Notifier(dsn, NOTIFY_CHANNEL, lambda: None, metrics, on_listening=changes.append)
    async with anyio.create_task_group() as tg:
        await tg.start(notifier.run)
        assert changes == [True]
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'listener:listen' AND datname = current_database()"
        ).fetchall()
        assert killed == [(True,)]
        await eventually(lambda: changes == [True, False, True], timeout_s=15)
        assert metrics.registry.get_sample_value("listener_listening") == 1.0
        tg.cancel_scope.cancel()
    assert changes == [True, False, True, False]  # and down when it stops
