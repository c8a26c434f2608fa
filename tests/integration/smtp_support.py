"""A real SMTP server on loopback (aiosmtpd) and the environment pointing send_email at it."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.integration.engine_support import free_port

USERNAME, PASSWORD = "mailer", "s3cret-pass"


@dataclass
class Mailbox:
    """The aiosmtpd handler: records accepted messages, refuses recipients on request."""

    messages: list[tuple[list[str], bytes]] = field(default_factory=list)
    rcpt_reply: str | None = None  # e.g. "451 4.7.1 Try later" to refuse every recipient
    data_reply: str | None = None  # e.g. "554 5.7.1 Spam" to refuse the message
    refuse: dict[str, str] = field(default_factory=dict)  # address -> reply
    defer_times: int = 0  # answer this many RCPTs with 451 first (greylisting)
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        if self.defer_times > 0:
            self.defer_times -= 1
            return "451 4.7.1 Greylisted, try again later"
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USERNAME.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok:
            self.logins.append(USERNAME)
        return AuthResult(success=ok, handled=False)


@dataclass(frozen=True)
class Tls:
    server_context: ssl.SSLContext
    ca_file: Path


def make_tls(tmp_path: Path) -> Tls:
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = tmp_path / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Tls(context, ca_file)


@contextlib.contextmanager
def smtp_server(mailbox: Mailbox, **options: Any) -> Iterator[int]:
    """Run aiosmtpd on 127.0.0.1 with ``options`` (tls_context, ssl_context, ...); yield port."""
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def point_at(monkeypatch: pytest.MonkeyPatch, port: int, **env: str) -> None:
    """Set the SMTP_* environment for a server on 127.0.0.1:port."""
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_CA_FILE", "SMTP_MESSAGE_ID_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    settings = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "Clinic <noreply@clinic.example>",
        "SMTP_TIMEOUT_S": "5",
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word (a hung SMTP server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()
