"""Every Prometheus metric of the worker, built on a registry passed in.

Labels are task types and outcomes only: never a task id or a payload value.
"""

from __future__ import annotations

import platform

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from listener import __version__

OUTCOMES = ("completed", "retried", "failed", "released", "rescued")

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
        self.task_duration = Histogram(
            "listener_task_duration_seconds", "Handler run time.", ["type"],
            buckets=DURATION_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.pickup_delay = Histogram(
            "listener_task_pickup_delay_seconds",
            "From when a task became due (created or run_at) to its claim, database clock.",
            ["type"], buckets=PICKUP_BUCKETS_S, registry=registry,
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
        self.build_info = Gauge(
            "listener_build_info", "Versions of listener and what it runs on.",
            ["version", "python", "psycopg"], registry=registry,
        )  # fmt: skip
        self.build_info.labels(__version__, platform.python_version(), psycopg.__version__).set(1)
        self._claimed_children: dict[str, tuple[Counter, Histogram]] = {}
        self._finished_children: dict[tuple[str, str], Counter] = {}
        self._duration_children: dict[str, Histogram] = {}

    # labels() costs more than the increment itself: keep each child once.
    def claimed(self, task_type: str, pickup_delay_s: float) -> None:
        children = self._claimed_children.get(task_type)
        if children is None:
            children = (
                self.tasks_claimed.labels(task_type), self.pickup_delay.labels(task_type)
            )  # fmt: skip
            self._claimed_children[task_type] = children
        children[0].inc()
        children[1].observe(max(pickup_delay_s, 0.0))

    def finished(self, task_type: str, outcome: str, duration_s: float | None = None) -> None:
        key = (task_type, outcome)
        counter = self._finished_children.get(key)
        if counter is None:
            counter = self._finished_children[key] = self.tasks_finished.labels(*key)
        counter.inc()
        if duration_s is not None:
            duration = self._duration_children.get(task_type)
            if duration is None:
                duration = self._duration_children[task_type] = self.task_duration.labels(task_type)
            duration.observe(duration_s)
