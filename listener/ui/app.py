"""The dashboard's composition root: settings, pool, templates, routes, headers.

Pages live in listener.ui.pages, the JSON API in listener.ui.api, login in
listener.ui.session. A new page (the schedules and limits page, once schedules
exist) is a module with a ``routes()`` list added to ``_routes`` and an entry
in ``NAV``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from listener import __version__
from listener.store.ui import SessionLimits
from listener.ui import views
from listener.ui.auth import Auth, LoginThrottle
from listener.ui.database import Database

# Header navigation: (label, route name). Add the schedules and limits page here.
NAV: tuple[tuple[str, str], ...] = (("Overview", "overview"), ("Tasks", "tasks"))
MAX_BODY_BYTES = 16 * 1024  # forms hold a token, a CSRF token and a type name

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer Chrome sends "Origin: null" on
    # form posts, which the origin check (listener.ui.guard) must refuse.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


@dataclass(frozen=True, slots=True)
class UiSettings:
    dsn: str
    token: str | None = None
    poll_interval_s: float = 3.0
    statement_timeout_ms: int = 5000
    pool_max_size: int = 4
    pool_timeout_s: float = 5.0
    # Extra psycopg.connect() arguments (the performance test records statements).
    connect_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UiState:
    settings: UiSettings
    auth: Auth
    database: Database
    templates: Jinja2Templates
    throttle: LoginThrottle


def state_of(request: Request) -> UiState:
    state: UiState = request.app.state.ui
    return state


def path_for(request: Request, name: str, **path_params: Any) -> str:
    """The path of a route (links and redirects are root-relative, so they stay on
    whatever host and scheme the browser used, proxy or not)."""
    return str(request.app.url_path_for(name, **path_params))


@jinja2.pass_context
def _template_path_for(context: dict[str, Any], name: str, /, **path_params: Any) -> str:
    return path_for(context["request"], name, **path_params)


def create_app(settings: UiSettings) -> Starlette:
    """The dashboard as an ASGI app; its pool opens and closes with the app's lifespan."""
    auth = Auth(settings.token)
    limits = SessionLimits(
        statement_timeout_ms=settings.statement_timeout_ms, read_only=not auth.actions_enabled
    )
    database = Database(
        settings.dsn,
        limits,
        max_size=settings.pool_max_size,
        pool_timeout_s=settings.pool_timeout_s,
        connect_kwargs=settings.connect_kwargs,
    )
    state = UiState(settings, auth, database, _templates(), LoginThrottle())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        database.open()
        try:
            yield
        finally:
            database.close()

    from listener.ui import errors

    app = Starlette(
        routes=_routes(),
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers=errors.handlers(),
    )
    app.state.ui = state
    return app


def _routes() -> list[BaseRoute]:
    from listener.ui import api, pages, session

    static = StaticFiles(packages=[("listener.ui", "static")])
    return [
        *pages.routes(),
        *session.routes(),
        *api.routes(),
        Mount("/static", app=static, name="static"),
    ]


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("listener.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        seconds=views.seconds, timestamp=views.timestamp, first_line=views.first_line
    )
    env.globals.update(nav=NAV, version=__version__, ago=views.ago)
    templates = Jinja2Templates(env=env)
    env.globals["url_for"] = _template_path_for  # instead of Starlette's absolute URLs
    return templates


class SecurityHeaders:
    """Adds CSP and friends to every response; pages and the API are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)
