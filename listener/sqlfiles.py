"""Load the SQL that ships with the package: numbered migrations and named queries."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from listener.errors import ConfigError

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_QUERY_HEADER = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """The SQL folder: inside the installed wheel, or the checkout's top-level sql/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise ConfigError(f"listener's SQL files are missing (looked in {here / 'sql'})")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """All migrations, in version order."""
    found = []
    for path in sorted((sql_dir() / "migrations").glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ConfigError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ConfigError(f"migration versions must run 1..N without gaps, found {versions}")
    return tuple(found)


@functools.cache
def queries() -> dict[str, str]:
    """Named queries from sql/queries/*.sql, each introduced by ``-- name: NAME``."""
    named: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        parts = _QUERY_HEADER.split(path.read_text(encoding="utf-8"))[1:]
        for name, body in zip(parts[::2], parts[1::2], strict=True):
            if name in named:
                raise ConfigError(f"query {name!r} is defined twice (again in {path.name})")
            named[name] = body.strip().rstrip(";")
    return named


def query(name: str) -> str:
    """The text of one named query."""
    return queries()[name]
