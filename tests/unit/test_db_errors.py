"""Connection failures become one line: where, and libpq's reason without its hints."""

from __future__ import annotations

import pytest

from listener.db import connection_failure_reason, describe_target

# Messages exactly as psycopg 3.3 / libpq 17 word them (captured from real failures).
REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)
NO_DATABASE = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    'FATAL:  database "nosuchdb" does not exist'
)
NO_SOCKET = (
    'connection is bad: connection to server on socket "/nope/.s.PGSQL.5432" failed: '
    "No such file or directory\n\tIs the server running locally and accepting connections?"
)
MULTI_HOST = (
    "connection failed: Multiple connection attempts failed. All failures were:\n"
    '- host: "localhost", port: 1, hostaddr: "::1": connection failed: connection to server '
    'at "::1", port 1 failed: Connection refused\n'
    '- host: "localhost", port: 1, hostaddr: "127.0.0.1": connection failed: connection to '
    'server at "127.0.0.1", port 1 failed: Connection refused'
)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (REFUSED, "connection refused"),
        (NO_DATABASE, 'database "nosuchdb" does not exist'),
        (NO_SOCKET, "no such file or directory"),
        (MULTI_HOST, "connection refused"),
        (
            "failed to resolve host 'x.invalid': [Errno -2] Name or service not known",
            "failed to resolve host 'x.invalid': [Errno -2] Name or service not known",
        ),
        ("", "unknown error"),
    ],
)
def test_connection_failure_reason_is_the_one_line_cause(message: str, reason: str) -> None:
    assert connection_failure_reason(message) == reason


@pytest.mark.parametrize(
    ("dsn", "where"),
    [
        ("postgresql://u:secret@db.example.com:6543/app", "db.example.com:6543"),
        ("postgresql://u@10.0.0.1/app", "10.0.0.1:5432"),
        ("host=/var/run/postgresql dbname=app password=secret", "/var/run/postgresql"),
        ("dbname=app", "localhost:5432"),
        ("not a dsn at all", "an unparsable DSN"),
    ],
)
def test_describe_target_names_host_and_port_but_never_the_password(dsn: str, where: str) -> None:
    assert describe_target(dsn) == where
