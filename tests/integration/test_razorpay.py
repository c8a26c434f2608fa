"""razorpay_webhook on real PostgreSQL: verified, and credited once however it is redelivered.

Each delivery runs as the engine runs a transactional handler: on its own connection,
inside the transaction that would complete the task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest
from structlog.testing import capture_logs

from handlers.razorpay_webhook import razorpay_webhook
from listener import PermanentError, payments
from listener.errors import ConfigError
from tests.handler_tasks import delivery, make_task, razorpay_event, sign
from tests.integration import handler_db

pytestmark = pytest.mark.anyio

SECRET, PREVIOUS = "whsec_current_0123", "whsec_previous_4567"
DELIVERIES = 50
# A known-answer vector computed outside this code base, with OpenSSL:
#   printf '%s' "$KNOWN_ANSWER_BODY" | openssl dgst -sha256 -hmac whsec_known_answer_1
KNOWN_ANSWER_SECRET = "whsec_known_answer_1"
KNOWN_ANSWER_BODY = (
    b'{"entity":"event","event":"order.paid","payload":{"order":{"entity":{"id":"order_KAT01",'
    b'"amount":49900,"amount_paid":49900,"currency":"INR"}},"payment":{"entity":'
    b'{"id":"pay_KAT01","amount":49900,"currency":"INR","order_id":"order_KAT01"}}}}'
)
KNOWN_ANSWER_SIGNATURE = "cefa4a6fdb09ce701fa7e4f63c80f85c4ad8d87e088fb093ce4452ecb9955cda"
CONNECTIONS = 50  # one connection per delivery: all 50 in flight at once


@pytest.fixture(scope="module")
def module_dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    yield from handler_db.module_database(pg_admin_dsn, template_db)


@pytest.fixture
def dsn(module_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This module's database, emptied, with a credits table the test hook writes to."""
    handler_db.empty_tables(module_dsn)
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.test_credits (order_id text NOT NULL, event text)")
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("RAZORPAY_WEBHOOK_SECRET_PREVIOUS", raising=False)
    monkeypatch.delenv(payments.CREDIT_HOOK_ENV, raising=False)
    payments.set_credit_hook(credit)
    yield module_dsn
    payments.set_credit_hook(None)


async def credit(conn: psycopg.AsyncConnection[Any], purchase: payments.Purchase) -> None:
    """The app's credit, written in the recording transaction."""
    await conn.execute(
        "INSERT INTO public.test_credits (order_id, event) VALUES (%s, %s)",
        (purchase.order_id, purchase.event),
    )
    # Hold the transaction open a moment so concurrent deliveries pile up on the
    # ledger's unique key instead of running one after another.
    await anyio.sleep(0.05)


