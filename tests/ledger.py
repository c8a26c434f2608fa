"""The effects ledger: handler runs recorded by worker processes, read back by tests.

Each worker process appends to the file named by LISTENER_TEST_LEDGER: ``start ID TIME
PID`` when a handler starts and ``end ID TIME PID`` when it ends, however it ends.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from listener import Task

Runs = dict[str, list[tuple[float, float]]]  # task id -> (start, end) of each run


def record(what: str, task: Task) -> None:
    path = os.environ.get("LISTENER_TEST_LEDGER")
    if path:
        with open(path, "a", encoding="utf-8") as ledger:
            ledger.write(f"{what} {task.id} {time.time():.6f} {os.getpid()}\n")


def read_runs(paths: list[Path], killed: dict[int, float] | None = None) -> Runs:
    """Every run, per task; a run cut by SIGKILL (its pid in ``killed``) ends at the kill."""
    killed = killed or {}
    runs: Runs = collections.defaultdict(list)
    for path in (p for p in paths if p.exists()):
        open_runs: dict[str, tuple[float, int]] = {}
        for line in path.read_text().splitlines():
            what, task_id, at, pid = line.split()
            if what == "start":
                open_runs[task_id] = (float(at), int(pid))
            else:
                start, _ = open_runs.pop(task_id)
                runs[task_id].append((start, float(at)))
        for task_id, (start, pid) in open_runs.items():
            assert pid in killed, f"a run of {task_id} never ended in a worker that lived"
            runs[task_id].append((start, killed[pid]))
    return runs


def most_at_once(runs: Runs) -> int:
    """The largest number of runs (of any tasks) that overlapped at one instant."""
    edges = sorted(
        (at, step) for spans in runs.values() for s, e in spans for at, step in ((s, 1), (e, -1))
    )
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak
