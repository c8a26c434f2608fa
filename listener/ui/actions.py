"""The dashboard's actions: retry a failed task, cancel a pending one, retry a type.

The rules are `listener retry` / `listener cancel`'s own (listener.admin); this
module only runs them for one caller, says what changed, and logs it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from listener import admin, logs
from listener.ui.database import Database
from listener.ui.guard import Caller

log = logs.get_logger("listener.ui")


@dataclass(frozen=True, slots=True)
class Result:
    """What an action did: an HTTP status, one line for people, a dict for scripts."""

    status_code: int
    message: str
    outcome: admin.Outcome

    def json(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "message": self.message,
            "dry_run": o.dry_run,
            "changed": o.by_type,
            "total": o.total,
            "blocked": o.blocked,
            "skipped": [{"id": str(i), "reason": reason} for i, reason in o.skipped],
        }


async def retry_task(database: Database, task_id: uuid.UUID, caller: Caller, client: str) -> Result:
    outcome = await database.run(admin.retry, admin.Selection(ids=(task_id,)))
    result = _one(outcome, task_id, "retried: back to pending, due now")
    _log("ui.task_retried", result, caller, client, task_id=task_id)
    return result


async def cancel_task(
    database: Database, task_id: uuid.UUID, caller: Caller, client: str
) -> Result:
    outcome = await database.run(admin.cancel, admin.Selection(ids=(task_id,)))
    result = _one(outcome, task_id, "cancelled: no worker will run it")
    _log("ui.task_cancelled", result, caller, client, task_id=task_id)
    return result


async def retry_failed_of_type(
    database: Database, task_type: str, caller: Caller | None, client: str, *, dry_run: bool
) -> Result:
    """Every failed task of ``task_type`` back to pending (or, dry, how many would go)."""
    outcome = await database.run(admin.retry, admin.Selection(types=(task_type,)), dry_run=dry_run)
    n = outcome.total
    verb = "would retry" if dry_run else "retried"
    message = (
        f"no failed {task_type} tasks: nothing retried"
        if not n and not outcome.blocked
        else f"{verb} {n} failed {task_type} task{'' if n == 1 else 's'}"
    )
    if outcome.blocked:
        message += (
            f"; {outcome.blocked} stay failed: another unfinished task holds the same dedupe key"
        )
    result = Result(200, message, outcome)
    if not dry_run and caller is not None:
        _log("ui.failed_type_retried", result, caller, client, type=task_type)
    return result


def _one(outcome: admin.Outcome, task_id: uuid.UUID, done: str) -> Result:
    if outcome.total:
        return Result(200, f"task {task_id} {done}", outcome)
    reason = outcome.skipped[0][1] if outcome.skipped else "was not changed"
    code = 404 if reason == "no such task" else 409
    return Result(code, f"task {task_id} {reason}: nothing changed", outcome)


def _log(event: str, result: Result, caller: Caller, client: str, **fields: Any) -> None:
    o = result.outcome
    log.info(
        event,
        changed=o.by_type,
        total=o.total,
        blocked=o.blocked,
        skipped=[f"{i} {reason}" for i, reason in o.skipped],
        via=caller.via,
        client=client,
        **fields,
    )
