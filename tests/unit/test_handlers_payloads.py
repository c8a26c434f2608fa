"""Handler input checks without a server: each bad field fails permanently, by name."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from handlers import llm, razorpay_webhook, settings
from handlers.care_plan import CarePlanRequest
from handlers.email import build_message
from listener import PermanentError
from listener.errors import ConfigError
from tests.handler_tasks import razorpay_event

SMTP = settings.SmtpSettings(
    host="mail.example.com",
    port=587,
    security="starttls",
    username=None,
    password=None,
    sender="Clinic <noreply@clinic.example>",
    timeout_s=5,
    ca_file=None,
    message_id_domain="clinic.example",
)
EMAIL = {"to": "pat@example.com", "subject": "Hello", "body": "Plain text"}


def test_email_message_carries_headers_and_task_id_as_message_id() -> None:
    task_id = uuid.uuid4()
    payload = {**EMAIL, "html": "<p>Hi</p>", "reply_to": "care@clinic.example"}
    message, recipients = build_message(task_id, payload, SMTP)
    assert recipients == ["pat@example.com"]
    assert message["Message-ID"] == f"<{task_id}@clinic.example>"
    assert message["From"] == SMTP.sender
    assert message["Reply-To"] == "care@clinic.example"
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]


def test_email_to_may_be_a_list_of_addresses() -> None:
    _, recipients = build_message(uuid.uuid4(), {**EMAIL, "to": ["a@x.io", "b@y.io"]}, SMTP)
    assert recipients == ["a@x.io", "b@y.io"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": None}, "payload field 'to' is missing"),
        ({"to": []}, "payload field 'to' is an empty list"),
        ({"to": "not-an-address"}, "payload field 'to' is not an email address"),
        ({"to": ["ok@x.io", 7]}, "payload field 'to' must be a string, got int"),
        ({"subject": None}, "payload field 'subject' is missing"),
        ({"subject": "Hi\r\nBcc: x@evil.io"}, "payload field 'subject' must be one line"),
        ({"subject": "Hi\u2028Bcc: x@evil.io"}, "payload field 'subject' must be one line"),
        ({"subject": "Hi\u2029there"}, "payload field 'subject' must be one line"),
        ({"subject": "Hi\x85there"}, "payload field 'subject' must be one line"),
        ({"subject": "Hi\x0bthere"}, "payload field 'subject' must be one line"),
        ({"subject": "Hi\x1cthere"}, "payload field 'subject' must be one line"),
        ({"subject": "Hi\x00there"}, "payload field 'subject' must be one line"),
        ({"to": "pat\x00@example.com"}, "payload field 'to' is not an email address"),
        ({"reply_to": "care@clinic\x00.example"}, "payload field 'reply_to' is not an email"),
        ({"body": None}, "payload field 'body' is missing"),
        ({"html": 5}, "payload field 'html' must be a string, got int"),
        ({"reply_to": "nope"}, "payload field 'reply_to' is not an email address"),
        ({"cc": "x@y.io"}, "payload has unknown field\\(s\\) 'cc'"),
    ],
)
def test_malformed_email_payload_fails_permanently_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    payload = {k: v for k, v in {**EMAIL, **change}.items() if v is not None}
    with pytest.raises(PermanentError, match=message):
        build_message(uuid.uuid4(), payload, SMTP)


def test_smtp_settings_default_port_follows_security(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("SMTP_FROM", "noreply@clinic.example")
    monkeypatch.delenv("SMTP_PORT", raising=False)
    for security, port in (("starttls", 587), ("tls", 465), ("none", 25)):
        monkeypatch.setenv("SMTP_SECURITY", security)
        assert settings.smtp_settings().port == port
    assert settings.smtp_settings().message_id_domain == "clinic.example"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP_HOST": ""}, "SMTP_HOST is not set"),
        ({"SMTP_FROM": ""}, "SMTP_FROM is not set"),
        ({"SMTP_SECURITY": "ssl"}, "SMTP_SECURITY='ssl' must be starttls, tls or none"),
        ({"SMTP_PORT": "http"}, "SMTP_PORT='http' is not a TCP port"),
        ({"SMTP_USERNAME": "u"}, "set both SMTP_USERNAME and SMTP_PASSWORD"),
        ({"SMTP_TIMEOUT_S": "0"}, "SMTP_TIMEOUT_S='0' must be > 0"),
    ],
)
def test_bad_smtp_settings_are_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    base = {"SMTP_HOST": "mail.example.com", "SMTP_FROM": "noreply@clinic.example"}
    for name in ("SMTP_PORT", "SMTP_SECURITY", "SMTP_USERNAME", "SMTP_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**base, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        settings.smtp_settings()


CARE = {
    "email": "pat@example.com",
    "transcript": "Patient reports poor sleep.",
    "session_id": "sess-1",
    "blueprint_id": "bp-sleep",
    "host_url": "https://app.example.com",
}


def test_care_plan_ids_may_be_integers() -> None:
    request = CarePlanRequest.from_payload({**CARE, "session_id": 42, "blueprint_id": 7})
    assert (request.session_id, request.blueprint_id) == ("42", "7")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email": None}, "payload field 'email' is missing"),
        ({"email": "pat"}, "payload field 'email' is not an email address"),
        ({"transcript": "  "}, "payload field 'transcript' is empty"),
        ({"session_id": None}, "payload field 'session_id' is missing"),
        ({"blueprint_id": 1.5}, "payload field 'blueprint_id' must be a string, got float"),
        ({"host_url": "ftp://x"}, "payload field 'host_url' must be an http\\(s\\) URL"),
        ({"transcipt": "typo"}, "payload has unknown field\\(s\\) 'transcipt'"),
    ],
)
def test_malformed_care_plan_payload_fails_permanently_naming_the_field(
    change: dict[str, Any], message: str
) -> None:
    payload = {k: v for k, v in {**CARE, **change}.items() if v is not None}
    with pytest.raises(PermanentError, match=message):
        CarePlanRequest.from_payload(payload)


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert llm.retry_after_s("7") == 7.0
    assert llm.retry_after_s(later, now=now.timestamp()) == pytest.approx(30.0)
    assert llm.retry_after_s("soon") is None
    assert llm.retry_after_s(None) is None


def test_provider_message_echoing_the_transcript_is_detected() -> None:
    transcript = "The patient said their chest hurts when climbing the stairs at night."
    echo = f"Invalid request: '{transcript[10:60]}' is too long"
    assert llm._shares_text(echo, transcript)
    assert not llm._shares_text("model 'x' does not exist", transcript)


def test_razorpay_delivery_with_bad_base64_or_headers_fails_permanently() -> None:
    with pytest.raises(PermanentError, match="'body_b64' is not valid base64"):
        razorpay_webhook.Delivery.from_payload({"body_b64": "%%%", "headers": {}})
    body = base64.b64encode(b"{}").decode()
    with pytest.raises(PermanentError, match="'headers' must be an object of strings"):
        razorpay_webhook.Delivery.from_payload({"body_b64": body, "headers": ["x"]})


def test_razorpay_body_that_is_not_an_event_fails_permanently() -> None:
    with pytest.raises(PermanentError, match="not valid JSON"):
        razorpay_webhook.parse_event(b"{not json")
    with pytest.raises(PermanentError, match="no 'event' name"):
        razorpay_webhook.parse_event(b"[1, 2]")


def test_order_paid_and_payment_captured_describe_the_same_purchase() -> None:
    paid = razorpay_webhook.purchase_from(razorpay_event("order.paid"), "order.paid")
    captured = razorpay_webhook.purchase_from(
        razorpay_event("payment.captured"), "payment.captured"
    )
    assert (paid.order_id, paid.amount_paise) == (captured.order_id, captured.amount_paise)
    assert (paid.status, captured.status) == ("paid", "captured")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["payload"]["payment"]["entity"].pop("order_id"), "has no order_id"),
        (
            lambda e: e["payload"]["payment"]["entity"].update(amount="499"),
            "invalid payment amount",
        ),
        (lambda e: e["payload"].pop("payment"), "has no payload.payment.entity"),
    ],
)
def test_payment_event_missing_a_field_fails_permanently(mutate: Any, message: str) -> None:
    event = json.loads(json.dumps(razorpay_event("payment.captured")))
    mutate(event)
    with pytest.raises(PermanentError, match=message):
        razorpay_webhook.purchase_from(event, "payment.captured")
