"""Settings: where the database is and the defaults every command shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NOTIFY_CHANNEL = "listener_tasks"
DEFAULT_MAX_ATTEMPTS = 5
MAX_ATTEMPTS_LIMIT = 1000  # the schema's CHECK on attempts and max_attempts
MAX_PAYLOAD_BYTES = 1024 * 1024  # as JSON text; the database's trigger says the same
MAX_PAYLOAD_DEPTH = 64  # levels of nesting, likewise
APPLICATION_NAME = "listener"


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """A DSN and where it came from (flag, environment or embedded server)."""

    dsn: str
    source: str  # "--dsn", "DATABASE_URL" or "embedded"


def embedded_data_dir() -> Path:
    """Where the zero-setup embedded PostgreSQL keeps its data (project-local)."""
    configured = os.environ.get("LISTENER_EMBEDDED_DIR")
    return Path(configured) if configured else Path.cwd() / ".listener" / "pgdata"


def explicit_dsn(flag_dsn: str | None = None) -> DatabaseTarget | None:
    """The DSN given by ``--dsn`` or ``DATABASE_URL``, if any."""
    if flag_dsn:
        return DatabaseTarget(flag_dsn, "--dsn")
    env_dsn = os.environ.get("DATABASE_URL")
    if env_dsn:
        return DatabaseTarget(env_dsn, "DATABASE_URL")
    return None
