"""What every item receives: where to run, how big, how many runs; what it returns."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Figure, Target


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: the issue's numbers, or tiny ones for the CI smoke run."""

    raw_tasks: int
    raw_batches: tuple[int, ...]
    raw_connections: tuple[int, ...]
    burndown_tasks: int
    burndown_concurrency: tuple[int, ...]
    steady_seconds: float
    latency_tasks: int
    latency_rate: float
    poll_interval_s: float
    insert_seconds: float
    insert_producers: tuple[int, ...]
    scale_finished: int
    scale_probes: int
    rss_tasks: tuple[int, int]
    peer_jobs: int
    procrastinate_jobs: int  # procrastinate runs ~100x slower: fewer jobs, same rate
    defaults_tasks: int
    defaults_head: int  # the first tasks of a large backlog, and a backlog of that size
    defaults_backlog: int
    best_concurrency: tuple[int, ...]
    best_pgqueuer_batches: tuple[int, ...]
    best_procrastinate: tuple[int, ...]
    best_oban_limits: tuple[int, ...]
    backlog_pending: tuple[int, ...]  # the first one is the reference
    backlog_middrain: int
    backlog_other_type: int
    backlog_probes: int
    commits_tasks: int
    logging_tasks: int
    logging_concurrency: tuple[int, ...]


FULL = Sizes(
    raw_tasks=50_000,
    raw_batches=(100, 1000, 5000),
    raw_connections=(1,),
    burndown_tasks=50_000,
    burndown_concurrency=(200, 1000, 2000),
    steady_seconds=10.0,
    latency_tasks=2_000,
    latency_rate=200.0,
    poll_interval_s=2.0,
    insert_seconds=3.0,
    insert_producers=(1, 4, 16, 64),
    scale_finished=2_000_000,
    scale_probes=2_000,
    rss_tasks=(50_000, 200_000),
    peer_jobs=20_000,
    procrastinate_jobs=2_000,
    defaults_tasks=20_000,
    defaults_head=5_000,
    defaults_backlog=200_000,
    best_concurrency=(100, 250, 500, 1000),
    best_pgqueuer_batches=(10, 100, 1000),
    best_procrastinate=(1, 10),
    best_oban_limits=(10, 100, 1000),
    backlog_pending=(1_000, 20_000, 100_000, 1_000_000),
    backlog_middrain=40_000,
    backlog_other_type=200_000,
    backlog_probes=100,
    commits_tasks=10_000,
    logging_tasks=20_000,
    logging_concurrency=(10, 100),
)

QUICK = Sizes(
    raw_tasks=300,
    raw_batches=(100,),
    raw_connections=(1,),
    burndown_tasks=300,
    burndown_concurrency=(50,),
    steady_seconds=0.5,
    latency_tasks=20,
    latency_rate=200.0,
    poll_interval_s=0.2,
    insert_seconds=0.1,
    insert_producers=(1, 4),
    scale_finished=2_000,
    scale_probes=20,
    rss_tasks=(200, 400),
    peer_jobs=100,
    procrastinate_jobs=50,
    defaults_tasks=200,
    defaults_head=50,
    defaults_backlog=500,
    best_concurrency=(50,),
    best_pgqueuer_batches=(10,),
    best_procrastinate=(1,),
    best_oban_limits=(10,),
    backlog_pending=(100, 2_000),
    backlog_middrain=400,
    backlog_other_type=500,
    backlog_probes=5,
    commits_tasks=100,
    logging_tasks=200,
    logging_concurrency=(10,),
)


@dataclass(frozen=True)
class Context:
    admin_dsn: str
    sizes: Sizes
    runs: int
    quick: bool

    def say(self, line: str) -> None:
        """Progress on stderr, so stdout stays the result table."""
        print(f"bench: {line}", file=sys.stderr, flush=True)


@dataclass
class ItemResult:
    """One item's figures, targets and notes; status ok, skipped or failed."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)  # e.g. query plans, as text
    status: str = "ok"

    def figure(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "figures": {f.key: f.to_json() for f in self.figures},
            "targets": [t.to_json() for t in self.targets],
            "notes": self.notes,
            "details": self.details,
        }
