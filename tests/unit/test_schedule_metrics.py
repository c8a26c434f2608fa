"""The limit and schedule metrics: names and labels as the README's reference says."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from listener.metrics import Metrics


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_throttled_tasks_are_counted_by_type_and_reason() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.throttled("generate_care_plan", "global_concurrency")
    metrics.throttled("generate_care_plan", "rate_limit", 3)
    name = "listener_tasks_throttled_total"
    assert _sample(registry, name, type="generate_care_plan", reason="global_concurrency") == 1
    assert _sample(registry, name, type="generate_care_plan", reason="rate_limit") == 3


def test_a_throttle_reason_outside_the_two_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown throttle reason 'quota'"):
        Metrics(CollectorRegistry()).throttled("t", "quota")


def test_schedule_gauge_and_counters() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.schedule_next_run("nightly_digest", 1_800_000_000.0)
    metrics.schedule_enqueued("nightly_digest")
    metrics.schedule_skipped("nightly_digest")
    metrics.scheduler_failed()
    assert _sample(
        registry, "listener_schedule_next_run_timestamp_seconds", type="nightly_digest"
    ) == (1_800_000_000.0)
    assert _sample(registry, "listener_schedule_runs_enqueued_total", type="nightly_digest") == 1
    assert _sample(registry, "listener_schedule_runs_skipped_total", type="nightly_digest") == 1
    assert _sample(registry, "listener_scheduler_errors_total") == 1