async def deliver(dsn: str, payload: dict[str, Any]) -> BaseException | None:
    """One delivery in its own transaction; the handler's exception, or None if it completed."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        try:
            async with conn.transaction():
                await razorpay_webhook(make_task("razorpay_webhook", payload), conn)
        except Exception as exc:
            return exc
    return None


async def deliver_concurrently(dsn: str, payloads: list[dict[str, Any]]) -> list[Any]:
    """Deliveries on CONNECTIONS connections at once, each in its own transaction.

    Every connection is open before the first delivery starts; each then takes the
    next undelivered payload until none is left.
    """
    outcomes: list[Any] = [None] * len(payloads)
    pending = iter(range(len(payloads)))
    connections = [
        await psycopg.AsyncConnection.connect(dsn) for _ in range(min(CONNECTIONS, len(payloads)))
    ]
    go = anyio.Event()

    async def lane(conn: psycopg.AsyncConnection[Any]) -> None:
        await go.wait()
        for i in pending:
            try:
                async with conn.transaction():
                    await razorpay_webhook(make_task("razorpay_webhook", payloads[i]), conn)
            except Exception as exc:
                outcomes[i] = exc

    try:
        async with anyio.create_task_group() as tg:
            for conn in connections:
                tg.start_soon(lane, conn)
            go.set()
    finally:
        for conn in connections:
            await conn.close()
    return outcomes


def ledger(dsn: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(transactions rows, credits rows)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT order_id, email, amount, status FROM transactions").fetchall()
        credits = conn.execute("SELECT order_id, event FROM test_credits").fetchall()
    return rows, credits


async def test_fifty_concurrent_deliveries_of_one_event_credit_the_order_once(dsn: str) -> None:
    payload = delivery(razorpay_event("payment.captured"), SECRET)
    with capture_logs() as logs:
        outcomes = await deliver_concurrently(dsn, [payload] * DELIVERIES)
    assert outcomes == [None] * DELIVERIES  # every redelivery completes
    rows, credits = ledger(dsn)
    assert rows == [("order_TEST001", "buyer@example.com", 49_900, "captured")]
    assert credits == [("order_TEST001", "payment.captured")]
    events = [e["event"] for e in logs]
    assert events.count("razorpay.credited") == 1
    assert events.count("razorpay.already_recorded") == DELIVERIES - 1


async def test_order_paid_and_payment_captured_interleaved_are_one_purchase(dsn: str) -> None:
    paid = delivery(razorpay_event("order.paid"), SECRET, event_id="evt_paid")
    captured = delivery(razorpay_event("payment.captured"), SECRET, event_id="evt_captured")
    outcomes = await deliver_concurrently(dsn, [paid, captured] * (DELIVERIES // 2))
    assert outcomes == [None] * DELIVERIES
    rows, credits = ledger(dsn)
    assert len(rows) == 1
    assert len(credits) == 1
    assert rows[0][3] in ("paid", "captured")


@pytest.mark.parametrize("first", ["order.paid", "payment.captured"])
async def test_second_event_for_a_credited_order_changes_nothing(dsn: str, first: str) -> None:
    second = "payment.captured" if first == "order.paid" else "order.paid"
    assert await deliver(dsn, delivery(razorpay_event(first), SECRET)) is None
    assert await deliver(dsn, delivery(razorpay_event(second), SECRET)) is None
    rows, credits = ledger(dsn)
    assert [row[3] for row in rows] == [{"order.paid": "paid"}.get(first, "captured")]
    assert credits == [("order_TEST001", first)]


async def test_concurrent_deliveries_for_different_orders_credit_each_once(dsn: str) -> None:
    orders = [f"order_{n:03d}" for n in range(10)]
    payloads = [
        delivery(razorpay_event(event, order_id=order, payment_id=f"pay_{order}"), SECRET)
        for order in orders
        for event in ("order.paid", "payment.captured", "payment.captured")
    ]
    assert await deliver_concurrently(dsn, payloads) == [None] * len(payloads)
    rows, credits = ledger(dsn)
    assert sorted(row[0] for row in rows) == orders
    assert sorted(c[0] for c in credits) == orders


async def test_failed_credit_rolls_back_the_ledger_row_so_a_redelivery_credits(dsn: str) -> None:
    class CreditServiceDown(Exception):
        """The app's credit could not be applied."""

    async def failing(conn: psycopg.AsyncConnection[Any], purchase: payments.Purchase) -> None:
        raise CreditServiceDown("credits service unavailable")

    payload = delivery(razorpay_event("payment.captured"), SECRET)
    payments.set_credit_hook(failing)
    assert isinstance(await deliver(dsn, payload), CreditServiceDown)
    assert ledger(dsn) == ([], [])
    payments.set_credit_hook(credit)
    assert await deliver(dsn, payload) is None
    rows, credits = ledger(dsn)
    assert (len(rows), len(credits)) == (1, 1)


