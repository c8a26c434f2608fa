"""What a task is, as handlers and the engine see it."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class TaskStatus(enum.StrEnum):
    """A task's state; who moves it, and what each move does to ``attempts``, is the
    table in docs/attempts.md.

    pending -> processing (claimed) -> completed | failed, or back to pending when
    a retry is scheduled, the worker shuts down, or its lease expires (rescue).
    pending -> cancelled by an operator.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Task:
    """One claimed task, handed to its handler."""

    id: uuid.UUID
    type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    created_at: datetime
    run_at: datetime | None = None
    priority: int = 0
    dedupe_key: str | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
