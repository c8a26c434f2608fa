"""The HTML pages: overview, tasks, task detail, and the forms that act on tasks.

Every page is complete without JavaScript; static/live.js refreshes the parts
marked ``data-live`` in place every few seconds.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from listener import logs
from listener.store import ui as store
from listener.ui import actions, params, views
from listener.ui.app import MAX_BODY_BYTES, path_for, state_of
from listener.ui.guard import CSRF_FIELD, Refused, authorize, client_of, session_caller

log = logs.get_logger("listener.ui")
FLASH_COOKIE = "listener_ui_flash"


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview, name="overview"),
        Route("/tasks", tasks, name="tasks"),
        Route("/tasks/{task_id}", task, name="task"),
        Route("/tasks/{task_id}/retry", retry, methods=["POST"], name="task_retry"),
        Route("/tasks/{task_id}/cancel", cancel, methods=["POST"], name="task_cancel"),
        Route("/actions/retry-failed", retry_failed, methods=["GET", "POST"], name="retry_failed"),
        Route("/healthz", healthz, name="healthz"),
    ]


async def healthz(request: Request) -> Response:
    """200 while the process serves requests (liveness; the database is not asked)."""
    return JSONResponse({"ok": True})


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
    *,
    live: bool = True,
) -> Response:
    """A page with what every page needs: who is logged in, their CSRF token, a flash."""
    state = state_of(request)
    caller = session_caller(request, state.auth)
    flash = _read_flash(request)
    response = state.templates.TemplateResponse(
        request,
        name,
        {
            "actions_enabled": state.auth.actions_enabled,
            "logged_in": caller is not None,
            "csrf": state.auth.csrf_token(caller.nonce) if caller and caller.nonce else "",
            "csrf_field": CSRF_FIELD,
            "poll_interval_ms": int(state.settings.poll_interval_s * 1000) if live else 0,
            "flash": flash,
            **context,
        },
        status_code=status_code,
    )
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


async def overview(request: Request) -> Response:
    database = state_of(request).database
    data = views.overview(await database.run(store.read_overview))
    types = sorted({t for by_type in data["counts"].values() for t in by_type})
    return render(request, "overview.html", {"data": data, "types": types, "now": data["now"]})


async def tasks(request: Request) -> Response:
    database = state_of(request).database
    now = await database.run(store.read_now)
    search = params.task_search(request.query_params, now)
    context: dict[str, Any] = {
        "search": search, "now": now.isoformat(), "params": params, "next": None,
        "not_found": False,
    }  # fmt: skip
    context["worker_types"] = await database.run(store.worker_types)
    if search.text:
        task_id = params.task_id(search.text)
        if task_id is not None:
            if await database.run(store.task, task_id) is not None:
                return RedirectResponse(path_for(request, "task", task_id=str(task_id)), 303)
            context["rows"], context["not_found"] = [], True
        else:
            context["rows"] = await database.run(store.tasks_by_dedupe_key, search.text, 100)
        context["page"] = None
    else:
        page = await database.run(store.list_tasks, search.query)
        context["rows"], context["page"] = page.tasks, page
        context["next"] = params.encode_cursor(page.next_cursor) if page.next_cursor else None
    return render(request, "tasks.html", context)


async def task(request: Request) -> Response:
    state = state_of(request)
    task_id = params.path_task_id(request.path_params["task_id"])
    reveal = request.query_params.get("reveal") == "1"
    if reveal and state.auth.actions_enabled and session_caller(request, state.auth) is None:
        return RedirectResponse(_login_url(request), 303)
    row = await state.database.run(store.task, task_id, with_payload=reveal)
    if row is None:
        return render(request, "error.html", {"status_code": 404,
                      "message": f"no task with id {task_id}"}, 404)  # fmt: skip
    if reveal:
        log.info("ui.payload_revealed", task_id=task_id, client=client_of(request))
    detail = views.task_detail(row)
    payload_json = json.dumps(row["payload"], indent=2, sort_keys=True) if reveal else None
    return render(
        request,
        "task.html",
        {"task": detail, "now": row["now"].isoformat(), "payload_json": payload_json},
        live=not reveal,  # a refresh would reveal (and log) the payload again
    )


async def retry(request: Request) -> Response:
    return await _task_action(request, actions.retry_task)


async def cancel(request: Request) -> Response:
    return await _task_action(request, actions.cancel_task)


async def _task_action(request: Request, action: Any) -> Response:
    state = state_of(request)
    task_id = params.path_task_id(request.path_params["task_id"])
    form = await read_form(request)
    caller = authorize(request, state.auth, form.get(CSRF_FIELD))
    result = await action(state.database, task_id, caller, client_of(request))
    back = path_for(request, "task", task_id=str(task_id))
    return _with_flash(RedirectResponse(back, 303), result.status_code == 200, result.message)


async def retry_failed(request: Request) -> Response:
    """GET: what retrying every failed task of a type would do. POST: do it."""
    state = state_of(request)
    if request.method == "GET":
        task_type = _required_type(request.query_params.get("type"))
        preview = await actions.retry_failed_of_type(
            state.database, task_type, None, client_of(request), dry_run=True
        )
        return render(request, "retry_failed.html", {"type": task_type, "preview": preview})
    form = await read_form(request)
    task_type = _required_type(form.get("type"))
    caller = authorize(request, state.auth, form.get(CSRF_FIELD))
    result = await actions.retry_failed_of_type(
        state.database, task_type, caller, client_of(request), dry_run=False
    )
    back = path_for(request, "tasks") + "?" + params.query_string({"type": task_type})
    return _with_flash(RedirectResponse(back, 303), True, result.message)


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form (the only kind these pages send), first value of each field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise Refused(415, "send the form as application/x-www-form-urlencoded")
    body = (await _body(request)).decode("utf-8", errors="replace")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, max_num_fields=20):
        fields.setdefault(key, value)
    return fields


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY_BYTES (these forms are tiny)."""
    declared = request.headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
        raise Refused(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refused(413, f"request body too large (at most {MAX_BODY_BYTES} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _required_type(value: str | None) -> str:
    if not value or len(value) > 128:
        raise params.BadRequest("say which type: type=TYPE")
    return value


def _login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{path_for(request, 'login')}?next={quote(target)}"


def _with_flash(response: Response, ok: bool, message: str) -> Response:
    value = quote(json.dumps({"ok": ok, "message": message}))
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path="/", httponly=True, samesite="strict")
    return response


def _read_flash(request: Request) -> dict[str, Any] | None:
    from urllib.parse import unquote

    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        flash = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(flash, dict) or not isinstance(flash.get("message"), str):
        return None
    return {"ok": bool(flash.get("ok")), "message": flash["message"][:500]}