async def test_credit_hook_named_in_the_environment_runs(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    payments.set_credit_hook(None)
    monkeypatch.setenv(payments.CREDIT_HOOK_ENV, "tests.integration.test_razorpay:credit")
    assert await deliver(dsn, delivery(razorpay_event("order.paid"), SECRET)) is None
    assert ledger(dsn)[1] == [("order_TEST001", "order.paid")]


async def test_default_hook_records_only(dsn: str) -> None:
    payments.set_credit_hook(None)
    assert await deliver(dsn, delivery(razorpay_event("order.paid"), SECRET)) is None
    rows, credits = ledger(dsn)
    assert (len(rows), credits) == (1, [])


def _tampered() -> dict[str, Any]:
    payload = delivery(razorpay_event("payment.captured", amount=100), SECRET)
    signed_for_more = delivery(razorpay_event("payment.captured", amount=49_900), SECRET)
    payload["headers"] = signed_for_more["headers"]  # a real signature over another body
    return payload


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(
            delivery(razorpay_event("payment.captured"), "whsec_attacker"),
            "webhook signature does not match",
            id="forged-signature",
        ),
        pytest.param(_tampered(), "webhook signature does not match", id="tampered-body"),
        pytest.param(
            delivery(razorpay_event("payment.captured"), None),
            "webhook has no X-Razorpay-Signature header",
            id="missing-header",
        ),
        pytest.param(
            delivery(razorpay_event("payment.captured"), None, signature="not-hex"),
            "webhook signature does not match",
            id="garbage-signature",
        ),
        pytest.param(
            delivery(b'{"event": "payment.captured", ', SECRET),
            "webhook body is not valid JSON",
            id="malformed-json",
        ),
        pytest.param(
            {"headers": {}},
            "payload field 'body_b64' is missing",
            id="no-body",
        ),
    ],
)
async def test_bad_delivery_fails_permanently_and_records_nothing(
    dsn: str, payload: dict[str, Any], message: str
) -> None:
    outcome = await deliver(dsn, payload)
    assert isinstance(outcome, PermanentError)
    assert message in str(outcome)
    assert ledger(dsn) == ([], [])


async def test_delivery_under_a_secret_we_do_not_hold_fails_and_records_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", "whsec_rotated_away")
    outcome = await deliver(dsn, delivery(razorpay_event("payment.captured"), SECRET))
    assert isinstance(outcome, PermanentError)
    assert "does not match RAZORPAY_WEBHOOK_SECRET" in str(outcome)
    assert ledger(dsn) == ([], [])


async def test_lowercase_signature_header_is_accepted(dsn: str) -> None:
    payload = delivery(razorpay_event("payment.captured"), SECRET)
    payload["headers"] = {k.lower(): v for k, v in payload["headers"].items()}
    assert await deliver(dsn, payload) is None
    assert len(ledger(dsn)[0]) == 1


