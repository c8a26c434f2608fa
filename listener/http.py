"""Placeholder: /metrics only, until the observability work lands /healthz and /readyz."""

from __future__ import annotations

from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry


class _Server:
    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_http_server(host: str, port: int, registry: CollectorRegistry, health: Any) -> _Server:
    server, thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return _Server(server, thread)
