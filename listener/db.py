"""Connections: resolving the DSN, connecting with keepalives, one-line errors."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from listener import config, embedded
from listener.errors import DatabaseUnavailableError
from listener.redaction import mask_fragments, redact_text

# A dead peer (cable cut, VM frozen) must surface in seconds, not after the
# kernel's two-hour keepalive default: see ENVIRONMENT.md, "packets dropped".
KEEPALIVE_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    # A server that accepts the connection but never answers must not hold a
    # connect (the worker's start-up, a reconnect) forever.
    "connect_timeout": 10,
}


def resolve_dsn(
    flag_dsn: str | None = None, announce: Callable[[str], None] | None = None
) -> config.DatabaseTarget:
    """``--dsn``, then ``DATABASE_URL``, then the embedded server (announced on stderr)."""
    target = config.explicit_dsn(flag_dsn)
    if target is not None:
        return target
    data_dir = config.embedded_data_dir()
    dsn = embedded.start(data_dir)
    say = announce or (lambda line: print(line, file=sys.stderr))
    say(
        f"listener: no --dsn or DATABASE_URL; using the embedded PostgreSQL in {data_dir} "
        "(set DATABASE_URL to use your own server)"
    )
    return config.DatabaseTarget(dsn, "embedded")


def connect_kwargs(**extra: Any) -> dict[str, Any]:
    """Keyword arguments for every connection this package opens."""
    return {"application_name": config.APPLICATION_NAME, **KEEPALIVE_OPTIONS, **extra}


def describe_target(dsn: str) -> str:
    """HOST:PORT (or the socket folder) of a DSN, without its password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    return host if host.startswith("/") else f"{host}:{port}"


def connection_failure_reason(message: str) -> str:
    """libpq's reason for a failed connection, without its preamble and hints.

    'connection failed: connection to server at "h", port 1 failed: Connection
    refused\n\tIs the server running ...' -> 'connection refused'.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    failed = [line for line in lines if " failed: " in line]
    reason = (failed[-1] if failed else lines[0]) if lines else ""
    if " failed: " in reason:
        reason = reason.rsplit(" failed: ", 1)[-1]
    reason = reason.removeprefix("FATAL:").strip()
    if reason[:1].isupper() and reason[1:2].islower():
        reason = reason[0].lower() + reason[1:]
    return reason or "unknown error"


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    """A one-line error for a failed connection: where, and libpq's reason."""
    reason = without_dsn_secrets(connection_failure_reason(str(exc)), dsn)
    where = describe_target(dsn)
    return DatabaseUnavailableError(f"cannot connect to postgres at {where}: {reason}")


def invalid_dsn(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    """A one-line error for a DSN libpq cannot parse, without the password it may echo."""
    lines = str(exc).strip().splitlines()
    reason = without_dsn_secrets(lines[0] if lines else type(exc).__name__, dsn)
    return DatabaseUnavailableError(f"invalid database DSN: {reason}")


# Lenient on purpose: they read DSNs libpq refused. A URI's password runs to its last
# "@"; a keyword password is quoted (with escapes) or runs to the next space.
_URI_PASSWORD = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:(?P<password>.*)@")
_KEYWORD_PASSWORD = re.compile(r"password\s*=\s*(?P<password>'(?:[^'\\]|\\.)*'?|\S+)")


def without_dsn_secrets(message: str, dsn: str) -> str:
    """``message`` with any fragment of ``dsn``'s password, and any echoed URL password, masked.

    libpq quotes what it could not parse: ``invalid percent-encoded token: "p%zz"``
    may be the password itself, and some errors quote the whole URI.
    """
    for pattern in (_URI_PASSWORD, _KEYWORD_PASSWORD):
        for match in pattern.finditer(dsn):
            password = match["password"].strip("'")
            message = mask_fragments(message, password)
    return redact_text(message)


def connect(dsn: str, *, autocommit: bool = False, **extra: Any) -> psycopg.Connection[Any]:
    """A synchronous connection; connection failures become DatabaseUnavailableError."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **connect_kwargs(**extra))
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from None
    except psycopg.ProgrammingError as exc:
        raise invalid_dsn(dsn, exc) from None


async def aconnect(
    dsn: str, *, autocommit: bool = False, **extra: Any
) -> psycopg.AsyncConnection[Any]:
    """An async connection; connection failures become DatabaseUnavailableError."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=autocommit, **connect_kwargs(**extra)
        )
    except psycopg.OperationalError as exc:
        raise unavailable(dsn, exc) from None
    except psycopg.ProgrammingError as exc:
        raise invalid_dsn(dsn, exc) from None
