"""Handlers for the screenshot script's worker: a little work, now and then a failure."""

from __future__ import annotations

import random

import anyio

from listener import PermanentError, Task, handler


@handler("send_email")
async def send_email(task: Task) -> None:
    await anyio.sleep(random.uniform(0.01, 0.05))
    if task.payload.get("to", "").startswith("bounce"):
        raise PermanentError("SMTPRecipientsRefused: 550 5.1.1 user unknown")


@handler("generate_care_plan")
async def generate_care_plan(task: Task) -> None:
    await anyio.sleep(random.uniform(0.05, 0.2))


@handler("razorpay_webhook")
async def razorpay_webhook(task: Task) -> None:
    await anyio.sleep(0.01)
