"""What the pages and the JSON API show, built from the store's rows: one shape for both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from listener.store import ui as store
from listener.store.status import FINISHED_WINDOW_S

OLDEST_DUE_WARN_S = 300.0  # ListenerOldestPendingTaskTooOld fires at 5 min too
NONE = "\N{EN DASH}"  # shown where a value is missing


def overview(ov: store.Overview) -> dict[str, Any]:
    """The overview as JSON-ready values (also what the template renders)."""
    status = ov.status
    counts: dict[str, dict[str, int]] = {}
    for state, task_type, n in status.counts:
        counts.setdefault(state, {})[task_type] = n
    throughput = _minutes(ov.throughput, ov.now)
    workers = [_worker(w, ov.now) for w in status.workers]
    oldest = ov.oldest_due
    data = {
        "now": ov.now.isoformat(),
        "counts": counts,
        "finished_window_s": FINISHED_WINDOW_S,
        "throughput": throughput,
        "pickup_delay": {
            "window_s": 300,
            "sampled": ov.pickup.sampled,
            "p50_s": ov.pickup.p50_s,
            "p95_s": ov.pickup.p95_s,
            "max_s": ov.pickup.max_s,
        },
        "oldest_due_pending": None
        if oldest is None
        else {
            "id": str(oldest["id"]),
            "type": oldest["type"],
            "due_at": oldest["run_at"].isoformat(),
            "age_s": oldest["age_s"],
        },
        "workers": workers,
        "unhandled_pending": dict(status.unhandled_pending),
    }
    data["health"] = health(data)
    return data


def _minutes(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Sixty one-minute buckets ending with the current minute, empty ones included."""
    by_minute = {r["minute"]: r for r in rows}
    last = now.replace(second=0, microsecond=0)
    out = []
    for i in range(59, -1, -1):
        minute = last - timedelta(minutes=i)
        row = by_minute.get(minute, {})
        out.append(
            {
                "minute": minute.isoformat(),
                "completed": int(row.get("completed", 0)),
                "failed": int(row.get("failed", 0)),
                "pickup_p95_s": row.get("pickup_p95_s"),
            }
        )
    return out


def _worker(w: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "id": w["id"],
        "hostname": w["hostname"],
        "pid": w["pid"],
        "types": list(w["types"]),
        "concurrency": w["concurrency"],
        "started_at": w["started_at"].isoformat(),
        "last_heartbeat_at": w["last_seen_at"].isoformat(),
        "heartbeat_age_s": max((now - w["last_seen_at"]).total_seconds(), 0.0),
    }


def health(data: dict[str, Any]) -> list[dict[str, str]]:
    """Findings that answer "is it healthy?", worst first; one "ok" line if none."""
    found: list[dict[str, str]] = []
    pending = sum(data["counts"].get("pending", {}).values())
    if not data["workers"]:
        level = "fail" if pending else "warn"
        found.append({"level": level, "message": f"no live worker ({pending} pending tasks)"})
    for task_type, n in sorted(data["unhandled_pending"].items()):
        if data["workers"]:
            found.append(
                {
                    "level": "warn",
                    "message": f"{n} pending {task_type} tasks: no live worker handles this type",
                }
            )
    oldest = data["oldest_due_pending"]
    if oldest is not None and oldest["age_s"] > OLDEST_DUE_WARN_S:
        found.append(
            {
                "level": "warn",
                "message": f"the oldest due task has waited {seconds(oldest['age_s'])}",
            }
        )
    failed = sum(data["counts"].get("failed", {}).values())  # the hour the table counts
    if failed:
        found.append({"level": "warn", "message": f"{failed} tasks failed in the last hour"})
    if not found:
        found.append({"level": "ok", "message": "healthy: workers are keeping up"})
    return sorted(found, key=lambda f: ["fail", "warn", "ok"].index(f["level"]))


def task_row(row: dict[str, Any]) -> dict[str, Any]:
    """A task of a listing, JSON-ready."""
    return {k: json_value(v) for k, v in row.items()}


def task_detail(row: dict[str, Any]) -> dict[str, Any]:
    """A task with its timings and what the table knows of its history."""
    out = task_row({k: v for k, v in row.items() if k not in {"now", "payload"}})
    out["timings"] = timings(row)
    out["history"] = history(row)
    if "payload" in row:
        out["payload"] = row["payload"]
    return out


def timings(row: dict[str, Any]) -> dict[str, float | None]:
    """Seconds between the times the table keeps (None where a time is missing)."""

    def between(a: datetime | None, b: datetime | None) -> float | None:
        return None if a is None or b is None else max((b - a).total_seconds(), 0.0)

    finished = row["completed_at"]
    return {
        "pickup_delay_s": between(row["run_at"], row["started_at"]),
        "run_s": between(row["started_at"], finished or (row["now"] if row["started_at"] else None))
        if row["status"] in {"processing", "completed", "failed"}
        else None,
        "total_s": between(row["created_at"], finished or row["now"]),
    }


def history(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The task's moves as far as the table knows them, oldest first.

    The table keeps the latest of each time only: earlier attempts are counted
    (``attempts``), not timed.
    """
    events: list[tuple[datetime, str]] = [(row["created_at"], "created")]
    attempts, status = row["attempts"], row["status"]
    if row["run_at"] != row["created_at"]:
        label = "due again after a retry" if attempts and status == "pending" else "due"
        events.append((row["run_at"], label))
    if attempts > 1:
        events.append((row["started_at"] or row["run_at"], f"{attempts - 1} earlier attempt(s)"))
    if row["started_at"] is not None and status != "cancelled":
        by = f" by worker {row['worker_id']}" if row["worker_id"] else ""
        events.append((row["started_at"], f"attempt {attempts} claimed{by}"))
    if status == "processing" and row.get("lease_expires_at") is not None:
        events.append((row["lease_expires_at"], "lease expires (renewed while it runs)"))
    if row["completed_at"] is not None and status in store.FINISHED:
        events.append((row["completed_at"], status))
    events.sort(key=lambda e: e[0])
    return [{"at": at.isoformat(), "event": event} for at, event in events]


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def seconds(value: float | None) -> str:
    """12 ms, 3.4 s, 5 min, 2.1 h."""
    if value is None:
        return NONE
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.0f} min"
    if value < 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def ago(when: Any, now: Any) -> str:
    """'3 min ago' or 'in 2 min'; either time an ISO string or a datetime."""
    if when is None:
        return NONE
    delta = (_moment(now) - _moment(when)).total_seconds()
    return f"{seconds(delta)} ago" if delta >= 0 else f"in {seconds(-delta)}"


def _moment(when: Any) -> datetime:
    return datetime.fromisoformat(when) if isinstance(when, str) else when


def timestamp(when: Any, milliseconds: bool = False) -> str:
    """2026-12-01 09:00:03 UTC (or 09:00:03.042 UTC)."""
    if when is None:
        return NONE
    moment = _moment(when).astimezone(UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if milliseconds:
        text += f".{moment.microsecond // 1000:03d}"
    return f"{text} UTC"


def first_line(text: str | None, width: int = 120) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
