"""Every Prometheus metric of the worker, built on a registry passed in.

Labels are task types and outcomes only: never a task id or a payload value.
"""

from __future__ import annotations

import bisect
import itertools
import math
import platform
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import psycopg
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from listener import __version__
from listener.errors import DatabaseUnavailableError
from listener.store import gauges

OUTCOMES = ("completed", "retried", "failed", "released", "rescued")
# Why a due task was left pending by the claim (listener.limits).
THROTTLE_REASONS = ("global_concurrency", "rate_limit")

# Sub-millisecond to minutes: pickup is ~1 ms with NOTIFY, up to the poll
# interval without it, and far longer when a backlog builds.
PICKUP_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 300, 1800,
)  # fmt: skip
DURATION_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
)  # fmt: skip


class Metrics:
    """The worker's instruments. One instance per worker, on the registry given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.tasks_claimed = Counter(
            "listener_tasks_claimed", "Tasks claimed by this worker.", ["type"],
            registry=registry,
        )  # fmt: skip
        self.tasks_finished = Counter(
            "listener_tasks_finished",
            "Task attempts finished, by outcome: completed, retried, failed, released, rescued.",
            ["type", "outcome"], registry=registry,
        )  # fmt: skip
        self.task_duration = TypeHistogram(
            "listener_task_duration_seconds", "Handler run time.", DURATION_BUCKETS_S, registry
        )
        self.pickup_delay = TypeHistogram(
            "listener_task_pickup_delay_seconds",
            "From when a task became due (created or run_at) to its claim, database clock.",
            PICKUP_BUCKETS_S, registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "listener_tasks_in_flight", "Tasks this worker is running now.", registry=registry
        )
        self.notifications = Counter(
            "listener_notifications", "NOTIFY wake-ups received.", registry=registry
        )
        self.db_reconnects = Counter(
            "listener_db_reconnects", "Reconnect attempts of the LISTEN connection.",
            registry=registry,
        )  # fmt: skip
        self.listening = Gauge(
            "listener_listening", "1 while the LISTEN connection is up.", registry=registry
        )
        self.claims = Counter(
            "listener_claims",
            "Claim statements sent, by result: tasks (claimed some) or empty.",
            ["result"], registry=registry,
        )  # fmt: skip
        self._claims_with_tasks = self.claims.labels("tasks")
        self._claims_empty = self.claims.labels("empty")
        self.loop_errors = Counter(
            "listener_loop_errors",
            "Failures of the worker's service loops (each was logged, backed off and retried).",
            ["loop", "error"], registry=registry,
        )  # fmt: skip
        self.leases_lost = Counter(
            "listener_leases_lost",
            "Running tasks whose lease the database had given to someone else.",
            ["type"], registry=registry,
        )  # fmt: skip
        self.abandoned_threads = Gauge(
            "listener_handler_threads_abandoned",
            "Sync handler threads still running past their timeout (each holds its slot).",
            registry=registry,
        )  # fmt: skip
        self.oldest_running = Gauge(
            "listener_task_oldest_running_seconds",
            "How long the longest-running handler in this worker has run.",
            registry=registry,
        )  # fmt: skip
        self.outcomes_pending = Gauge(
            "listener_outcomes_pending",
            "Finished attempts whose outcome is not written yet (kept leased meanwhile).",
            registry=registry,
        )  # fmt: skip
        # The wake-up protocol (listener/watcher.py, docs/notify.md).
        self.watching = Gauge(
            "listener_watching",
            "1 while this worker watches its types (their producers skip NOTIFY).",
            registry=registry,
        )
        self.watch_releases = Counter(
            "listener_watch_releases",
            "Times this worker stopped watching: idle, stopping, lost (its session).",
            ["reason"], registry=registry,
        )  # fmt: skip
        for reason in ("idle", "stopping", "lost"):
            self.watch_releases.labels(reason)
        self.watch_handoffs = Counter(
            "listener_watch_handoffs",
            "NOTIFYs this watcher sent because its slots stayed full.",
            registry=registry,
        )
        self.watch_final_claimed = Counter(
            "listener_watch_final_claimed",
            "Tasks found by the claim that follows a stopped watch's gate pass.",
            registry=registry,
        )
        self.build_info = Gauge(
            "listener_build_info", "Versions of listener and what it runs on.",
            ["version", "python", "psycopg"], registry=registry,
        )  # fmt: skip
        self.build_info.labels(__version__, platform.python_version(), psycopg.__version__).set(1)
        self.tasks_throttled = Counter(
            "listener_tasks_throttled",
            "Claims that left due tasks of this type pending because of a fleet-wide limit, "
            "by reason: global_concurrency, rate_limit.",
            ["type", "reason"], registry=registry,
        )  # fmt: skip
        self.schedule_next_run_timestamp = Gauge(
            "listener_schedule_next_run_timestamp_seconds",
            "When this worker's schedule next fires (Unix time, database clock).",
            ["type"], registry=registry,
        )  # fmt: skip
        self.schedule_runs_enqueued = Counter(
            "listener_schedule_runs_enqueued",
            "Scheduled instants this worker enqueued (each instant is enqueued once, "
            "fleet-wide: sum over workers).",
            ["type"], registry=registry,
        )  # fmt: skip
        self.schedule_runs_skipped = Counter(
            "listener_schedule_runs_skipped",
            "Times missed scheduled runs (more than one interval late) were skipped.",
            ["type"], registry=registry,
        )  # fmt: skip
        self.scheduler_errors = Counter(
            "listener_scheduler_errors",
            "Scheduler passes that failed (database errors); the scheduler backs off and "
            "goes on.",
            registry=registry,
        )  # fmt: skip
        self._claimed_children: dict[str, Counter] = {}
        self._finished_children: dict[tuple[str, str], Counter] = {}

    # labels() costs more than the increment itself: keep each child once.
    def claimed(self, task_type: str, pickup_delay_s: float) -> None:
        """One task claimed, ``pickup_delay_s`` after it became due."""
        self.claimed_batch(task_type, 1)
        self.picked_up(task_type, pickup_delay_s)

    def claimed_batch(self, task_type: str, count: int) -> None:
        counter = self._claimed_children.get(task_type)
        if counter is None:
            counter = self._claimed_children[task_type] = self.tasks_claimed.labels(task_type)
        counter.inc(count)

    def picked_up(self, task_type: str, pickup_delay_s: float) -> None:
        self.pickup_delay.observe(task_type, max(pickup_delay_s, 0.0))

    def count_in_flight(
        self,
        in_flight: Callable[[], float],
        oldest_running_s: Callable[[], float],
        outcomes_pending: Callable[[], float],
    ) -> None:
        """Read the in-flight gauges from the worker at scrape time (no per-task cost)."""
        self.in_flight.set_function(in_flight)
        self.oldest_running.set_function(oldest_running_s)
        self.outcomes_pending.set_function(outcomes_pending)

    def claimed_rows(self, count: int) -> None:
        """One claim statement came back with ``count`` tasks."""
        (self._claims_with_tasks if count else self._claims_empty).inc()

    def loop_failed(self, loop: str, error: str) -> None:
        self.loop_errors.labels(loop, error).inc()

    def finished(self, task_type: str, outcome: str, duration_s: float | None = None) -> None:
        self.finished_batch(task_type, outcome, 1)
        if duration_s is not None:
            self.task_duration.observe(task_type, duration_s)

    def finished_batch(self, task_type: str, outcome: str, count: int) -> None:
        """``count`` attempts of ``task_type`` ended with ``outcome``."""
        key = (task_type, outcome)
        counter = self._finished_children.get(key)
        if counter is None:
            counter = self._finished_children[key] = self.tasks_finished.labels(*key)
        counter.inc(count)

    def throttled(self, task_type: str, reason: str, count: int = 1) -> None:
        """``count`` due tasks of ``task_type`` left pending by a limit (THROTTLE_REASONS)."""
        if reason not in THROTTLE_REASONS:
            raise ValueError(f"unknown throttle reason {reason!r}")
        self.tasks_throttled.labels(task_type, reason).inc(count)

    def schedule_next_run(self, task_type: str, timestamp_s: float) -> None:
        self.schedule_next_run_timestamp.labels(task_type).set(timestamp_s)

    def schedule_enqueued(self, task_type: str) -> None:
        self.schedule_runs_enqueued.labels(task_type).inc()

    def schedule_skipped(self, task_type: str) -> None:
        self.schedule_runs_skipped.labels(task_type).inc()

    def scheduler_failed(self) -> None:
        self.scheduler_errors.inc()


class TypeHistogram(Collector):
    """A histogram by task type, cheap enough to observe once per task.

    prometheus_client's Histogram takes two locks and scans the buckets in Python
    on every observation, which costs more than running a no-op task. Here an
    observation is a bisect and two additions on the event loop's thread; the
    scrape copies the counts (the GIL keeps each copy whole) and exposes the same
    samples: ``_bucket{le}``, ``_count`` and ``_sum``, labelled by ``type``.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.upper_bounds = (*sorted(buckets), math.inf)
        self._le = [repr(float(b)) if b < math.inf else "+Inf" for b in self.upper_bounds]
        self._by_type: dict[str, list[float]] = {}  # per bucket (not cumulative), then the sum
        registry.register(self)

    def observe(self, task_type: str, value: float) -> None:
        counts = self._by_type.get(task_type)
        if counts is None:
            counts = self._by_type[task_type] = [0.0] * (len(self.upper_bounds) + 1)
        counts[bisect.bisect_left(self.upper_bounds, value)] += 1
        counts[-1] += value

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=["type"])
        for task_type, counts in list(self._by_type.items()):
            snapshot = counts[:]
            cumulative = itertools.accumulate(snapshot[:-1])
            family.add_metric(
                [task_type], list(zip(self._le, cumulative, strict=True)), sum_value=snapshot[-1]
            )
        yield family

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=["type"])]


