"""Payments: Razorpay signatures, exactly-once recording, and the app's credit hook.

An order is credited once however often, in whatever order and however
concurrently its events arrive: ``credit_once`` records the order (unique by
``order_id``) and runs the credit hook in the caller's transaction, and only the
transaction that recorded it first runs the hook.

Amounts are trusted only as far as the app said: an order registered with
``expect_order`` must be paid exactly that; an unregistered one is refused when
``LISTENER_REQUIRE_EXPECTED_ORDERS`` is on (recommended for production), else
credited as the signed event reports it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from listener.errors import ConfigError, PermanentError
from listener.signatures import verify_payment_signature, verify_webhook_signature
from listener.sqlfiles import query

CREDIT_HOOK_ENV = "LISTENER_CREDIT_HOOK"
REQUIRE_EXPECTED_ENV = "LISTENER_REQUIRE_EXPECTED_ORDERS"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}

Settlement = Literal["credited", "already_recorded", "partial"]
_STATUS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class Purchase:
    """One paid order, as a verified webhook event describes it."""

    order_id: str
    payment_id: str
    amount_paise: int
    currency: str
    email: str | None
    status: str  # "captured" (payment.captured) or "paid" (order.paid)
    event: str  # order.paid: the order's amount_paid, checked to equal its amount


@dataclass(frozen=True, slots=True)
class ExpectedOrder:
    """What the app said an order must be paid with (``expect_order``)."""

    order_id: str
    email: str | None
    amount_paise: int
    currency: str


class PaymentMismatchError(PermanentError):
    """A payment's amount or currency differs from what its order expects."""


class UnexpectedOrderError(PermanentError):
    """An order the app never registered, while ``LISTENER_REQUIRE_EXPECTED_ORDERS`` is on."""


CreditHook = Callable[[psycopg.AsyncConnection[Any], Purchase], Awaitable[None]]

# -- the ledger -------------------------------------------------------------------


def _record_params(
    order_id: str, email: str | None, amount_paise: int, status: str
) -> dict[str, Any]:
    # The same bounds as the ledger's CHECK constraints (migration 0009), said plainly.
    if not isinstance(order_id, str) or not 0 < len(order_id) <= 128:
        raise ValueError("order_id must be a non-empty string of at most 128 characters")
    if email is not None and (not isinstance(email, str) or len(email) > 320):
        raise ValueError("email must be None or a string of at most 320 characters")
    if isinstance(amount_paise, bool) or not isinstance(amount_paise, int) or amount_paise < 0:
        raise ValueError(f"amount_paise must be a non-negative integer, got {amount_paise!r}")
    if not isinstance(status, str) or not _STATUS.match(status):
        raise ValueError(
            f"status must be a word of at most 32 letters, digits, _ or -, got {status!r}"
        )
    return {"order_id": order_id, "email": email, "amount": amount_paise, "status": status}


def record_transaction(
    conn: psycopg.Connection[Any], order_id: str, email: str | None, amount_paise: int, status: str
) -> bool:
    """Record an order in ``public.transactions``; True only for its first recording."""
    params = _record_params(order_id, email, amount_paise, status)
    row = conn.execute(query("payments_record_transaction"), params).fetchone()
    return bool(row and row[0])


async def arecord_transaction(
    conn: psycopg.AsyncConnection[Any],
    order_id: str,
    email: str | None,
    amount_paise: int,
    status: str,
) -> bool:
    """Async ``record_transaction``."""
    params = _record_params(order_id, email, amount_paise, status)
    cur = await conn.execute(query("payments_record_transaction"), params)
    row = await cur.fetchone()
    return bool(row and row[0])


def _order_params(
    order_id: str, email: str | None, amount_paise: int, currency: str
) -> dict[str, Any]:
    params = _record_params(order_id, email, amount_paise, "expected")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"currency must be a 3-letter code such as 'INR', got {currency!r}")
    return {**params, "currency": currency.upper()}


def expect_order(
    conn: psycopg.Connection[Any],
    order_id: str,
    email: str | None,
    amount_paise: int,
    currency: str = "INR",
) -> None:
    """Remember what ``order_id`` must be paid with; call it when creating the order."""
    params = _order_params(order_id, email, amount_paise, currency)
    conn.execute(query("payments_expect_order"), params)


async def aexpect_order(
    conn: psycopg.AsyncConnection[Any],
    order_id: str,
    email: str | None,
    amount_paise: int,
    currency: str = "INR",
) -> None:
    """Async ``expect_order``."""
    params = _order_params(order_id, email, amount_paise, currency)
    await conn.execute(query("payments_expect_order"), params)


