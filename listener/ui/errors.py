"""Errors as responses: one line saying what is wrong, as JSON under /api, else a page."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from listener import logs
from listener.ui.database import DatabaseProblem
from listener.ui.guard import Refused, client_of
from listener.ui.params import BadRequest

log = logs.get_logger("listener.ui")


def handlers() -> dict[Any, Any]:
    return {
        DatabaseProblem: _database_problem,
        BadRequest: _bad_request,
        Refused: _refused,
        HTTPException: _http_exception,
        Exception: _unexpected,  # Starlette's ServerErrorMiddleware calls it, then re-raises
    }


def error_response(
    request: Request, status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code, headers=headers)
    from listener.ui.pages import render

    return render(
        request, "error.html", {"status_code": status_code, "message": message}, status_code
    )


async def _database_problem(request: Request, exc: Exception) -> Response:
    log.warning("ui.database_unavailable", reason=str(exc), path=request.url.path)
    return error_response(request, 503, str(exc), {"retry-after": "5"})


async def _bad_request(request: Request, exc: Exception) -> Response:
    return error_response(request, 400, str(exc))


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    log.warning(
        "ui.action_refused",
        path=request.url.path,
        status=exc.status_code,
        reason=exc.reason,
        client=client_of(request),
    )
    headers = {"www-authenticate": 'Bearer realm="listener"'} if exc.status_code == 401 else None
    if exc.status_code == 429:
        headers = {"retry-after": "60"}
    return error_response(request, exc.status_code, exc.reason, headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("ui.request_failed", path=request.url.path, exc_info=exc)
    return error_response(request, 500, "unexpected error: the dashboard's log says more")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "no such page", 405: "method not allowed", 413: "request body too large"}
    message = exc.detail if exc.detail and exc.detail not in {"Not Found"} else ""
    return error_response(
        request, exc.status_code, message or messages.get(exc.status_code, "error")
    )
