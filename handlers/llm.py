"""A minimal OpenAI-compatible chat-completions client on the standard library.

Works with hosted providers and local servers (Ollama, vLLM): POST
``{LLM_BASE_URL}/chat/completions`` with ``max_tokens``. Outcomes: 429 and 5xx are
retried (after ``Retry-After`` when the server gives one), other 4xx fail
permanently, connection errors, timeouts and oversized answers are retried. A
redirect is never followed (the ``Authorization`` header would go along): it is a
ConfigError naming the setting to fix. The whole exchange has a deadline
(``LLM_DEADLINE_S``), not only a timeout per socket operation. Error texts never
include the prompt or the API key, even when the provider echoes them.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from handlers.settings import LlmSettings
from listener import PermanentError, RetryLater
from listener.errors import ConfigError

MAX_ERROR_BODY_BYTES = 4096
_CHUNK_BYTES = 64 * 1024


class LlmUnavailableError(Exception):
    """The API could not be reached or answered with an error worth retrying."""


def chat(settings: LlmSettings, messages: list[dict[str, str]], secret: str) -> str:
    """The first choice's message content. ``secret`` (and the API key) stay out of errors."""
    deadline = time.monotonic() + settings.deadline_s
    body = json.dumps(
        {"model": settings.model, "messages": messages, "max_tokens": settings.max_tokens}
    ).encode()
    try:
        status, headers, raw = _post(settings, body, deadline)
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise LlmUnavailableError(
                f"{settings.base_url} did not answer within LLM_DEADLINE_S={settings.deadline_s:g}s"
            ) from None
        raise LlmUnavailableError(f"cannot reach {settings.base_url}: {exc}") from None
    if 300 <= status < 400:
        raise ConfigError(
            f"{settings.base_url} answered {status} (a redirect); redirects are not followed, "
            "so the API key never goes elsewhere: set LLM_BASE_URL to the final URL"
        )
    if status >= 400:
        raise _http_error(status, headers, raw, settings, (secret, settings.api_key or ""))
    return _content(raw)


def _post(
    settings: LlmSettings, body: bytes, deadline: float
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One POST over a fresh connection; the socket is shut down when the deadline passes."""
    url = urlsplit(settings.base_url)
    connect_timeout_s = max(0.001, min(settings.timeout_s, deadline - time.monotonic()))
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        context = ssl.create_default_context()
        conn = http.client.HTTPSConnection(
            url.hostname or "", url.port, timeout=connect_timeout_s, context=context
        )
    else:
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=connect_timeout_s)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(settings.timeout_s)
        cut = threading.Event()
        remaining_s = max(0.0, deadline - time.monotonic())
        watchdog = threading.Timer(remaining_s, _cut, (conn.sock, cut))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request(
                "POST", f"{url.path.rstrip('/')}/chat/completions", body, _headers(settings)
            )
            response = conn.getresponse()
            limit = settings.max_response_bytes if response.status < 300 else MAX_ERROR_BODY_BYTES
            raw = _read_bounded(response, limit, settings)
        finally:
            watchdog.cancel()
        if cut.is_set():  # the body ended because the deadline cut it short
            raise TimeoutError("deadline passed")
        return response.status, response.headers, raw
    finally:
        conn.close()


def _cut(sock: socket.socket, cut: threading.Event) -> None:
    """Wake a read blocked on ``sock`` (a server dripping bytes never hits the timeout)."""
    cut.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _read_bounded(response: http.client.HTTPResponse, limit: int, settings: LlmSettings) -> bytes:
    """The body, at most ``limit`` bytes; a success larger than that is refused."""
    declared = response.getheader("Content-Length", "")
    too_big = LlmUnavailableError(
        f"{settings.base_url} answered more than LLM_MAX_RESPONSE_BYTES={limit} bytes"
    )
    if response.status < 300 and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = response.read(min(_CHUNK_BYTES, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        if response.status < 300:
            raise too_big
        return b"".join(chunks)[:limit]
    return b"".join(chunks)


def _headers(settings: LlmSettings) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    return headers


def _content(raw: bytes) -> str:
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        raise LlmUnavailableError("the API's answer has no choices[0].message.content") from None
    if not isinstance(content, str) or not content.strip():
        raise LlmUnavailableError("the API answered with an empty message")
    return content


def _http_error(
    status: int,
    headers: http.client.HTTPMessage,
    raw: bytes,
    settings: LlmSettings,
    secrets: tuple[str, str],
) -> Exception:
    detail = _provider_message(raw, secrets)
    what = f"{settings.base_url} answered {status}{detail}"
    if status == 429 or status >= 500:
        delay_s = retry_after_s(headers.get("Retry-After"))
        if delay_s is not None:
            return RetryLater(min(delay_s, settings.max_retry_after_s), f"{what}; Retry-After")
        return LlmUnavailableError(what)
    return PermanentError(what)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _provider_message(raw: bytes, secrets: tuple[str, str]) -> str:
    """``: <error.message>`` from the body, unless it echoes the prompt or the API key."""
    try:
        body: Any = json.loads(raw or b"null")
        message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    except (ValueError, LookupError, TypeError):
        return ""
    if not isinstance(message, str) or not message.strip():
        return ""
    message = " ".join(message.split())[:200]
    transcript, api_key = secrets
    if _shares_text(message, transcript) or _shares_text(message, api_key, window=8):
        return ""
    return f": {message}"


def _shares_text(message: str, secret: str, window: int = 24) -> bool:
    """True if ``message`` contains any ``window``-character run of ``secret``."""
    secret = " ".join(secret.split())
    if len(secret) < window:
        return bool(secret) and secret in message
    step = max(window // 2, 1)
    starts = [*range(0, len(secret) - window + 1, step), len(secret) - window]
    return any(secret[i : i + window] in message for i in starts)
