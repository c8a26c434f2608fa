"""Handler settings, read from the environment at each run (a fixed env takes effect
on the next task, no restart of the import needed). A missing or invalid setting
raises ConfigError, which the engine retries with backoff rather than failing the
task: the fix is on the operator's side, not in the task."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from listener.errors import ConfigError
from listener.limits import parse_global_concurrency_text, parse_rate_limit

Security = Literal["starttls", "tls", "none"]
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


def _get(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _required(name: str) -> str:
    value = _get(name)
    if value is None:
        raise ConfigError(f"{name} is not set")
    return value


def _positive_float(name: str, default: float) -> float:
    raw = _get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise ConfigError(f"{name}={raw!r} must be > 0")
    return value


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: Security
    username: str | None
    password: str | None
    sender: str
    timeout_s: float
    ca_file: str | None
    message_id_domain: str


def smtp_settings() -> SmtpSettings:
    """SMTP_HOST, SMTP_PORT, SMTP_SECURITY, SMTP_USERNAME, SMTP_PASSWORD, SMTP_FROM, ..."""
    security = (_get("SMTP_SECURITY", "starttls") or "").lower()
    if security not in _DEFAULT_PORTS:
        raise ConfigError(f"SMTP_SECURITY={security!r} must be starttls, tls or none")
    port_raw = _get("SMTP_PORT", str(_DEFAULT_PORTS[security])) or ""
    if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
        raise ConfigError(f"SMTP_PORT={port_raw!r} is not a TCP port")
    username, password = _get("SMTP_USERNAME"), _get("SMTP_PASSWORD")
    if (username is None) != (password is None):
        raise ConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
    sender = _required("SMTP_FROM")
    domain = _get("SMTP_MESSAGE_ID_DOMAIN") or sender.rpartition("@")[2].strip(" >")
    return SmtpSettings(
        host=_required("SMTP_HOST"),
        port=int(port_raw),
        security=security,  # type: ignore[arg-type]
        username=username,
        password=password,
        sender=sender,
        timeout_s=_positive_float("SMTP_TIMEOUT_S", 30.0),
        ca_file=_get("SMTP_CA_FILE"),
        message_id_domain=domain or "localhost",
    )


@dataclass(frozen=True, slots=True)
class LlmSettings:
    base_url: str
    model: str
    api_key: str | None
    timeout_s: float
    max_retry_after_s: float
    deadline_s: float = 300.0
    max_tokens: int = 4096
    max_response_bytes: int = 1024 * 1024


def llm_settings() -> LlmSettings:
    """LLM_BASE_URL, LLM_MODEL, LLM_API_KEY, LLM_TIMEOUT_S, LLM_DEADLINE_S, LLM_MAX_TOKENS, ..."""
    base_url = _required("LLM_BASE_URL").rstrip("/")
    _check_llm_url(base_url)
    return LlmSettings(
        base_url=base_url,
        model=_required("LLM_MODEL"),
        api_key=_get("LLM_API_KEY"),
        timeout_s=_positive_float("LLM_TIMEOUT_S", 120.0),
        max_retry_after_s=_positive_float("LLM_MAX_RETRY_AFTER_S", 600.0),
        deadline_s=_positive_float("LLM_DEADLINE_S", 300.0),
        max_tokens=_positive_int("LLM_MAX_TOKENS", 4096),
        max_response_bytes=_positive_int("LLM_MAX_RESPONSE_BYTES", 1024 * 1024),
    )


def _check_llm_url(base_url: str) -> None:
    """https, or http to this machine (or anywhere with LLM_ALLOW_PLAIN_HTTP=1)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"LLM_BASE_URL={base_url!r} must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise ConfigError("LLM_BASE_URL must not hold credentials: set LLM_API_KEY")
    plain_http_elsewhere = parts.scheme == "http" and not _is_loopback(parts.hostname)
    if plain_http_elsewhere and _get("LLM_ALLOW_PLAIN_HTTP") != "1":
        raise ConfigError(
            f"LLM_BASE_URL={base_url!r} is plain http to another host: the transcript and "
            "the API key would cross the network unencrypted. Use https, or set "
            "LLM_ALLOW_PLAIN_HTTP=1 for a network you trust"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_int(name: str, default: int) -> int:
    raw = _get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name}={raw!r} must be a whole number > 0")
    return int(raw)


@dataclass(frozen=True, slots=True)
class CarePlanSettings:
    link_path: str
    email_subject: str
    base_url: str | None = None  # None: the payload's host_url (producers must not pass user input)


def care_plan_settings() -> CarePlanSettings:
    """CARE_PLAN_BASE_URL, CARE_PLAN_LINK_PATH (with {session_id}), CARE_PLAN_EMAIL_SUBJECT."""
    path = _get("CARE_PLAN_LINK_PATH", "/care-plans/{session_id}") or ""
    if "{session_id}" not in path or not path.startswith("/"):
        raise ConfigError(f"CARE_PLAN_LINK_PATH={path!r} must start with / and hold {{session_id}}")
    subject = _get("CARE_PLAN_EMAIL_SUBJECT", "Your care plan is ready") or ""
    base_url = _get("CARE_PLAN_BASE_URL")
    if base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"CARE_PLAN_BASE_URL={base_url!r} must be an http(s) URL with a host")
        base_url = base_url.rstrip("/")
    return CarePlanSettings(link_path=path, email_subject=subject, base_url=base_url)


@dataclass(frozen=True, slots=True)
class CarePlanLimits:
    global_concurrency: int | None
    rate_limit: str | None


def care_plan_limits() -> CarePlanLimits:
    """CARE_PLAN_GLOBAL_CONCURRENCY (default 4) and CARE_PLAN_RATE_LIMIT (default 30/m).

    Fleet-wide limits for the LLM calls; ``off`` removes one. Read once, when the
    handler module is imported: an invalid value stops `listener run` at start-up.
    """
    concurrency = _get("CARE_PLAN_GLOBAL_CONCURRENCY", "4") or ""
    rate = _get("CARE_PLAN_RATE_LIMIT", "30/m") or ""
    try:
        return CarePlanLimits(
            global_concurrency=(
                None if concurrency == "off"
                else parse_global_concurrency_text(concurrency, "CARE_PLAN_GLOBAL_CONCURRENCY")
            ),
            rate_limit=(
                None if rate == "off" else str(parse_rate_limit(rate, "CARE_PLAN_RATE_LIMIT"))
            ),
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def razorpay_webhook_secrets() -> list[str]:
    """RAZORPAY_WEBHOOK_SECRET, plus RAZORPAY_WEBHOOK_SECRET_PREVIOUS during a rotation."""
    current = _required("RAZORPAY_WEBHOOK_SECRET")
    previous = _get("RAZORPAY_WEBHOOK_SECRET_PREVIOUS")
    return [current] if previous is None else [current, previous]
