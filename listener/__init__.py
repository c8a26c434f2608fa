"""listener: a PostgreSQL task queue worker (INSERT -> NOTIFY -> claim -> run)."""

from listener.errors import InvalidTaskError, PermanentError, RetryLater
from listener.models import Task, TaskStatus
from listener.producer import (
    NewTask,
    create_task,
    create_task_async,
    create_tasks,
    create_tasks_async,
    new_task,
)
from listener.registry import handler

__version__ = "0.1.0"

__all__ = [
    "InvalidTaskError",
    "NewTask",
    "PermanentError",
    "RetryLater",
    "Task",
    "TaskStatus",
    "__version__",
    "create_task",
    "create_task_async",
    "create_tasks",
    "create_tasks_async",
    "handler",
    "new_task",
]
