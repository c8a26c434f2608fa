"""Log in with the dashboard token (a signed session cookie), and log out."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from listener import logs
from listener.ui.app import state_of
from listener.ui.auth import LOGIN_COOKIE, SESSION_COOKIE, SESSION_MAX_AGE_S, new_login_nonce
from listener.ui.guard import CSRF_FIELD, Refused, authorize, client_of, same_origin
from listener.ui.pages import read_form, render

log = logs.get_logger("listener.ui")


def routes() -> list[BaseRoute]:
    return [
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
    ]


def _next_path(value: str | None) -> str:
    """Only a path on this site: never an open redirect to another one."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login(request: Request) -> Response:
    state = state_of(request)
    if not state.auth.actions_enabled:
        return render(request, "login.html", {"next": "/", "error": None, "nonce": ""})
    if request.method == "GET":
        return _login_form(request, _next_path(request.query_params.get("next")), None)
    form = await read_form(request)
    target = _next_path(form.get("next"))
    client = client_of(request)
    nonce = request.cookies.get(LOGIN_COOKIE)
    sent = form.get(CSRF_FIELD, "")
    if not nonce or not hmac.compare_digest(sent, nonce) or not same_origin(request):
        raise Refused(403, "the login form expired: reload it and try again")
    if not state.throttle.allowed(client):
        log.warning("ui.login_throttled", client=client)
        return _login_form(request, target, "too many failed logins: wait a minute", 429)
    if not state.auth.check_token(form.get("token", "")):
        state.throttle.failed(client)
        log.warning("ui.login_failed", client=client)
        return _login_form(request, target, "wrong token", 403)
    log.info("ui.login", client=client)
    response = RedirectResponse(target, 303)
    response.set_cookie(
        SESSION_COOKIE,
        state.auth.new_session(),
        max_age=SESSION_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _login_form(
    request: Request, target: str, error: str | None, status_code: int = 200
) -> Response:
    nonce = new_login_nonce()
    response = render(
        request, "login.html", {"next": target, "error": error, "nonce": nonce}, status_code
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, path="/login", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    state = state_of(request)
    form = await read_form(request)
    authorize(request, state.auth, form.get(CSRF_FIELD))
    log.info("ui.logout", client=client_of(request))
    response = RedirectResponse("/", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
