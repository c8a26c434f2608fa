"""`listener ui`'s own errors: one line on stderr and exit 1, before serving anything."""

from __future__ import annotations

import socket

from tests.integration.support import cli_env, run_cli


def test_a_short_token_is_refused_with_how_to_make_a_good_one(dsn: str) -> None:
    done = run_cli("ui", "--dsn", dsn, env=cli_env(LISTENER_UI_TOKEN="short"))
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("listener: error: LISTENER_UI_TOKEN must be at least 16 characters")
    assert "secrets.token_urlsafe(32)" in line


def test_a_port_in_use_is_one_line_naming_it(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli("ui", "--dsn", dsn, "--port", str(port), env=cli_env(LISTENER_UI_TOKEN=None))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"listener: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_an_unmigrated_database_is_refused_like_listener_run_does(empty_dsn: str) -> None:
    done = run_cli("ui", "--dsn", empty_dsn, env=cli_env(LISTENER_UI_TOKEN=None))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "listener: error: the database schema is not up to date: run `listener migrate` first"
    ]


def test_a_bad_port_is_a_usage_error() -> None:
    done = run_cli("ui", "--port", "99999")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "listener: error: argument --port: '99999' is not a port number (1-65535)"
    ]
