"""Build the Task objects the engine hands to handlers, and signed Razorpay deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from listener import Task


def make_task(task_type: str, payload: dict[str, Any], *, attempt: int = 1) -> Task:
    """A claimed task as the engine would pass it."""
    return Task(
        id=uuid.uuid4(),
        type=task_type,
        payload=payload,
        attempt=attempt,
        max_attempts=5,
        created_at=datetime.now(UTC),
    )


def razorpay_event(
    event: str,
    *,
    order_id: str = "order_TEST001",
    payment_id: str = "pay_TEST001",
    amount: int = 49_900,
    currency: str = "INR",
    email: str | None = "buyer@example.com",
    order_amount: int | None = None,
    amount_paid: int | None = None,
) -> dict[str, Any]:
    """A Razorpay webhook event shaped like the real ones (trimmed to what we read).

    For ``order.paid``, the order's ``amount`` and ``amount_paid`` default to the
    payment's ``amount`` (one full payment); set them for partial payments.
    """
    payment = {
        "id": payment_id,
        "entity": "payment",
        "amount": amount,
        "currency": currency,
        "status": "captured",
        "order_id": order_id,
        "email": email,
    }
    body: dict[str, Any] = {
        "entity": "event",
        "account_id": "acc_TEST",
        "event": event,
        "contains": ["payment"],
        "payload": {"payment": {"entity": payment}},
        "created_at": 1_700_000_000,
    }
    if event == "order.paid":
        body["contains"] = ["payment", "order"]
        body["payload"]["order"] = {
            "entity": {
                "id": order_id,
                "entity": "order",
                "amount": amount if order_amount is None else order_amount,
                "amount_paid": amount if amount_paid is None else amount_paid,
                "currency": currency,
                "status": "paid",
            }
        }
    return body


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery(
    event: dict[str, Any] | bytes,
    secret: str | None,
    *,
    event_id: str = "evt_TEST",
    signature: str | None = None,
) -> dict[str, Any]:
    """A razorpay_webhook payload: the raw body base64 plus headers, as an endpoint stores it."""
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    headers = {"Content-Type": "application/json", "X-Razorpay-Event-Id": event_id}
    if signature is not None:
        headers["X-Razorpay-Signature"] = signature
    elif secret is not None:
        headers["X-Razorpay-Signature"] = sign(body, secret)
    return {"body_b64": base64.b64encode(body).decode(), "headers": headers}
