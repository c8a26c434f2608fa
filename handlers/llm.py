"""A minimal OpenAI-compatible chat-completions client on the standard library.

Works with hosted providers and local servers (Ollama, vLLM): POST
``{LLM_BASE_URL}/chat/completions``. Outcomes: 429 and 5xx are retried (after
``Retry-After`` when the server gives one), other 4xx fail permanently, connection
errors and timeouts are retried. Error texts never include the prompt.
"""

from __future__ import annotations

import email.utils
import json
import time
import urllib.error
import urllib.request
from typing import Any

from handlers.settings import LlmSettings
from listener import PermanentError, RetryLater


class LlmUnavailableError(Exception):
    """The API could not be reached or answered with an error worth retrying."""


def chat(settings: LlmSettings, messages: list[dict[str, str]], secret: str) -> str:
    """The first choice's message content. ``secret`` is kept out of any error text."""
    request = urllib.request.Request(  # noqa: S310 (LLM_BASE_URL is checked to be http(s))
        f"{settings.base_url}/chat/completions",
        data=json.dumps({"model": settings.model, "messages": messages}).encode(),
        headers=_headers(settings),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, settings, secret) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LlmUnavailableError(f"cannot reach {settings.base_url}: {reason}") from None
    return _content(raw)


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


def _http_error(exc: urllib.error.HTTPError, settings: LlmSettings, secret: str) -> Exception:
    detail = _provider_message(exc, secret)
    what = f"{settings.base_url} answered {exc.code}{detail}"
    if exc.code == 429 or exc.code >= 500:
        delay_s = retry_after_s(exc.headers.get("Retry-After"))
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


def _provider_message(exc: urllib.error.HTTPError, secret: str) -> str:
    """``: <error.message>`` from the body, unless it echoes any of ``secret``."""
    try:
        body: Any = json.loads(exc.read(4096) or b"null")
        message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    except (ValueError, LookupError, TypeError, OSError):
        return ""
    if not isinstance(message, str) or not message.strip():
        return ""
    message = " ".join(message.split())[:200]
    return "" if _shares_text(message, secret) else f": {message}"


def _shares_text(message: str, secret: str, window: int = 24) -> bool:
    """True if ``message`` contains any ``window``-character run of ``secret``."""
    secret = " ".join(secret.split())
    if len(secret) < window:
        return bool(secret) and secret in message
    step = window // 2
    return any(secret[i : i + window] in message for i in range(0, len(secret) - window + 1, step))
