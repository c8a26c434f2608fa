"""razorpay_webhook: verify a Razorpay webhook delivery, then credit its order once.

Payload, as the web endpoint received the request: ``body_b64`` (the raw body,
base64) and ``headers`` (name -> value, any case); optional ``received_at``.

Outcomes: a missing or forged signature, or a body that is not a Razorpay event,
fails the task and records nothing. ``payment.captured`` and ``order.paid`` for
the same order are one purchase: the first recorded runs the credit hook, later
ones complete without effect. Other events complete with an ``ignored`` log line.
An amount or currency unlike the order's expectation fails the task; so does an
unregistered order when ``LISTENER_REQUIRE_EXPECTED_ORDERS`` is on, and an
``order.paid`` whose ``amount_paid`` is not its ``amount``. A partial payment of a
registered order completes without effect (its ``order.paid`` credits it).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog

from handlers import payload as fields
from handlers.settings import razorpay_webhook_secrets
from listener import PermanentError, Task, handler, payments

log = structlog.get_logger("handlers.razorpay_webhook")

PAYLOAD_FIELDS = frozenset({"body_b64", "headers", "received_at"})
SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
# Both events announce the same purchase; the ledger's unique order_id joins them.
HANDLED_EVENTS = {"payment.captured": "captured", "order.paid": "paid"}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook request as the endpoint received it."""

    body: bytes
    headers: dict[str, str]  # lower-case names

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Delivery:
        fields.reject_unknown(payload, PAYLOAD_FIELDS)
        encoded = fields.required_text(payload, "body_b64")
        try:
            body = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise PermanentError("payload field 'body_b64' is not valid base64") from None
        headers = payload.get("headers")
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise PermanentError("payload field 'headers' must be an object of strings")
        return cls(body, {k.lower(): v for k, v in headers.items()})


@handler("razorpay_webhook", transactional=True, check_settings=razorpay_webhook_secrets)
async def razorpay_webhook(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
    """Verify, then record and credit in the transaction that completes the task."""
    delivery = Delivery.from_payload(task.payload)
    event_id = delivery.headers.get(EVENT_ID_HEADER)
    verify(delivery)
    event = parse_event(delivery.body)
    name = event["event"]
    if name not in HANDLED_EVENTS:
        log.info("razorpay.event_ignored", razorpay_event=name, event_id=event_id)
        return
    purchase = purchase_from(event, name)
    settlement = await payments.settle(conn, purchase)
    log.info(
        f"razorpay.{settlement}",
        razorpay_event=name,
        event_id=event_id,
        order_id=purchase.order_id,
        payment_id=purchase.payment_id,
    )


def verify(delivery: Delivery) -> None:
    """PermanentError unless the signature header matches a configured secret."""
    signature = delivery.headers.get(SIGNATURE_HEADER)
    if not signature:
        raise PermanentError("webhook has no X-Razorpay-Signature header; nothing recorded")
    if not payments.verify_webhook_signature(delivery.body, signature, razorpay_webhook_secrets()):
        raise PermanentError(
            "webhook signature does not match RAZORPAY_WEBHOOK_SECRET "
            "(or RAZORPAY_WEBHOOK_SECRET_PREVIOUS); nothing recorded"
        )


def parse_event(body: bytes) -> dict[str, Any]:
    """The event object; PermanentError if the body is not one."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise PermanentError("webhook body is not valid JSON; nothing recorded") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise PermanentError("webhook body has no 'event' name; nothing recorded")
    return event


def purchase_from(event: Mapping[str, Any], name: str) -> payments.Purchase:
    """The purchase a handled event describes; PermanentError names a missing field.

    ``order.paid`` is the order's total: its ``amount_paid``, which must equal its
    ``amount`` (with partial payments the payment entity is only the last part).
    """
    payment = _dig(event, name, "payload", "payment", "entity")
    order_id = payment.get("order_id")
    if name == "order.paid":
        order_id = _dig(event, name, "payload", "order", "entity", "id")
    if not isinstance(order_id, str) or not order_id:
        raise PermanentError(f"{name} event has no order_id; only orders are credited")
    if name == "order.paid":
        amount = _order_paid_in_full(event, name, order_id)
        currency = _dig(event, name, "payload", "order", "entity", "currency")
    else:
        amount = _amount(_dig(event, name, "payload", "payment", "entity", "amount"), name)
        currency = _dig(event, name, "payload", "payment", "entity", "currency")
    email = payment.get("email")
    return payments.Purchase(
        order_id=order_id,
        payment_id=str(_dig(event, name, "payload", "payment", "entity", "id")),
        amount_paise=amount,
        currency=str(currency).upper(),
        email=email if isinstance(email, str) and email else None,
        status=HANDLED_EVENTS[name],
        event=name,
    )


def _order_paid_in_full(event: Mapping[str, Any], name: str, order_id: str) -> int:
    entity = ("payload", "order", "entity")
    amount = _amount(_dig(event, name, *entity, "amount"), name)
    paid = _amount(_dig(event, name, *entity, "amount_paid"), name)
    if paid != amount:
        raise PermanentError(
            f"{name} for order {order_id}: amount_paid {paid} paise is not the order's "
            f"amount {amount}; nothing recorded"
        )
    return paid


def _amount(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentError(f"{name} event has an invalid payment amount")
    return value


def _dig(event: Mapping[str, Any], name: str, *path: str) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, Mapping) or value.get(key) is None:
            raise PermanentError(f"{name} event has no {'.'.join(path)}; nothing recorded")
        value = value[key]
    return value