async def test_previous_secret_is_accepted_during_rotation_only(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = delivery(razorpay_event("payment.captured"), PREVIOUS)
    assert isinstance(await deliver(dsn, old), PermanentError)  # window not open
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET_PREVIOUS", PREVIOUS)
    assert await deliver(dsn, old) is None
    assert len(ledger(dsn)[1]) == 1


async def test_missing_webhook_secret_is_a_config_error_and_records_nothing(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAZORPAY_WEBHOOK_SECRET")
    outcome = await deliver(dsn, delivery(razorpay_event("payment.captured"), SECRET))
    assert isinstance(outcome, ConfigError)
    assert "RAZORPAY_WEBHOOK_SECRET is not set" in str(outcome)
    assert ledger(dsn) == ([], [])


async def expect(dsn: str, amount: int, currency: str, email: str | None = None) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await payments.aexpect_order(conn, "order_TEST001", email, amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (99_900, "INR", "order order_TEST001: paid 49900 paise, the order expects 99900"),
        (49_900, "USD", "order order_TEST001: paid in INR, the order expects USD"),
    ],
)
async def test_payment_unlike_the_order_expectation_fails_and_records_nothing(
    dsn: str, amount: int, currency: str, message: str
) -> None:
    await expect(dsn, amount, currency)
    outcome = await deliver(dsn, delivery(razorpay_event("order.paid"), SECRET))
    assert isinstance(outcome, payments.PaymentMismatchError)
    assert str(outcome) == message
    assert ledger(dsn) == ([], [])


async def test_payment_matching_the_expectation_is_credited_with_its_email(dsn: str) -> None:
    await expect(dsn, 49_900, "inr", email="app-side@example.com")
    event = razorpay_event("payment.captured", email=None)
    assert await deliver(dsn, delivery(event, SECRET)) is None
    rows, credits = ledger(dsn)
    assert rows == [("order_TEST001", "app-side@example.com", 49_900, "captured")]
    assert len(credits) == 1


@pytest.mark.parametrize("event", ["payment.failed", "refund.processed", "payment.authorized"])
async def test_unhandled_event_completes_with_a_note_and_records_nothing(
    dsn: str, event: str
) -> None:
    body = {**razorpay_event("payment.captured"), "event": event}
    with capture_logs() as logs:
        assert await deliver(dsn, delivery(body, SECRET, event_id="evt_9")) is None
    assert ledger(dsn) == ([], [])
    ignored = [e for e in logs if e["event"] == "razorpay.event_ignored"]
    assert [(e["razorpay_event"], e["event_id"]) for e in ignored] == [(event, "evt_9")]


async def test_signed_event_without_order_fails_permanently(dsn: str) -> None:
    event = razorpay_event("payment.captured")
    del event["payload"]["payment"]["entity"]["order_id"]
    outcome = await deliver(dsn, delivery(event, SECRET))
    assert isinstance(outcome, PermanentError)
    assert "has no order_id" in str(outcome)
    assert ledger(dsn) == ([], [])


async def test_an_unregistered_order_is_refused_when_expected_orders_are_required(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(payments.REQUIRE_EXPECTED_ENV, "1")
    outcome = await deliver(dsn, delivery(razorpay_event("payment.captured"), SECRET))
    assert isinstance(outcome, payments.UnexpectedOrderError)
    assert str(outcome) == (
        "order order_TEST001 was never registered with expect_order and "
        "LISTENER_REQUIRE_EXPECTED_ORDERS is on; nothing recorded"
    )
    assert ledger(dsn) == ([], [])


async def test_a_registered_order_is_credited_when_expected_orders_are_required(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(payments.REQUIRE_EXPECTED_ENV, "true")
    await expect(dsn, 49_900, "INR")
    assert await deliver(dsn, delivery(razorpay_event("order.paid"), SECRET)) is None
    assert len(ledger(dsn)[1]) == 1


async def test_an_invalid_require_setting_is_a_config_error(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(payments.REQUIRE_EXPECTED_ENV, "sometimes")
    outcome = await deliver(dsn, delivery(razorpay_event("payment.captured"), SECRET))
    assert isinstance(outcome, ConfigError)
    assert ledger(dsn) == ([], [])


async def test_order_paid_short_of_the_orders_amount_fails_and_records_nothing(dsn: str) -> None:
    event = razorpay_event("order.paid", amount=20_000, order_amount=49_900, amount_paid=20_000)
    outcome = await deliver(dsn, delivery(event, SECRET))
    assert isinstance(outcome, PermanentError)
    assert str(outcome) == (
        "order.paid for order order_TEST001: amount_paid 20000 paise is not the order's "
        "amount 49900; nothing recorded"
    )
    assert ledger(dsn) == ([], [])


async def test_partial_payments_credit_the_order_once_when_it_is_paid_in_full(dsn: str) -> None:
    await expect(dsn, 49_900, "INR")
    first = razorpay_event("payment.captured", amount=20_000, payment_id="pay_part1")
    last = razorpay_event("payment.captured", amount=29_900, payment_id="pay_part2")
    paid = razorpay_event(
        "order.paid", amount=29_900, payment_id="pay_part2", order_amount=49_900,
        amount_paid=49_900,
    )  # fmt: skip
    with capture_logs() as logs:
        for event in (first, last):
            assert await deliver(dsn, delivery(event, SECRET)) is None
        assert ledger(dsn) == ([], [])  # a part is not the purchase
        assert await deliver(dsn, delivery(paid, SECRET)) is None
    rows, credits = ledger(dsn)
    assert rows == [("order_TEST001", "buyer@example.com", 49_900, "paid")]
    assert credits == [("order_TEST001", "order.paid")]
    assert [e["event"] for e in logs if e["event"].startswith("razorpay.")] == [
        "razorpay.partial",
        "razorpay.partial",
        "razorpay.credited",
    ]


async def test_a_known_answer_signature_is_accepted(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signature Razorpay would send, computed outside Python (see KNOWN_ANSWER)."""
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", KNOWN_ANSWER_SECRET)
    payload = delivery(KNOWN_ANSWER_BODY, None, signature=KNOWN_ANSWER_SIGNATURE)
    assert await deliver(dsn, payload) is None
    assert ledger(dsn)[0] == [("order_KAT01", None, 49_900, "paid")]


def test_signature_helper_matches_razorpay_scheme() -> None:
    # Guards the tests themselves: the helper signs the exact bytes it sends.
    payload = delivery(razorpay_event("order.paid"), SECRET)
    import base64

    body = base64.b64decode(payload["body_b64"])
    assert json.loads(body)["event"] == "order.paid"
    assert payload["headers"]["X-Razorpay-Signature"] == sign(body, SECRET)
