"""The plans a statement really ran, from auto_explain in the test's own session."""

from __future__ import annotations

import re
from typing import Any

import psycopg


def collect_plans(conn: psycopg.Connection[Any]) -> list[str]:
    """Load auto_explain (session-local) and return the list its notices go to:
    every statement's plan as executed, with row counts and buffers, nested ones too."""
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "log_min_duration = 0",
        "log_nested_statements = on",
        "log_analyze = on",
        "log_buffers = on",
        "log_level = notice",
    ):
        conn.execute(f"SET auto_explain.{setting}")
    return notices


def most_pages_read(plan: str) -> int:
    """The largest number of buffers (hit + read) any node of the plan touched."""
    pages = [
        sum(int(n) for n in re.findall(r"(?:hit|read)=(\d+)", line))
        for line in plan.splitlines()
        if "Buffers: shared" in line
    ]
    assert pages, plan
    return max(pages)
