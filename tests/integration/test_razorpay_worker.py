"""razorpay_webhook through real Workers: redeliveries enqueued as tasks credit an order once."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from listener import create_task, create_tasks, new_task, payments
from tests.handler_tasks import delivery, razorpay_event, sign
from tests.integration.engine_support import eventually, running_worker
from tests.integration.worker_registry import bundled

pytestmark = pytest.mark.anyio

SECRET = "whsec_worker_test"


async def credit(conn: psycopg.AsyncConnection[Any], purchase: payments.Purchase) -> None:
    await conn.execute(
        "INSERT INTO public.test_credits (order_id, event) VALUES (%s, %s)",
        (purchase.order_id, purchase.event),
    )


@pytest.fixture
def credits_conn(
    conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[psycopg.Connection[Any]]:
    conn.execute("CREATE TABLE public.test_credits (order_id text NOT NULL, event text)")
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("RAZORPAY_WEBHOOK_SECRET_PREVIOUS", raising=False)
    payments.set_credit_hook(credit)
    yield conn
    payments.set_credit_hook(None)


def statuses(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
    return {status: int(count) for status, count in rows}


async def test_redeliveries_across_two_workers_credit_the_order_once(
    dsn: str, credits_conn: psycopg.Connection[Any]
) -> None:
    conn = credits_conn
    paid = delivery(razorpay_event("order.paid"), SECRET, event_id="evt_paid")
    captured = delivery(razorpay_event("payment.captured"), SECRET, event_id="evt_captured")
    tasks = [new_task("razorpay_webhook", p) for p in [paid, captured] * 25]
    registry = bundled("razorpay_webhook")
    async with (
        running_worker(dsn, registry, concurrency=8),
        running_worker(dsn, registry, concurrency=8),
    ):
        create_tasks(tasks, conn=conn)
        await eventually(lambda: statuses(conn) == {"completed": 50}, timeout_s=20)
    assert conn.execute("SELECT count(*) FROM transactions").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM test_credits").fetchone() == (1,)


async def test_forged_delivery_fails_with_its_reason_and_records_nothing(
    dsn: str, credits_conn: psycopg.Connection[Any]
) -> None:
    conn = credits_conn
    forged = delivery(razorpay_event("payment.captured"), "whsec_attacker")
    async with running_worker(dsn, bundled("razorpay_webhook")):
        create_tasks([new_task("razorpay_webhook", forged)], conn=conn)
        await eventually(lambda: statuses(conn) == {"failed": 1})
    row = conn.execute("SELECT attempts, error FROM tasks").fetchone()
    assert row == (
        1,
        "PermanentError: webhook signature does not match RAZORPAY_WEBHOOK_SECRET "
        "(or RAZORPAY_WEBHOOK_SECRET_PREVIOUS); nothing recorded",
    )
    assert conn.execute("SELECT count(*) FROM transactions").fetchone() == (0,)


@contextlib.contextmanager
def webhook_endpoint(dsn: str) -> Iterator[str]:
    """The README's endpoint pattern on http.server (Flask is not a dependency here):
    store the raw body and headers as a task, answer 200, process nothing inline."""

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with psycopg.connect(dsn, autocommit=True) as conn:
                create_task(
                    "razorpay_webhook",
                    {"body_b64": base64.b64encode(raw).decode(), "headers": dict(self.headers)},
                    conn=conn,
                    dedupe_key=self.headers.get("X-Razorpay-Event-Id"),
                )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/webhooks/razorpay"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (the test's loopback URL)
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return int(response.status)


async def test_webhook_posted_to_the_endpoint_pattern_is_credited_by_the_worker(
    dsn: str, credits_conn: psycopg.Connection[Any]
) -> None:
    conn = credits_conn
    # Razorpay's JSON as it sends it: key order and spacing the endpoint must not change.
    body = json.dumps(razorpay_event("order.paid"), indent=1).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Razorpay-Signature": sign(body, SECRET),
        "X-Razorpay-Event-Id": "evt_e2e",
    }
    with webhook_endpoint(dsn) as url:
        assert post(url, body, headers) == 200
        assert statuses(conn) == {"pending": 1}  # stored, not processed inline
        async with running_worker(dsn, bundled("razorpay_webhook")):
            await eventually(lambda: statuses(conn) == {"completed": 1})
    assert conn.execute("SELECT order_id, status FROM transactions").fetchall() == [
        ("order_TEST001", "paid")
    ]
    assert conn.execute("SELECT count(*) FROM test_credits").fetchone() == (1,)
