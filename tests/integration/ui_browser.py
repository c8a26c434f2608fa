"""A real browser (headless Chromium via chromedriver) and a real `listener ui` process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.engine_support import ROOT, free_port, wait_until
from tests.tools import require_tool

AXE = ROOT / "tests" / "vendor" / "axe.min.js"


def chrome(user_data_dir: Path) -> Any:
    """Headless Chromium with the options that work here (shared/ENVIRONMENT.md)."""
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={user_data_dir}", "--window-size=1280,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(driver_path))


@contextlib.contextmanager
def ui_process(dsn: str, token: str | None, log_path: Path, poll_s: float = 1.0) -> Iterator[str]:
    """`listener ui` on a free loopback port; yields its base URL; stops it with SIGTERM."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"LISTENER_UI_TOKEN", "DATABASE_URL"}}
    if token is not None:
        env["LISTENER_UI_TOKEN"] = token
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "listener.cli", "ui", "--dsn", dsn, "--port", str(port),
         "--poll-interval-s", str(poll_s), "--log-format", "json"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _answers(base), timeout_s=30)
        assert process.poll() is None, log_path.read_text()
        yield base
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def _answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/overview", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def axe_violations(driver: Any) -> list[str]:
    """axe-core run inside the page: one line per violation (rule, impact, where)."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    violations = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations)).catch(e => done([{id: 'axe-error', impact: String(e),"
        " nodes: []}]));"
    )
    return [
        f"{v['id']} ({v['impact']}): {v.get('help', '')} at "
        + ", ".join(json.dumps(n["target"]) for n in v["nodes"][:3])
        for v in violations
    ]


def console_errors(driver: Any) -> list[str]:
    """Severe browser console lines (script errors, CSP violations)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
