"""The /metrics, /healthz and /readyz endpoint, driven by a real HTTP client on loopback.

The health object is a plain interface (two methods), so a small fake stands in for
the worker's; everything else is real: the server, its thread, the socket, the client.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from listener import healthcheck, http
from listener.metrics import Metrics


class FakeHealth:
    """Answers what the test sets; thread-safe because the attributes are replaced whole."""

    def __init__(self) -> None:
        self.alive_answer: tuple[bool, str] = (True, "")
        self.ready_answer: tuple[bool, str] = (True, "")

    def alive(self) -> tuple[bool, str]:
        return self.alive_answer

    def ready(self) -> tuple[bool, str]:
        return self.ready_answer


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def health() -> FakeHealth:
    return FakeHealth()


@pytest.fixture
def server(registry: CollectorRegistry, health: FakeHealth) -> Iterator[http.MetricsServer]:
    running = http.serve(registry, health, host="127.0.0.1", port=0)
    yield running
    running.close()


def get(server: http.MetricsServer, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET path; 4xx/5xx are answers, not errors."""
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_serves_the_injected_registry_in_prometheus_text_format(
    server: http.MetricsServer, registry: CollectorRegistry
) -> None:
    metrics = Metrics(registry)
    metrics.claimed("send_email", 0.004)
    metrics.finished("send_email", "completed", 0.2)
    metrics.in_flight.set(3)

    status, content_type, body = get(server, "/metrics")

    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    got = samples(body)
    assert got[("listener_tasks_claimed_total", (("type", "send_email"),))] == 1
    key = ("listener_tasks_finished_total", (("outcome", "completed"), ("type", "send_email")))
    assert got[key] == 1
    assert got[("listener_tasks_in_flight", ())] == 3
    assert got[("listener_task_pickup_delay_seconds_count", (("type", "send_email"),))] == 1


def test_metrics_speaks_openmetrics_when_the_scraper_asks_for_it(
    server: http.MetricsServer, registry: CollectorRegistry
) -> None:
    Metrics(registry).finished("send_email", "completed", 0.1)
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback http
        content_type, body = response.headers["Content-Type"], response.read().decode()
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


def test_healthz_is_200_while_the_worker_is_alive(server: http.MetricsServer) -> None:
    status, content_type, body = get(server, "/healthz")
    assert (status, content_type, json.loads(body)) == (200, "application/json", {"alive": True})


def test_healthz_is_503_with_the_reason_when_the_event_loop_is_stuck(
    server: http.MetricsServer, health: FakeHealth
) -> None:
    health.alive_answer = (False, "event loop unresponsive for 12.0s")
    status, _, body = get(server, "/healthz")
    assert status == 503
    assert json.loads(body) == {"alive": False, "reason": "event loop unresponsive for 12.0s"}


def test_readyz_is_503_with_a_json_reason_when_not_listening(
    server: http.MetricsServer, health: FakeHealth
) -> None:
    health.ready_answer = (False, "LISTEN connection is down")
    status, content_type, body = get(server, "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {"ready": False, "reason": "LISTEN connection is down"}


def test_readyz_is_200_when_ready(server: http.MetricsServer) -> None:
    status, _, body = get(server, "/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True})


def test_a_health_check_that_raises_reads_as_not_ready(
    server: http.MetricsServer, health: FakeHealth
) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    health.ready = broken  # type: ignore[method-assign]
    status, _, body = get(server, "/readyz")
    assert status == 503
    assert json.loads(body) == {"ready": False, "reason": "health check raised RuntimeError"}


def test_unknown_path_is_404_and_lists_the_served_paths(server: http.MetricsServer) -> None:
    status, _, body = get(server, "/admin")
    assert status == 404
    assert json.loads(body)["paths"] == ["/metrics", "/healthz", "/readyz"]


def test_a_failing_collector_gives_500_and_the_server_keeps_serving(
    server: http.MetricsServer, registry: CollectorRegistry
) -> None:
    class Broken:
        def collect(self) -> list[object]:
            raise RuntimeError("collector bug")

    registry.register(Broken())  # type: ignore[arg-type]
    assert get(server, "/metrics")[0] == 500
    assert get(server, "/healthz")[0] == 200


def test_a_slow_request_does_not_block_other_requests(
    server: http.MetricsServer, health: FakeHealth
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_ready() -> tuple[bool, str]:
        entered.set()
        release.wait(10)
        return True, ""

    health.ready = slow_ready  # type: ignore[method-assign]
    slow = threading.Thread(target=get, args=(server, "/readyz"))
    slow.start()
    try:
        assert entered.wait(5), "the slow request never reached its handler"
        assert get(server, "/metrics")[0] == 200  # answered while /readyz still hangs
        assert slow.is_alive()
    finally:
        release.set()
        slow.join(10)


def _closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """True if the server closes ``sock`` (EOF) within ``within_s``."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    "sent", [b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"], ids=["idle", "half-open request"]
)
def test_a_silent_connection_is_closed_after_the_request_timeout(
    registry: CollectorRegistry, health: FakeHealth, sent: bytes
) -> None:
    running = http.serve(registry, health, host="127.0.0.1", port=0, request_timeout_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(sent)
            assert _closed_by_server(sock, within_s=5)
    finally:
        running.close()


def test_connections_over_the_bound_get_503_without_a_thread_each(
    registry: CollectorRegistry, health: FakeHealth
) -> None:
    running = http.serve(
        registry, health, host="127.0.0.1", port=0, request_timeout_s=30, max_connections=4
    )
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", running.port), timeout=5) for _ in range(40)]
    try:
        for sock in idle[4:]:  # accepted in order: the first four hold the slots
            sock.settimeout(5)
            assert sock.recv(1024).startswith(b"HTTP/1.1 503 "), "over the bound, not refused"
        assert threading.active_count() - threads_before <= 4
    finally:
        for sock in idle:
            sock.close()
    # The slots come back when their connections end.
    assert wait_for(lambda: get(running, "/healthz")[0] == 200)
    running.close()


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return True
        time.sleep(0.05)
    return False


def test_close_releases_the_port(registry: CollectorRegistry, health: FakeHealth) -> None:
    first = http.serve(registry, health, host="127.0.0.1", port=0)
    port = first.port
    first.close()
    first.close()  # twice is harmless
    again = http.serve(registry, health, host="127.0.0.1", port=port)
    try:
        assert again.port == port
    finally:
        again.close()


def test_a_taken_port_raises_oserror(
    server: http.MetricsServer, registry: CollectorRegistry, health: FakeHealth
) -> None:
    with pytest.raises(OSError, match="in use"):
        http.serve(registry, health, host="127.0.0.1", port=server.port)


def test_healthcheck_command_exits_0_when_alive_and_1_when_not(
    server: http.MetricsServer, health: FakeHealth
) -> None:
    url = f"http://127.0.0.1:{server.port}/healthz"
    assert healthcheck.main([url]) == 0
    health.alive_answer = (False, "stuck")
    assert healthcheck.main([url]) == 1


def test_healthcheck_command_exits_1_when_nothing_listens() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert healthcheck.main([f"http://127.0.0.1:{port}/healthz"], timeout_s=2) == 1


def test_healthcheck_command_rejects_a_non_http_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["file:///etc/passwd"]) == 2
    assert "is not an http(s) URL" in capsys.readouterr().err
