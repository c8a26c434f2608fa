"""The benchmark's commit counts are exact: what a subject commits, none of the harness's."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from bench import env, meters, raw, workers


@pytest.fixture
def scratch(pg_admin_dsn: str) -> Iterator[str]:
    with env.scratch_database(pg_admin_dsn, "meter") as dsn:
        yield dsn


def _connection_commits(admin: str, dsn: str) -> int:
    """What opening and closing one connection commits on this server version."""
    meter = meters.Meter(admin, dsn)
    meter.start()
    psycopg.connect(dsn, autocommit=True).close()
    return meter.stop(0, 0).commits


def test_meter_counts_each_autocommit_statement_once(pg_admin_dsn: str, scratch: str) -> None:
    per_connection = _connection_commits(pg_admin_dsn, scratch)
    meter = meters.Meter(pg_admin_dsn, scratch)
    meter.start()
    with psycopg.connect(scratch, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(25):
            conn.execute("SELECT 1")
    assert meter.stop(0, 0).commits == 25 + per_connection


def test_meter_leaves_out_the_harness_polls(pg_admin_dsn: str, scratch: str) -> None:
    per_connection = _connection_commits(pg_admin_dsn, scratch)
    env.run_sql(scratch, "bench_add_pending", {"type": env.NOOP_TYPE, "n": 30})
    meter = meters.Meter(pg_admin_dsn, scratch)
    meter.start()
    done = raw.claim_complete_loop(scratch, 10, "bench-test", "bench_claim_ids")
    polls = workers.wait_until_drained(scratch, [])
    counts = meter.stop(polls, per_connection)
    assert done == 30
    # The raw loop: its connection, the first claim, then one transaction per batch
    # (complete k + claim k+1, pipelined), the last one claiming nothing.
    assert counts.commits == per_connection + 1 + 3
