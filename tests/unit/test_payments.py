"""listener.payments without a database: signatures, argument checks, the credit hook."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from listener import payments
from listener.errors import ConfigError
from tests.handler_tasks import sign

BODY = b'{"event":"payment.captured","payload":{}}'


def test_webhook_signature_passes_rfc_4231_known_answer() -> None:
    """RFC 4231, test case 2: HMAC-SHA256 of a published message under a published key,
    not computed by this code base (nor by the tests' own signing helper)."""
    signature = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert payments.verify_webhook_signature(b"what do ya want for nothing?", signature, "Jefe")
    assert not payments.verify_webhook_signature(b"what do ya want for nothing!", signature, "Jefe")


def test_webhook_signature_is_the_rfc_2104_construction_over_the_raw_body() -> None:
    """HMAC built by hand from SHA-256 (H((K^opad) || H((K^ipad) || body))), not hmac."""
    key = b"whsec_by_hand".ljust(64, b"\0")
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + BODY).digest()
    by_hand = hashlib.sha256(bytes(k ^ 0x5C for k in key) + inner).hexdigest()
    assert payments.verify_webhook_signature(BODY, by_hand, "whsec_by_hand")


def test_webhook_signature_from_current_secret_is_accepted() -> None:
    assert payments.verify_webhook_signature(BODY, sign(BODY, "current"), ["current"])


def test_webhook_signature_accepts_a_single_secret_string() -> None:
    assert payments.verify_webhook_signature(BODY, sign(BODY, "current"), "current")


def test_webhook_signature_over_a_tampered_body_is_rejected() -> None:
    tampered = BODY.replace(b"captured", b"failed")
    assert not payments.verify_webhook_signature(tampered, sign(BODY, "current"), ["current"])


def test_webhook_signature_from_another_secret_is_rejected() -> None:
    assert not payments.verify_webhook_signature(BODY, sign(BODY, "attacker"), ["current"])


def test_previous_secret_is_accepted_during_rotation_and_not_after() -> None:
    old_signature = sign(BODY, "previous")
    assert payments.verify_webhook_signature(BODY, old_signature, ["current", "previous"])
    assert not payments.verify_webhook_signature(BODY, old_signature, ["current"])


def test_webhook_signature_with_no_usable_secret_is_rejected() -> None:
    # An empty secret must never verify, or an unset variable would accept anything
    # signed with the empty key.
    assert not payments.verify_webhook_signature(BODY, sign(BODY, ""), ["", ""])
    assert not payments.verify_webhook_signature(BODY, sign(BODY, ""), [])


def test_webhook_signature_that_is_not_a_string_is_rejected() -> None:
    signature: Any = None
    assert not payments.verify_webhook_signature(BODY, signature, ["current"])


def test_webhook_signature_comparison_ignores_hex_case_and_whitespace() -> None:
    assert payments.verify_webhook_signature(BODY, f" {sign(BODY, 'k').upper()}\n", ["k"])


def test_checkout_signature_over_order_and_payment_is_accepted() -> None:
    expected = hmac.new(b"key_secret", b"order_1|pay_1", hashlib.sha256).hexdigest()
    assert payments.verify_payment_signature("order_1", "pay_1", expected, "key_secret")


def test_checkout_signature_with_ids_swapped_or_wrong_key_is_rejected() -> None:
    signature = hmac.new(b"key_secret", b"order_1|pay_1", hashlib.sha256).hexdigest()
    assert not payments.verify_payment_signature("pay_1", "order_1", signature, "key_secret")
    assert not payments.verify_payment_signature("order_1", "pay_1", signature, "other")
    assert not payments.verify_payment_signature("order_1", "pay_1", signature, "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", "a@b.co", 100, "captured"), "order_id must be a non-empty string"),
        (("o" * 129, "a@b.co", 100, "captured"), "order_id must be a non-empty string of at most"),
        (("order_1", "e" * 321, 100, "captured"), "email must be None or a string of at most 320"),
        (("order_1", None, 100, "paid; --"), "status must be a word of at most 32"),
        (("order_1", "a@b.co", -1, "captured"), "amount_paise must be a non-negative integer"),
        (("order_1", "a@b.co", True, "captured"), "amount_paise must be a non-negative integer"),
        (("order_1", "a@b.co", 10.5, "captured"), "amount_paise must be a non-negative integer"),
        (("order_1", "a@b.co", 100, ""), "status must be a word"),
    ],
)
def test_record_transaction_rejects_bad_arguments_before_touching_the_database(
    args: tuple[Any, ...], message: str
) -> None:
    no_connection: Any = None
    with pytest.raises(ValueError, match=message):
        payments.record_transaction(no_connection, *args)


def test_expect_order_rejects_a_currency_that_is_not_a_code() -> None:
    no_connection: Any = None
    with pytest.raises(ValueError, match="currency must be a 3-letter code"):
        payments.expect_order(no_connection, "order_1", None, 100, "rupees")


async def credit_for_tests(conn: Any, purchase: payments.Purchase) -> None:
    """A hook the environment variable can name."""


def not_async(conn: Any, purchase: payments.Purchase) -> None:
    """A synchronous function: not accepted as a hook."""


@pytest.fixture
def no_hook(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv(payments.CREDIT_HOOK_ENV, raising=False)
    payments.set_credit_hook(None)
    yield
    payments.set_credit_hook(None)


@pytest.mark.usefixtures("no_hook")
def test_default_credit_hook_records_only() -> None:
    assert payments.credit_hook() is payments.record_only


@pytest.mark.usefixtures("no_hook")
def test_credit_hook_set_in_code_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(payments.CREDIT_HOOK_ENV, "tests.unit.test_payments:credit_for_tests")
    assert payments.credit_hook() is credit_for_tests

    async def in_code(conn: Any, purchase: payments.Purchase) -> None:
        """Set in code."""

    payments.set_credit_hook(in_code)
    assert payments.credit_hook() is in_code


@pytest.mark.usefixtures("no_hook")
def test_synchronous_credit_hook_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be an async function"):
        payments.set_credit_hook(not_async)


@pytest.mark.usefixtures("no_hook")
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.unit.test_payments.credit_for_tests", "must look like 'package.module:function'"),
        ("tests.unit.no_such_module:f", "cannot be loaded: No module named"),
        ("tests.unit.test_payments:missing", "cannot be loaded"),
        ("tests.unit.test_payments:not_async", "is not an async function"),
    ],
)
def test_credit_hook_named_badly_in_the_environment_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, path: str, message: str
) -> None:
    monkeypatch.setenv(payments.CREDIT_HOOK_ENV, path)
    with pytest.raises(ConfigError, match=message):
        payments.credit_hook()
