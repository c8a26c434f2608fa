"""The dashboard's token: who may act, session cookies, CSRF tokens, login throttling.

Pure functions of the token and the clock; no HTTP here (listener.ui.guard applies
them to requests). Without a token the dashboard is read-only and nothing here
ever says yes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from listener.errors import ConfigError

TOKEN_ENV = "LISTENER_UI_TOKEN"  # noqa: S105 - the variable's name, not a token
MIN_TOKEN_LENGTH = 16
SESSION_COOKIE = "listener_ui_session"
LOGIN_COOKIE = "listener_ui_login"
SESSION_MAX_AGE_S = 12 * 3600


def token_from_env(environ: dict[str, str] | None = None) -> str | None:
    """``LISTENER_UI_TOKEN``, or None (read-only); a short token is refused."""
    value = (environ if environ is not None else dict(os.environ)).get(TOKEN_ENV, "")
    if not value:
        return None
    if len(value) < MIN_TOKEN_LENGTH or value.strip() != value:
        raise ConfigError(
            f"{TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters without surrounding "
            "spaces; make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


@dataclass(frozen=True, slots=True)
class Auth:
    """Checks against the configured token; ``token=None`` means read-only."""

    token: str | None
    _key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Cookies are signed with a key derived from the token, so changing the
        # token logs every session out, and no cookie ever holds the token itself.
        secret = (self.token or secrets.token_urlsafe(32)).encode()
        object.__setattr__(self, "_key", hashlib.sha256(b"listener-ui-v1:" + secret).digest())

    @property
    def actions_enabled(self) -> bool:
        return self.token is not None

    def check_token(self, candidate: str) -> bool:
        """True if ``candidate`` is the token (constant time)."""
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def new_session(self, now: float | None = None) -> str:
        """A signed session cookie value: issued time, random nonce, signature."""
        issued = str(int(time.time() if now is None else now))
        nonce = secrets.token_urlsafe(18)
        return f"{issued}.{nonce}.{self._sign('session', issued, nonce)}"

    def session_nonce(self, cookie: str | None, now: float | None = None) -> str | None:
        """The nonce of a valid, unexpired session cookie, else None."""
        if self.token is None or not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        issued, nonce, mac = parts
        if not hmac.compare_digest(mac, self._sign("session", issued, nonce)):
            return None
        age_s = (time.time() if now is None else now) - int(issued)
        return nonce if 0 <= age_s <= SESSION_MAX_AGE_S else None

    def csrf_token(self, nonce: str) -> str:
        """The CSRF token of the session with ``nonce`` (forms send it back)."""
        return self._sign("csrf", nonce)

    def check_csrf(self, nonce: str | None, candidate: str | None) -> bool:
        if nonce is None or not candidate:
            return False
        return hmac.compare_digest(candidate, self.csrf_token(nonce))

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._key, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def new_login_nonce() -> str:
    """A random value for the login form's double-submit cookie."""
    return secrets.token_urlsafe(18)


@dataclass
class LoginThrottle:
    """At most ``limit`` failed logins per client per ``window_s``; then refuse."""

    limit: int = 5
    window_s: float = 60.0
    max_clients: int = 10_000
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def allowed(self, client: str, now: float | None = None) -> bool:
        recent = self._recent(client, time.monotonic() if now is None else now)
        return len(recent) < self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        moment = time.monotonic() if now is None else now
        if client not in self._failures and len(self._failures) >= self.max_clients:
            self._failures.clear()  # bounded memory; a flood only resets the counts
        self._recent(client, moment).append(moment)

    def _recent(self, client: str, now: float) -> deque[float]:
        recent = self._failures.setdefault(client, deque())
        while recent and now - recent[0] > self.window_s:
            recent.popleft()
        return recent
