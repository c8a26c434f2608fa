"""Who is asking: the token applied to requests (bearer header, session cookie, CSRF)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from listener.ui.auth import SESSION_COOKIE, Auth, LoginThrottle

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: by bearer token (scripts) or session cookie (browser)."""

    via: str  # "bearer" or "session"
    nonce: str | None = None  # the session's, for its CSRF token


class Refused(Exception):
    """An action refused: the HTTP status and one line saying why."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


READ_ONLY = (
    "the dashboard is read-only: start `listener ui` with LISTENER_UI_TOKEN set to enable actions"
)


def session_caller(request: Request, auth: Auth) -> Caller | None:
    """The browser session behind ``request``, if it has a valid one."""
    nonce = auth.session_nonce(request.cookies.get(SESSION_COOKIE))
    return Caller("session", nonce) if nonce else None


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def authenticate(request: Request, auth: Auth) -> Caller:
    """The caller's credentials, checked: 401 without any, 403 with wrong ones."""
    if not auth.actions_enabled:
        raise Refused(403, READ_ONLY)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Refused(401, "use Authorization: Bearer TOKEN")
        throttle, client = _throttle(request), client_of(request)
        if not throttle.allowed(client):
            raise Refused(429, "too many wrong tokens from this address: wait a minute")
        if not auth.check_token(credentials.strip()):
            throttle.failed(client)
            raise Refused(403, "wrong token")
        return Caller("bearer")
    caller = session_caller(request, auth)
    if caller is None:
        raise Refused(
            401,
            "session expired: log in again"
            if SESSION_COOKIE in request.cookies
            else "this needs the dashboard token: log in, or send Authorization: Bearer TOKEN",
        )
    return caller


def authorize(request: Request, auth: Auth, csrf: str | None = None) -> Caller:
    """The caller allowed to act, or ``Refused`` (401 no credentials, 403 wrong ones).

    A bearer token needs no CSRF token (a browser never sends one cross-site on its
    own); a session cookie does, and a cross-origin Origin header is refused.
    """
    caller = authenticate(request, auth)
    if caller.via == "session":
        if not same_origin(request):
            raise Refused(403, "cross-origin request refused")
        if not auth.check_csrf(caller.nonce, csrf or request.headers.get(CSRF_HEADER)):
            raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
    return caller


def _throttle(request: Request) -> LoginThrottle:
    """The app's one throttle: wrong bearer tokens count like failed logins."""
    throttle: LoginThrottle = request.app.state.ui.throttle
    return throttle


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # No Origin (old browsers, scripts): the CSRF token alone decides. "null"
        # comes from sandboxed or privacy-preserving contexts: refuse those.
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")
