"""Lines that don't come from structlog (stdlib loggers, crashes) get the same format
and the same redaction as the worker's own events."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from listener import logs
from tests.tools import ROOT

EMAIL = "meera.iyer@example.in"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    logs.configure("info", "json", out)
    yield out
    logs.reset()


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_library_warning_is_a_redacted_json_line(json_lines: io.StringIO) -> None:
    logging.getLogger("psycopg.pool").warning(
        "error connecting in %r: password=%s for %s", "pool-1", "s3cr3t", EMAIL
    )
    (line,) = parsed(json_lines)
    assert line["event"] == "error connecting in 'pool-1': password=[redacted] for [email]"
    assert (line["level"], line["logger"]) == ("warning", "psycopg.pool")
    assert line["timestamp"].endswith("Z")


def test_library_lines_below_warning_are_dropped(json_lines: io.StringIO) -> None:
    logging.getLogger("psycopg.pool").info("connection added")
    assert json_lines.getvalue() == ""


def test_a_library_traceback_is_redacted(json_lines: io.StringIO) -> None:
    try:
        raise ConnectionError(f"LLM_API_KEY=sk-live-0123456789abcdef for {EMAIL}")
    except ConnectionError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    (line,) = parsed(json_lines)
    assert line["event"] == "Task exception was never retrieved"
    assert "ConnectionError: LLM_API_KEY=[redacted] for [email]" in line["exception"]
    assert "0123456789abcdef" not in json_lines.getvalue()


def test_a_crashed_thread_is_a_redacted_json_line(json_lines: io.StringIO) -> None:
    def crash() -> None:
        raise RuntimeError(f"password=hunter2 {EMAIL}")

    thread = threading.Thread(target=crash, name="collector")
    thread.start()
    thread.join()
    (line,) = parsed(json_lines)
    assert (line["event"], line["thread"], line["level"]) == (
        "thread.crashed",
        "collector",
        "error",
    )
    assert "RuntimeError: password=[redacted] [email]" in line["exception"]


def test_configuring_twice_installs_one_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", "json", first)
    logs.configure("info", "json", second)
    try:
        logging.getLogger("x").warning("once")
    finally:
        logs.reset()
    assert (first.getvalue(), len(second.getvalue().splitlines())) == ("", 1)


def test_a_crashing_process_logs_its_traceback_redacted_in_json() -> None:
    program = (
        "from listener import logs\n"
        "logs.configure('info', 'json')\n"
        f"raise RuntimeError('RAZORPAY_WEBHOOK_SECRET=whsec_abc123 {EMAIL}')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == ""
    (line,) = [json.loads(text) for text in done.stdout.splitlines()]
    assert (line["event"], line["level"]) == ("process.crashed", "critical")
    assert "RuntimeError: RAZORPAY_WEBHOOK_SECRET=[redacted] [email]" in line["exception"]
    assert "whsec_abc123" not in done.stdout
