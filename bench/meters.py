"""Commits and statements a subject sends to its database while it drains.

Commits come from ``pg_stat_database.xact_commit`` of the benchmark's own scratch
database, read from the admin database, so reading them adds none. A backend flushes
its counters when it exits at the latest, and it leaves ``pg_stat_activity`` only
after that flush: each reading waits until no session is connected to the database,
so both readings are complete. The harness's own transactions in between (its polls,
its poll connection) are counted by the harness and taken off.

Statements come from ``pg_stat_statements`` (top-level statements, BEGIN and COMMIT
included when ``track_utility`` is on, its default), only where the server already
preloads it: the benchmark never changes a server's settings. Its counters are reset
for this database only. A statement is not a round trip: a pipeline sends several in
one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench import env
from listener.sqlfiles import query

QUIET_TIMEOUT_S = 60.0
TOP_STATEMENTS = 8


@dataclass
class Counts:
    commits: int
    statements: int | None  # None: pg_stat_statements is not preloaded on this server
    # The most frequent statements: (text, calls, total server execution ms).
    top: list[tuple[str, int, float]] = field(default_factory=list)


def statements_available(admin: str) -> bool:
    """True if the server preloads pg_stat_statements (it is never loaded for you)."""
    with env.connect(admin) as conn:
        row = conn.execute(query("bench_statements_preloaded")).fetchone()
    return bool(row and row[0])


class Meter:
    """Brackets one drain: ``start()`` before the subject connects, ``stop()`` after."""

    def __init__(self, admin: str, dsn: str) -> None:
        self._admin, self._dsn, self._dbname = admin, dsn, env.dbname(dsn)
        self._statements = statements_available(admin)
        self._commits_before = 0

    def start(self) -> None:
        if self._statements:
            with env.connect(self._dsn) as conn:
                conn.execute(query("bench_create_pg_stat_statements"))
                conn.execute(query("bench_reset_statements"))
        self._commits_before = self._commits()

    def stop(self, harness_polls: int, harness_connections: int) -> Counts:
        """Counts since start(), less the harness's polls (one transaction each) and its
        connections (one transaction each, at connect); its statements are marked
        ``/* bench harness */`` and left out by name."""
        commits = self._commits() - self._commits_before - harness_polls - harness_connections
        if not self._statements:
            return Counts(commits, None)
        with env.connect(self._dsn) as conn:
            rows = conn.execute(query("bench_statement_calls")).fetchall()
        calls = sum(int(r[1]) for r in rows)
        top = [
            (" ".join(str(r[0]).split())[:120], int(r[1]), float(r[2]))
            for r in rows[:TOP_STATEMENTS]
        ]
        return Counts(commits, calls, top)

    def _commits(self) -> int:
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        with env.connect(self._admin, prepare_threshold=None) as conn:
            params = {"dbname": self._dbname}
            while (conn.execute(query("bench_backends"), params).fetchone() or (0,))[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sessions still connected to {self._dbname}")
                time.sleep(0.02)
            row = conn.execute(query("bench_database_commits"), params).fetchone()
        return int(row[0]) if row else 0
