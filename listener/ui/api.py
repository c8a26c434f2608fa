"""The JSON API behind the pages, for scripts (documented in the README, "Dashboard").

Reads need no token. Actions need the token: ``Authorization: Bearer TOKEN``, or
the browser's session cookie with an ``X-CSRF-Token`` header.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from listener import logs
from listener.store import ui as store
from listener.ui import actions, params, views
from listener.ui.app import state_of
from listener.ui.guard import authenticate, authorize, client_of

log = logs.get_logger("listener.ui")


def routes() -> list[BaseRoute]:
    return [
        Route("/api/overview", overview),
        Route("/api/tasks", tasks),
        Route("/api/tasks/{task_id}", task),
        Route("/api/tasks/{task_id}/retry", retry, methods=["POST"]),
        Route("/api/tasks/{task_id}/cancel", cancel, methods=["POST"]),
        Route("/api/types/{type}/retry-failed", retry_failed, methods=["POST"]),
    ]


async def overview(request: Request) -> Response:
    ov = await state_of(request).database.run(store.read_overview)
    return JSONResponse(views.overview(ov))


async def tasks(request: Request) -> Response:
    """A JSON list of tasks; the next page, if any, is the ``Link: <...>; rel="next"``."""
    database = state_of(request).database
    now = await database.run(store.read_now)
    search = params.task_search(request.query_params, now)
    if search.text:
        raise params.BadRequest("q is for the page; look a task up with /api/tasks/ID")
    page = await database.run(store.list_tasks, search.query)
    headers = {}
    if page.next_cursor is not None:
        query = params.query_string(search.raw, after=params.encode_cursor(page.next_cursor))
        headers["link"] = f'<{request.url.path}?{query}>; rel="next"'
    return JSONResponse([views.task_row(t) for t in page.tasks], headers=headers)


async def task(request: Request) -> Response:
    """One task; its payload with ``?reveal=1`` (which needs the token when one is set)."""
    state = state_of(request)
    task_id = params.path_task_id(request.path_params["task_id"])
    reveal = request.query_params.get("reveal") == "1"
    if reveal and state.auth.actions_enabled:
        authenticate(request, state.auth)  # reading payloads takes the token too
    row = await state.database.run(store.task, task_id, with_payload=reveal)
    if row is None:
        return JSONResponse({"error": f"no task with id {task_id}"}, 404)
    if reveal:
        log.info("ui.payload_revealed", task_id=task_id, client=client_of(request))
    return JSONResponse(views.task_detail(row))


async def retry(request: Request) -> Response:
    state = state_of(request)
    task_id = params.path_task_id(request.path_params["task_id"])
    caller = authorize(request, state.auth)
    result = await actions.retry_task(state.database, task_id, caller, client_of(request))
    return JSONResponse(result.json(), result.status_code)


async def cancel(request: Request) -> Response:
    state = state_of(request)
    task_id = params.path_task_id(request.path_params["task_id"])
    caller = authorize(request, state.auth)
    result = await actions.cancel_task(state.database, task_id, caller, client_of(request))
    return JSONResponse(result.json(), result.status_code)


async def retry_failed(request: Request) -> Response:
    """Every failed task of the type back to pending; ``?dry_run=1`` only counts them."""
    state = state_of(request)
    task_type = request.path_params["type"]
    caller = authorize(request, state.auth)
    dry_run = request.query_params.get("dry_run") == "1"
    result = await actions.retry_failed_of_type(
        state.database, task_type, caller, client_of(request), dry_run=dry_run
    )
    return JSONResponse(result.json(), result.status_code)
