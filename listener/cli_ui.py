"""`listener ui`: serve the dashboard (loopback by default; read-only without a token)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
from collections.abc import Iterator
from typing import Any

from listener import config, db, logs
from listener.errors import ConfigError

log = logs.get_logger("listener.ui")
UI_DEPENDENCIES = ("starlette", "jinja2", "uvicorn")
DEFAULT_PORT = 8089
# Proxies whose X-Forwarded-Proto/For uvicorn trusts (README: "Behind a reverse proxy").
FORWARDED_ALLOW_IPS_ENV = "LISTENER_UI_FORWARDED_ALLOW_IPS"


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ui = sub.add_parser("ui", parents=[common], help="serve the web dashboard")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    ui.add_argument(
        "--poll-interval-s", type=float, default=3.0, help="live update interval (default 3)"
    )
    ui.add_argument("--log-level", default="info", help="debug, info, warning, error")
    ui.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    ui.set_defaults(handler=cmd_ui)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def missing_dependencies() -> list[str]:
    return [name for name in UI_DEPENDENCIES if importlib.util.find_spec(name) is None]


def cmd_ui(args: argparse.Namespace) -> int:
    missing = missing_dependencies()
    if missing:
        raise ConfigError(
            f"the dashboard needs the ui extra ({', '.join(missing)} missing): "
            "pip install 'listener[ui]'"
        )
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.poll_interval_s < 0.5:
        raise ConfigError("--poll-interval-s must be at least 0.5")
    from listener import cli_run
    from listener.ui import auth

    token = auth.token_from_env()
    target = db.resolve_dsn(args.dsn)
    cli_run.ensure_schema(target)  # refuses an unmigrated database, like `listener run`
    sock = _bind(args.host, args.port)
    _serve(sock, target, token, args)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _serve(
    sock: socket.socket, target: config.DatabaseTarget, token: str | None, args: argparse.Namespace
) -> None:
    import uvicorn

    from listener.ui.app import UiSettings, create_app

    _Server = _server_class()
    settings = UiSettings(dsn=target.dsn, token=token, poll_interval_s=args.poll_interval_s)
    host, port = sock.getsockname()[:2]
    server = _Server(
        uvicorn.Config(
            create_app(settings),
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=True,
            forwarded_allow_ips=os.environ.get(FORWARDED_ALLOW_IPS_ENV, "127.0.0.1"),
            lifespan="on",
        )
    )
    log.info(
        "ui.started",
        url=f"http://{host}:{port}/",
        actions_enabled=token is not None,
        database=db.describe_target(target.dsn),
    )
    server.run(sockets=[sock])
    log.info("ui.stopped")


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, exiting 0 after a graceful stop on SIGTERM/SIGINT.

        uvicorn re-raises the stop signal once it has shut down, so the process
        would die of it (exit -15); like `listener run`, a requested stop is a
        clean exit.
        """

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                getattr(self, "_captured_signals", []).clear()

    return Server