class QueueCollector(Collector):
    """Queue gauges read from the database at scrape time, on a connection of its own.

    Connects lazily, gives every statement ``timeout_s``, reconnects after a failure.
    When the database is unreachable the scrape still succeeds: the queue samples are
    left out and ``listener_queue_stats_up`` is 0.
    """

    def __init__(self, dsn: str, timeout_s: float = 2.0) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()  # scrapes may run on several server threads
        self._was_up = True
        self._log = structlog.get_logger("listener.metrics")

    def describe(self) -> Iterable[Metric]:
        return []  # don't query the database when the collector is registered

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            read = self._read()
        up = GaugeMetricFamily(
            "listener_queue_stats_up",
            "1 if the last scrape read the queue gauges from the database.",
        )
        up.add_metric([], 1 if read is not None else 0)
        yield up
        if read is not None:
            yield from queue_families(read)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _read(self) -> gauges.QueueGauges | None:
        try:
            read = self._query()
        except (psycopg.Error, DatabaseUnavailableError) as exc:
            self._drop_connection()
            if self._was_up:  # one line per outage, not one per scrape
                self._log.warning("metrics.queue_stats_failed", error=_one_line(exc))
            self._was_up = False
            return None
        if not self._was_up:
            self._log.info("metrics.queue_stats_recovered")
        self._was_up = True
        return read

    def _query(self) -> gauges.QueueGauges:
        """Read on the kept connection; if that one broke, once more on a fresh one."""
        if self._conn is not None and not self._conn.closed:
            try:
                return gauges.read_queue_gauges(self._conn)
            except psycopg.OperationalError:
                if not self._conn.broken:  # e.g. statement timeout: don't wait twice
                    raise
                self._drop_connection()  # server restarted or backend terminated
        self._conn = gauges.connect(self._dsn, self._timeout_s)
        return gauges.read_queue_gauges(self._conn)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def queue_families(read: gauges.QueueGauges) -> Iterable[Metric]:
    depth = GaugeMetricFamily(
        "listener_queue_depth",
        "Tasks pending (including scheduled) and processing, counted exactly.",
        labels=["status"],
    )
    depth.add_metric(["pending"], read.pending)
    depth.add_metric(["processing"], read.processing)
    yield depth
    finished = GaugeMetricFamily(
        "listener_queue_finished_rows_estimate",
        "Finished rows per status, estimated from planner statistics (last ANALYZE).",
        labels=["status"],
    )
    for status, estimate in read.finished_estimate.items():
        finished.add_metric([status], estimate)
    yield finished
    yield GaugeMetricFamily(
        "listener_queue_oldest_pending_age_seconds",
        "Age of the oldest due pending task (0 when none is due), database clock.",
        value=read.oldest_pending_age_s,
    )
    yield GaugeMetricFamily(
        "listener_notification_queue_usage",
        "Fraction of PostgreSQL's NOTIFY queue in use (pg_notification_queue_usage()).",
        value=read.notification_queue_usage,
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def register_queue_collector(
    registry: CollectorRegistry, dsn: str, timeout_s: float = 2.0
) -> QueueCollector:
    """Add the database-backed queue gauges to ``registry``; close() it at shutdown."""
    collector = QueueCollector(dsn, timeout_s)
    registry.register(collector)
    return collector
