"""Upgrading a running system to the wake-up protocol loses no wake-up on the way.

Producers insert in rounds throughout (each round must be picked up within seconds
by workers that poll every 60 s) while: a worker of the previous release runs on the
previous schema; migration 0010 is applied under it; a worker of this release joins
and watches; and leaves again. The previous release's worker is this one with its
watcher never told of a claim: it listens and claims, and takes no watch lock.
"""

from __future__ import annotations

import uuid

import anyio
import psycopg
import pytest

from listener import migrations
from listener.sqlfiles import query
from listener.watcher import NO_WATCH
from tests.integration.engine_support import running_worker
from tests.integration.wake_support import Rounds, noop_registry, race, watch_idle_cycles

pytestmark = pytest.mark.anyio

NEW = "notify_protocol"


def _migrate_up_to_before(dsn: str, name: str) -> None:
    """Apply the migrations older than ``name``, as `listener migrate` would have."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for migration in migrations.migrations():
            if migration.name == name:
                return
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    query("record_migration"),
                    {"version": migration.version, "name": migration.name,
                     "checksum": migration.checksum},
                )  # fmt: skip
    raise AssertionError(f"no migration named {name}")


async def test_migrating_and_rolling_workers_under_load_loses_no_wake_up(empty_dsn: str) -> None:
    dsn = empty_dsn
    _migrate_up_to_before(dsn, NEW)
    seen: set[uuid.UUID] = set()
    registry = noop_registry("t", seen=seen)
    rounds = Rounds(dsn, 6)
    for thread in rounds.threads:
        thread.start()
    try:
        async with running_worker(dsn, registry, poll_interval_s=60.0) as old:
            assert old.dispatcher is not None
            old.dispatcher.watch = NO_WATCH  # the previous release: no watch locks
            await race(None, rounds, seen, 2.0)
            async with anyio.create_task_group() as tg:

                async def migrate_meanwhile() -> None:
                    await anyio.sleep(0.5)
                    with psycopg.connect(dsn, autocommit=True) as conn:
                        applied = await anyio.to_thread.run_sync(migrations.migrate, conn)
                    assert NEW in [m.name for m in applied]

                tg.start_soon(migrate_meanwhile)
                await race(None, rounds, seen, 2.0)
            async with running_worker(dsn, registry, poll_interval_s=60.0) as new:
                await race(new, rounds, seen, 3.0)
                assert watch_idle_cycles(new) > 0  # it did watch, and producers skipped
            await race(None, rounds, seen, 2.0)
    finally:
        await anyio.to_thread.run_sync(rounds.close)
    with psycopg.connect(dsn, autocommit=True) as conn:
        pending = conn.execute("SELECT count(*) FROM tasks WHERE status <> 'completed'")
        assert pending.fetchone() == (0,)
    assert set(rounds.committed) <= seen
