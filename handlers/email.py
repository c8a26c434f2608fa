"""send_email: deliver one message over SMTP.

Payload: ``to`` (address or list), ``subject``, ``body`` (text), optional ``html``
and ``reply_to``. Settings: see ``handlers.settings.smtp_settings``. The task id is
the Message-ID, so a retried send can be recognised downstream.

Outcomes: 5xx (message, sender or every recipient refused) and a malformed payload
fail the task; 4xx, authentication and connection errors are retried.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import structlog

from handlers import payload as fields
from handlers.settings import SmtpSettings, smtp_settings
from listener import PermanentError, Task, handler

log = structlog.get_logger("handlers.email")

PAYLOAD_FIELDS = frozenset({"to", "subject", "body", "html", "reply_to"})
_ADDRESS_LIKE = re.compile(r"[^\s<>@,;:]+@[^\s<>@,;:]+")


class SmtpTemporaryError(Exception):
    """The server deferred the message or could not be reached; the engine retries."""


@handler("send_email", check_settings=smtp_settings)
def send_email(task: Task) -> None:
    """Send the task's message; raise per the outcomes in the module docstring."""
    settings = smtp_settings()
    message, recipients = build_message(task.id, task.payload, settings)
    refused = deliver(message, recipients, settings)
    if refused:
        # Some recipients have the message already: a retry would send it twice.
        log.warning("email.partly_refused", message_id=message["Message-ID"], refused=refused)
    log.info("email.sent", message_id=message["Message-ID"], recipients=len(recipients))


def build_message(
    task_id: uuid.UUID, payload: Mapping[str, Any], settings: SmtpSettings
) -> tuple[EmailMessage, list[str]]:
    """The message and its envelope recipients; PermanentError names a bad field."""
    fields.reject_unknown(payload, PAYLOAD_FIELDS)
    to = fields.addresses(payload, "to")
    subject = fields.header_text(payload, "subject")
    body = fields.text(payload, "body", required=False)
    if body is None:
        raise PermanentError("payload field 'body' is missing")
    html = fields.text(payload, "html", required=False)
    reply_to = payload.get("reply_to")
    message = EmailMessage()
    try:
        message["From"] = settings.sender
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = f"<{task_id}@{settings.message_id_domain}>"
        if reply_to is not None:
            message["Reply-To"] = fields.address(reply_to, "reply_to")
    except ValueError as exc:  # a header the email package refuses: retrying can't help
        raise PermanentError(f"payload cannot form the message headers: {exc}") from None
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message, to


def deliver(message: EmailMessage, recipients: list[str], settings: SmtpSettings) -> list[int]:
    """Send over SMTP; return the codes of recipients refused while others accepted."""
    try:
        with _session(settings) as smtp:
            refused = smtp.send_message(message, settings.sender, recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        if all(code >= 500 for code in codes):
            raise PermanentError(f"SMTP server refused every recipient (codes {codes})") from None
        raise SmtpTemporaryError(f"SMTP server deferred the recipients (codes {codes})") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise SmtpTemporaryError(
            f"SMTP authentication failed ({exc.smtp_code} {_reply(exc)}); "
            "check SMTP_USERNAME and SMTP_PASSWORD"
        ) from None
    except smtplib.SMTPResponseException as exc:
        what = "sender (SMTP_FROM)" if isinstance(exc, smtplib.SMTPSenderRefused) else "message"
        if 500 <= exc.smtp_code < 600:
            raise PermanentError(
                f"SMTP server rejected the {what}: {exc.smtp_code} {_reply(exc)}"
            ) from None
        raise SmtpTemporaryError(
            f"SMTP server deferred the {what}: {exc.smtp_code} {_reply(exc)}"
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise SmtpTemporaryError(
            f"cannot send through SMTP server {settings.host}:{settings.port}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    return sorted(code for code, _ in refused.values())


@contextlib.contextmanager
def _session(settings: SmtpSettings) -> Iterator[smtplib.SMTP]:
    """A connected, secured and authenticated SMTP session, quit on exit."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    smtp: smtplib.SMTP
    if settings.security == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout_s, context=context
        )
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
    try:
        if settings.security == "starttls":
            smtp.starttls(context=context)
        if settings.username is not None and settings.password is not None:
            smtp.login(settings.username, settings.password)
        yield smtp
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()
        smtp.close()


def _reply(exc: smtplib.SMTPResponseException) -> str:
    """The server's reply text, one line, addresses redacted (they are personal data)."""
    raw = exc.smtp_error
    reply = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return _ADDRESS_LIKE.sub("<address>", " ".join(reply.split()))[:300]
