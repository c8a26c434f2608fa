"""Every sample name a worker exports, to check dashboards and alerts for typos."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from listener.metrics import Metrics, queue_families
from listener.store.gauges import FINISHED_STATUSES, QueueGauges

_METRIC = re.compile(r"\b(listener_[a-z_]+)\b")


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.claimed("t", 0.1)
    metrics.finished("t", "completed", 0.1)
    names = {s.name for family in registry.collect() for s in family.samples}
    read = QueueGauges(1, 1, 1.0, 0.0, dict.fromkeys(FINISHED_STATUSES, 1))
    names |= {s.name for family in queue_families(read) for s in family.samples}
    return names | {"listener_queue_stats_up"}


def referenced_names(promql: str) -> set[str]:
    return set(_METRIC.findall(promql))