async def aexpected_order(
    conn: psycopg.AsyncConnection[Any], order_id: str
) -> ExpectedOrder | None:
    """What the app expects ``order_id`` to be paid with, if it said so."""
    cur = await conn.execute(query("payments_expected_order"), {"order_id": order_id})
    row = await cur.fetchone()
    return None if row is None else ExpectedOrder(row[0], row[1], int(row[2]), row[3])


# -- crediting once ---------------------------------------------------------------


async def credit_once(conn: psycopg.AsyncConnection[Any], purchase: Purchase) -> bool:
    """Check, record and credit ``purchase`` in ``conn``'s transaction; True if credited now.

    A concurrent delivery for the same order waits on the ledger's unique key and
    returns False once the first commits, so the credit hook runs once per order.
    """
    return await settle(conn, purchase) == "credited"


async def settle(conn: psycopg.AsyncConnection[Any], purchase: Purchase) -> Settlement:
    """``credit_once``, saying what happened: credited, already recorded, or partial.

    ``partial``: a ``payment.captured`` for less than a registered order expects, in its
    currency (Razorpay partial payments). Nothing is recorded; the order is credited by
    its ``order.paid``, which Razorpay sends once the order is paid in full.
    """
    expected = await aexpected_order(conn, purchase.order_id)
    if expected is None and require_expected_orders():
        raise UnexpectedOrderError(
            f"order {purchase.order_id} was never registered with expect_order and "
            f"{REQUIRE_EXPECTED_ENV} is on; nothing recorded"
        )
    if expected is not None:
        if _is_partial(purchase, expected):
            return "partial"
        _check_expected(purchase, expected)
    email = purchase.email or (expected.email if expected else None)
    first = await arecord_transaction(
        conn, purchase.order_id, email, purchase.amount_paise, purchase.status
    )
    if not first:
        return "already_recorded"
    await credit_hook()(conn, purchase)
    return "credited"


def require_expected_orders() -> bool:
    """``LISTENER_REQUIRE_EXPECTED_ORDERS``: refuse orders never registered with expect_order."""
    raw = os.environ.get(REQUIRE_EXPECTED_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{REQUIRE_EXPECTED_ENV}={raw!r} must be 1 or 0 (true/false, yes/no, on/off)")


def _is_partial(purchase: Purchase, expected: ExpectedOrder) -> bool:
    return (
        purchase.event == "payment.captured"
        and purchase.currency.upper() == expected.currency
        and 0 < purchase.amount_paise < expected.amount_paise
    )


def _check_expected(purchase: Purchase, expected: ExpectedOrder) -> None:
    if purchase.currency.upper() != expected.currency:
        raise PaymentMismatchError(
            f"order {purchase.order_id}: paid in {purchase.currency}, "
            f"the order expects {expected.currency}"
        )
    if purchase.amount_paise != expected.amount_paise:
        raise PaymentMismatchError(
            f"order {purchase.order_id}: paid {purchase.amount_paise} paise, "
            f"the order expects {expected.amount_paise}"
        )


# -- the credit hook --------------------------------------------------------------

_hook: CreditHook | None = None


async def record_only(conn: psycopg.AsyncConnection[Any], purchase: Purchase) -> None:
    """The default credit hook: the ledger row is the whole effect."""


def set_credit_hook(hook: CreditHook | None) -> None:
    """Run ``async hook(conn, purchase)`` once per newly recorded order (None: the default).

    The hook runs inside the recording transaction: write with ``conn`` so the
    credit commits (or rolls back) with the ledger row.
    """
    if hook is not None and not inspect.iscoroutinefunction(hook):
        raise ConfigError("the credit hook must be an async function: async def f(conn, purchase)")
    global _hook
    _hook = hook


def credit_hook() -> CreditHook:
    """The hook set in code, else the one ``LISTENER_CREDIT_HOOK`` names, else ``record_only``."""
    if _hook is not None:
        return _hook
    path = os.environ.get(CREDIT_HOOK_ENV, "").strip()
    return _import_hook(path) if path else record_only


def _import_hook(path: str) -> CreditHook:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{CREDIT_HOOK_ENV}={path!r} must look like 'package.module:function'")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{CREDIT_HOOK_ENV}={path!r} cannot be loaded: {exc}") from None
    if not inspect.iscoroutinefunction(hook):
        raise ConfigError(f"{CREDIT_HOOK_ENV}={path!r} is not an async function")
    return hook  # type: ignore[no-any-return]


__all__ = [
    "CreditHook",
    "ExpectedOrder",
    "PaymentMismatchError",
    "Purchase",
    "Settlement",
    "UnexpectedOrderError",
    "aexpect_order",
    "aexpected_order",
    "arecord_transaction",
    "credit_hook",
    "credit_once",
    "expect_order",
    "record_only",
    "record_transaction",
    "require_expected_orders",
    "set_credit_hook",
    "settle",
    "verify_payment_signature",
    "verify_webhook_signature",
]
