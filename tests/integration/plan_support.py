"""The plans a statement really ran, from auto_explain in the test's own session."""

from __future__ import annotations

import re
from typing import Any

import psycopg

NODE = re.compile(r"actual time=[\d.]+\.\.[\d.]+ rows=(?P<rows>[\d.]+) loops=(?P<loops>\d+)")
REMOVED = re.compile(r"Rows Removed by (?:Join )?Filter: (?P<rows>[\d.]+)")


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


def most_rows_visited(plan: str) -> int:
    """The most rows any executed node of the plan produced or threw away in a filter
    (each times its loops): what a statement looked at, whatever its buffers say."""
    counts = []
    loops = 1
    for line in plan.splitlines():
        node = NODE.search(line)
        if node:  # PostgreSQL 18 prints rows with two decimals
            loops = int(node["loops"])
            counts.append(round(float(node["rows"]) * loops))
        removed = REMOVED.search(line)
        if removed:  # printed per loop, for the node above
            counts.append(round(float(removed["rows"]) * loops))
    assert counts, plan
    return max(counts)
