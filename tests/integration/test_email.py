"""send_email against a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from handlers.email import SmtpTemporaryError, send_email
from listener import PermanentError
from tests.handler_tasks import make_task
from tests.integration.smtp_support import (
    PASSWORD,
    USERNAME,
    Mailbox,
    free_port,
    make_tls,
    point_at,
    silent_server,
    smtp_server,
)

PAYLOAD = {
    "to": "pat@example.com",
    "subject": "Your appointment",
    "body": "See you on Monday.",
    "html": "<p>See you on <b>Monday</b>.</p>",
    "reply_to": "care@clinic.example",
}


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_email_is_delivered_with_its_content_and_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox = Mailbox()
    task = make_task("send_email", PAYLOAD)
    with smtp_server(mailbox) as port, capture_logs() as logs:
        point_at(monkeypatch, port)
        send_email(task)
    [(recipients, raw)] = mailbox.messages
    message = parsed(raw)
    assert recipients == ["pat@example.com"]
    assert message["Message-ID"] == f"<{task.id}@clinic.example>"
    assert message["Subject"] == "Your appointment"
    assert message["From"] == "Clinic <noreply@clinic.example>"
    assert message["To"] == "pat@example.com"
    assert message["Reply-To"] == "care@clinic.example"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert text.get_content().strip() == "See you on Monday."
    assert html is not None
    assert "<b>Monday</b>" in html.get_content()
    sent = [e for e in logs if e["event"] == "email.sent"]
    assert sent == [
        {
            "event": "email.sent",
            "log_level": "info",
            "message_id": f"<{task.id}@clinic.example>",
            "recipients": 1,
        }
    ]


def test_retried_send_reuses_the_task_id_as_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox = Mailbox()
    task = make_task("send_email", PAYLOAD)
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        send_email(task)
        send_email(make_task("send_email", PAYLOAD))  # another task: another id
        send_email(task)  # the same task again, as after a lost acknowledgement
    ids = [parsed(raw)["Message-ID"] for _, raw in mailbox.messages]
    assert ids[0] == ids[2] == f"<{task.id}@clinic.example>"
    assert ids[1] != ids[0]


def test_email_is_sent_over_starttls_with_auth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    mailbox = Mailbox()
    options = {
        "tls_context": tls.server_context,
        "require_starttls": True,
        "auth_require_tls": True,
        "auth_required": True,
        "authenticator": mailbox.authenticate,
    }
    with smtp_server(mailbox, **options) as port:
        point_at(
            monkeypatch,
            port,
            SMTP_SECURITY="starttls",
            SMTP_CA_FILE=str(tls.ca_file),
            SMTP_USERNAME=USERNAME,
            SMTP_PASSWORD=PASSWORD,
        )
        send_email(make_task("send_email", PAYLOAD))
    assert mailbox.logins == [USERNAME]
    assert len(mailbox.messages) == 1


def test_email_is_sent_over_implicit_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    mailbox = Mailbox()
    with smtp_server(mailbox, ssl_context=tls.server_context) as port:
        point_at(monkeypatch, port, SMTP_SECURITY="tls", SMTP_CA_FILE=str(tls.ca_file))
        send_email(make_task("send_email", PAYLOAD))
    assert len(mailbox.messages) == 1


def test_untrusted_server_certificate_is_retried_and_nothing_sent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    mailbox = Mailbox()
    with smtp_server(mailbox, tls_context=tls.server_context) as port:
        point_at(monkeypatch, port, SMTP_SECURITY="starttls")  # no SMTP_CA_FILE
        with pytest.raises(SmtpTemporaryError, match="CERTIFICATE_VERIFY_FAILED"):
            send_email(make_task("send_email", PAYLOAD))
    assert mailbox.messages == []


def test_wrong_smtp_password_is_retried_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    mailbox = Mailbox()
    options = {"tls_context": tls.server_context, "authenticator": mailbox.authenticate}
    with smtp_server(mailbox, **options) as port:
        point_at(
            monkeypatch,
            port,
            SMTP_SECURITY="starttls",
            SMTP_CA_FILE=str(tls.ca_file),
            SMTP_USERNAME=USERNAME,
            SMTP_PASSWORD="wrong",
        )
        with pytest.raises(SmtpTemporaryError, match=r"authentication failed \(535.*SMTP_PASSWORD"):
            send_email(make_task("send_email", PAYLOAD))
    assert mailbox.messages == []


def test_recipient_deferred_with_4xx_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox = Mailbox(rcpt_reply="451 4.7.1 <pat@example.com> greylisted, try again later")
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        with pytest.raises(
            SmtpTemporaryError, match="deferred the recipients \\(codes \\[451\\]\\)"
        ):
            send_email(make_task("send_email", PAYLOAD))
    assert mailbox.messages == []


def test_recipient_refused_with_5xx_fails_without_naming_the_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox = Mailbox(rcpt_reply="550 5.1.1 <pat@example.com>: user unknown")
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        with pytest.raises(
            PermanentError, match="refused every recipient \\(codes \\[550\\]\\)"
        ) as err:
            send_email(make_task("send_email", PAYLOAD))
    assert "pat@example.com" not in str(err.value)


def test_message_rejected_with_5xx_fails_with_the_server_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox = Mailbox(data_reply="554 5.7.1 Message rejected as spam for pat@example.com")
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        with pytest.raises(PermanentError) as err:
            send_email(make_task("send_email", PAYLOAD))
    assert str(err.value) == (
        "SMTP server rejected the message: 554 5.7.1 Message rejected as spam for <address>"
    )


def test_message_deferred_with_4xx_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox = Mailbox(data_reply="452 4.3.1 Insufficient system storage")
    with smtp_server(mailbox) as port:
        point_at(monkeypatch, port)
        with pytest.raises(SmtpTemporaryError, match="deferred the message: 452"):
            send_email(make_task("send_email", PAYLOAD))


def test_one_recipient_refused_while_another_accepted_completes_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox = Mailbox(refuse={"gone@example.com": "550 5.1.1 user unknown"})
    payload = {**PAYLOAD, "to": ["pat@example.com", "gone@example.com"]}
    with smtp_server(mailbox) as port, capture_logs() as logs:
        point_at(monkeypatch, port)
        send_email(make_task("send_email", payload))  # a retry would send pat a second copy
    assert [recipients for recipients, _ in mailbox.messages] == [["pat@example.com"]]
    assert [e["refused"] for e in logs if e["event"] == "email.partly_refused"] == [[550]]


def test_unreachable_smtp_server_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(monkeypatch, free_port())  # nothing listens there
    with pytest.raises(SmtpTemporaryError, match=r"cannot send through SMTP server 127\.0\.0\.1"):
        send_email(make_task("send_email", PAYLOAD))


def test_hung_smtp_server_times_out_and_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with silent_server() as port:
        point_at(monkeypatch, port, SMTP_TIMEOUT_S="0.5")
        started = time.monotonic()
        with pytest.raises(SmtpTemporaryError, match="timed out"):
            send_email(make_task("send_email", PAYLOAD))
    assert time.monotonic() - started < 5  # bounded by SMTP_TIMEOUT_S, not by the OS


def test_malformed_payload_fails_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(monkeypatch, free_port())  # would be a retryable error if it connected
    with pytest.raises(PermanentError, match="payload field 'subject' is missing"):
        send_email(make_task("send_email", {"to": "pat@example.com", "body": "x"}))
