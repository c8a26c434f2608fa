"""Claim latency probes and the claim's plan as it runs inside its PL/pgSQL function.

A probe is one claim of ``limit`` tasks with the worker's own claim statement
(``claim_batch`` of sql/queries/engine.sql, which calls ``listener.claim_batch``),
inside a transaction that is rolled back: the table keeps its backlog, so every
probe meets the same state. Only the claim statement's round trip is timed (no
BEGIN, no ROLLBACK, no commit). One session per probe series, warmed up first: a
PL/pgSQL function plans its statement on first use and may switch to a generic plan
after five calls, as a long-running worker's session does.

The plan is the function's inner UPDATE as executed, from ``auto_explain`` loaded into
that one session (``log_nested_statements``, ``log_analyze``, ``log_buffers``) and
sent back as a NOTICE; nothing is changed on the server. Where auto_explain cannot be
loaded (not a superuser, or not installed), no plan is captured and the figures say so.
"""

from __future__ import annotations

import importlib
import statistics
import time
import uuid
from typing import Any

import psycopg

from bench import env
from listener.registry import default_registry
from listener.sqlfiles import query
from listener.store.engine import ClaimSpec

importlib.import_module("bench.noop_handlers")  # registers the benchmark worker's handlers

WARMUP = 6
BUDGET_S = 10.0
LEASE_S = 30.0  # listener run's default --lease-s


def worker_types() -> list[str]:
    """The types ``listener run --handlers bench.noop_handlers`` claims: a worker always
    passes its registered types to the claim (never NULL, unlike the raw and bare loops)."""
    return default_registry.types()


def worker_claim_spec(
    types: list[str] | None = None, limits: tuple[int, int, int] | None = None
) -> ClaimSpec:
    """The claim's spec for ``types`` (the worker's by default), each with the default
    attempt limit and ``limits`` = (global_concurrency, rate count, rate window s) or none."""
    types = types or worker_types()
    n = len(types)
    concurrency, rate, window = limits if limits else (None, None, None)
    return ClaimSpec(types, [5] * n, [concurrency] * n, [rate] * n, [window] * n)


class ClaimProbe:
    """A session that times claims and can show their plan."""

    def __init__(
        self,
        dsn: str,
        limit: int,
        types: list[str] | None = None,
        *,
        limits: tuple[int, int, int] | None = None,
    ) -> None:
        """``limits``: (global_concurrency, rate count, rate window s) on every type."""
        self._conn = env.connect(dsn)
        spec = worker_claim_spec(types, limits)
        self._args = {
            "worker_id": "bench-probe", "token": uuid.uuid4(), "limit": limit,
            "lease_s": LEASE_S, **spec.params(),
        }  # fmt: skip
        self._claim = query("claim_batch")
        self._notices: list[str] = []
        try:
            self._conn.execute(query("bench_load_auto_explain"))
            self.explain_error: str | None = None
        except psycopg.Error as exc:
            self.explain_error = str(exc).strip().splitlines()[0]
        self._conn.add_notice_handler(lambda d: self._notices.append(d.message_primary or ""))

    def __enter__(self) -> ClaimProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def once_ms(self) -> float:
        with self._conn.transaction(force_rollback=True):
            t0 = time.perf_counter()
            self._conn.execute(self._claim, self._args).fetchall()
            return (time.perf_counter() - t0) * 1000

    def median_ms(self, probes: int) -> float:
        """Median of up to ``probes`` timed claims after the warm-up (budget BUDGET_S)."""
        budget_end = time.monotonic() + BUDGET_S
        for _ in range(WARMUP):
            self.once_ms()
        timings = [self.once_ms()]
        while len(timings) < probes and time.monotonic() < budget_end:
            timings.append(self.once_ms())
        return statistics.median(timings)

    def plan(self) -> str:
        """EXPLAIN (ANALYZE, BUFFERS) of the claim's inner statement, run once more."""
        if self.explain_error is not None:
            return f"not captured: auto_explain could not be loaded ({self.explain_error})"
        self._notices.clear()
        self._conn.execute(query("bench_auto_explain_on"))
        try:
            self.once_ms()
        finally:
            self._conn.execute(query("bench_auto_explain_off"))
        inner = [n for n in self._notices if "Query Text:" in n and "UPDATE" in n.upper()]
        # (The claim's UPDATE: the outlook's queries of a short claim come after it.)
        return _tidy(inner[-1]) if inner else "not captured: no plan came back"


def _tidy(notice: str) -> str:
    """auto_explain's message: 'duration: ... plan:' then the query text and the plan."""
    return notice.split("plan:", 1)[-1].strip("\n")


def counts(dsn: str) -> dict[str, Any]:
    """Live and dead tuples of the tasks table, from the statistics collector."""
    with env.connect(dsn) as conn:
        row = conn.execute(query("bench_tasks_tuples")).fetchone()
    names = ("n_live_tup", "n_dead_tup", "last_analyze", "reltuples")
    return dict(zip(names, row or (), strict=False))
