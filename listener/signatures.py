"""Razorpay's HMAC-SHA256 signatures: webhooks (over the raw body) and Checkout.

Constant-time comparisons; re-exported by ``listener.payments``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


def verify_webhook_signature(raw_body: bytes, signature: str, secrets: str | Iterable[str]) -> bool:
    """True if ``signature`` is the HMAC-SHA256 hex of ``raw_body`` under any of ``secrets``.

    Pass the current and the previous secret during a rotation window.
    """
    candidates = [secrets] if isinstance(secrets, str) else list(secrets)
    if not isinstance(raw_body, bytes | bytearray) or not isinstance(signature, str):
        return False
    given = signature.strip().lower().encode()
    matched = False
    for secret in candidates:
        if not secret:
            continue
        expected = hmac.new(secret.encode(), bytes(raw_body), hashlib.sha256).hexdigest()
        # Every secret is checked, so timing does not tell which one matched.
        matched |= hmac.compare_digest(expected.encode(), given)
    return matched


def verify_payment_signature(
    order_id: str, payment_id: str, signature: str, key_secret: str
) -> bool:
    """True if ``signature`` is Checkout's HMAC-SHA256 hex over ``order_id|payment_id``."""
    if not all(isinstance(v, str) for v in (order_id, payment_id, signature, key_secret)):
        return False
    if not key_secret:
        return False
    message = f"{order_id}|{payment_id}".encode()
    expected = hmac.new(key_secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())
