"""razorpay_webhook through real Workers: redeliveries enqueued as tasks credit an order once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from listener import create_tasks, new_task, payments
from tests.handler_tasks import delivery, razorpay_event
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
