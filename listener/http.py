"""The worker's HTTP endpoint: /metrics, /healthz and /readyz on one port.

Served from a thread of its own (``ThreadingHTTPServer``), so a slow scrape never
blocks the event loop and a blocked event loop still answers /healthz with 503.
The worker shares its file descriptors and memory with it, so every connection has
a socket timeout and only ``max_connections`` are served at once: an idle or
half-open client cannot pin a thread for ever, and a flood of them is refused
with 503 instead of growing a thread each.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from listener.metrics import QueueCollector, register_queue_collector

DEFAULT_PORT = 9108  # listener's slot in Prometheus's default port allocations
# Loopback on a plain host: a Prometheus or probe on the same machine reaches it, the
# network does not. The image sets LISTENER_METRICS_HOST=0.0.0.0 (a container's
# port is reached through its own interface); see docs/monitoring.md.
DEFAULT_HOST = "127.0.0.1"
REQUEST_TIMEOUT_S = 5.0  # per socket read or write; a scrape's request arrives at once
MAX_CONNECTIONS = 16  # a scraper or two and the orchestrator's probes need a handful
_REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

log = structlog.get_logger("listener.http")


class Health(Protocol):
    """What the endpoint asks the worker; both methods are called from server threads."""

    def alive(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, str]: ...


class MetricsServer:
    """A running endpoint: ``port`` is the bound port (useful with port 0)."""

    def __init__(
        self,
        server: ThreadingHTTPServer,
        thread: threading.Thread,
        collector: QueueCollector | None = None,
    ) -> None:
        self._server = server
        self._thread = thread
        self._collector = collector
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        if self._collector is not None:
            self._collector.close()


class _BoundedServer(ThreadingHTTPServer):
    """At most ``max_connections`` connections are served at once; the rest get a 503."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog: refused connections are answered, not dropped

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _refuse(request: socket.socket) -> None:
    """Tell a connection over the bound why it is closed, without ever blocking."""
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(_REFUSED)


def serve(
    registry: CollectorRegistry,
    health: Health,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    queue_dsn: str | None = None,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> MetricsServer:
    """Start serving in a daemon thread; raises OSError when the port is taken.

    With ``queue_dsn``, scrapes also read the queue gauges from that database.
    """
    attributes = {"registry": registry, "health": health, "timeout": request_timeout_s}
    handler = type("_BoundHandler", (_Handler,), attributes)
    server = _BoundedServer((host, port), handler, max_connections)
    thread = threading.Thread(
        target=server.serve_forever, name="listener-http", kwargs={"poll_interval": 0.2}
    )
    thread.daemon = True
    thread.start()
    collector = register_queue_collector(registry, queue_dsn) if queue_dsn else None
    return MetricsServer(server, thread, collector)


def _probe(check: Any, key: str) -> tuple[HTTPStatus, dict[str, Any]]:
    """Run one health check; a check that raises counts as failing, with its reason."""
    try:
        ok, reason = check()
    except Exception as exc:
        ok, reason = False, f"health check raised {type(exc).__name__}"
    if ok:
        return HTTPStatus.OK, {key: True}
    return HTTPStatus.SERVICE_UNAVAILABLE, {key: False, "reason": reason or "unknown"}


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    health: Health
    server_version = "listener"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            self._json(*_probe(self.health.alive, "alive"))
        elif path == "/readyz":
            self._json(*_probe(self.health.ready, "ready"))
        else:
            body = {"error": "not found", "paths": ["/metrics", "/healthz", "/readyz"]}
            self._json(HTTPStatus.NOT_FOUND, body)

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        try:
            body = encoder(self.registry)
        except Exception as exc:  # a broken collector must not kill the server thread
            log.error("http.metrics_failed", error=type(exc).__name__)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "collecting metrics failed"})
            return
        self._send(HTTPStatus.OK, content_type, body)

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(body).encode() + b"\n")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access line; scrapes would flood the logs."""
