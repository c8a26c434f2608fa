"""generate_care_plan: write a care plan from a session transcript, then email a link.

Payload: ``email``, ``transcript``, ``session_id``, ``blueprint_id``, and ``host_url``
unless ``CARE_PLAN_BASE_URL`` is set (then the link's host comes from the setting,
never from the producer). Transactional: the plan (upserted by ``session_id``), the
follow-up ``send_email`` task and the task's completion commit together. The
transcript is never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import psycopg
import structlog

from handlers import payload as fields
from handlers.llm import chat
from handlers.settings import (
    CarePlanSettings,
    care_plan_limits,
    care_plan_settings,
    llm_settings,
)
from listener import PermanentError, Task, create_task_async, handler
from listener.sqlfiles import query

log = structlog.get_logger("handlers.care_plan")

PAYLOAD_FIELDS = frozenset({"email", "transcript", "session_id", "blueprint_id", "host_url"})

SYSTEM_PROMPT = (
    "You are a careful clinical assistant. From the session transcript, write a "
    "personalised care plan that follows the named care-plan blueprint: goals, "
    "concrete daily and weekly actions, warning signs, and when to seek help. "
    "Use plain language and Markdown headings. Do not invent facts that are not in "
    "the transcript."
)


@dataclass(frozen=True, slots=True)
class CarePlanRequest:
    email: str
    transcript: str
    session_id: str
    blueprint_id: str
    host_url: str | None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CarePlanRequest:
        """Validate the payload; PermanentError names the first bad field."""
        fields.reject_unknown(payload, PAYLOAD_FIELDS)
        return cls(
            email=fields.address(payload.get("email"), "email"),
            transcript=fields.required_text(payload, "transcript"),
            session_id=fields.identifier(payload, "session_id"),
            blueprint_id=fields.identifier(payload, "blueprint_id"),
            host_url=fields.http_url(payload, "host_url") if "host_url" in payload else None,
        )


def prompt(request: CarePlanRequest) -> list[dict[str, str]]:
    """The chat messages for one request."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": f"Blueprint: {request.blueprint_id}\n\nTranscript:\n{request.transcript}",
        },
    ]


LIMITS = care_plan_limits()  # CARE_PLAN_GLOBAL_CONCURRENCY, CARE_PLAN_RATE_LIMIT; at import


def _check_settings() -> None:
    llm_settings()
    care_plan_settings()


@handler(
    "generate_care_plan", transactional=True,
    global_concurrency=LIMITS.global_concurrency, rate_limit=LIMITS.rate_limit,
    check_settings=_check_settings,
)  # fmt: skip
async def generate_care_plan(task: Task, conn: psycopg.AsyncConnection[Any]) -> None:
    """Generate, store and announce the plan, all in the completing transaction."""
    request = CarePlanRequest.from_payload(task.payload)
    llm, plan_settings = llm_settings(), care_plan_settings()
    base_url = link_base_url(request, plan_settings)
    plan = await anyio.to_thread.run_sync(
        chat, llm, prompt(request), request.transcript, abandon_on_cancel=True
    )
    await conn.execute(
        query("handlers_upsert_care_plan"),
        {
            "session_id": request.session_id,
            "email": request.email,
            "blueprint_id": request.blueprint_id,
            "plan": plan,
            "model": llm.model,
            "task_id": task.id,
        },
    )
    path = plan_settings.link_path.replace("{session_id}", quote(request.session_id, safe=""))
    link = base_url + path
    await create_task_async(
        "send_email",
        {
            "to": request.email,
            "subject": plan_settings.email_subject,
            "body": f"Your care plan is ready. Read it here:\n\n{link}\n",
        },
        conn=conn,
    )
    log.info(
        "care_plan.generated", session_id=request.session_id, model=llm.model, plan_chars=len(plan)
    )


def link_base_url(request: CarePlanRequest, settings: CarePlanSettings) -> str:
    """CARE_PLAN_BASE_URL when set (a payload's host_url must then agree), else host_url."""
    given = request.host_url.rstrip("/") if request.host_url is not None else None
    if settings.base_url is None:
        if given is None:
            raise PermanentError("payload field 'host_url' is missing (or set CARE_PLAN_BASE_URL)")
        return given
    if given is not None and given != settings.base_url:
        raise PermanentError(
            "payload field 'host_url' differs from CARE_PLAN_BASE_URL: the link's host is "
            "the operator's setting, not the producer's choice"
        )
    return settings.base_url
