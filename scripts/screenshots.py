"""Regenerate the dashboard screenshots in docs/ (shown in the README, "Dashboard").

    python -m scripts.screenshots [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Creates a scratch database on that server (dropped afterwards), fills it with an
hour of history, runs a real worker (`listener run`) and `listener ui`, and has
headless Chromium (chromium + chromium-driver, see .ci/install-tools) take
docs/dashboard-overview.png and docs/dashboard-task.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests import pg
from tests.integration.engine_support import ROOT, wait_until
from tests.integration.ui_browser import chrome, ui_process

TOKEN = "screenshot-token-0123456789"  # noqa: S105 - a throwaway, for a scratch database
DOCS = ROOT / "docs"

# An hour of finished work whose rate rises and falls, a few failures with the
# errors real handlers write, a backlog of scheduled reports, one payload to show.
HISTORY = """
INSERT INTO tasks (type, payload, status, created_at, run_at, started_at, completed_at,
                   attempts, max_attempts, error, dedupe_key)
SELECT type, payload, status, t - interval '40 ms' - pickup, t - interval '40 ms' - pickup,
       t - interval '40 ms', t, attempts, NULL, error, dedupe_key
FROM (
    SELECT (ARRAY['send_email', 'send_email', 'generate_care_plan',
                  'razorpay_webhook'])[1 + g % 4] AS type,
           jsonb_build_object('to', 'patient' || g || '@clinic.example', 'subject', 'Your plan',
                              'body', 'Hello') AS payload,
           CASE WHEN g % 97 = 0 THEN 'failed' ELSE 'completed' END AS status,
           CASE WHEN g % 97 = 0 THEN 5 ELSE 1 END AS attempts,
           CASE WHEN g % 97 = 0 AND g % 4 = 2 THEN 'LLMError: 429 rate limited after 5 attempts'
                WHEN g % 97 = 0 THEN 'SMTPRecipientsRefused: 550 5.1.1 user unknown' END AS error,
           CASE WHEN g % 4 = 3 THEN 'evt_' || g END AS dedupe_key,
           now() - interval '1 second' - (3600 * (g / 9000.0) ^ 1.15) * interval '1 s' AS t,
           (0.004 + (g % 7) * 0.003) * interval '1 s' AS pickup
    FROM generate_series(1, 9000) AS g
) AS h;
INSERT INTO tasks (type, payload, run_at, priority)
SELECT 'report', '{"month": "2026-11"}', now() + g * interval '10 min', g % 2
FROM generate_series(1, 12) AS g;
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server where a scratch database may be created",
    )
    args = parser.parse_args(argv)
    template = pg.create_template(args.dsn)
    name = pg.create_database(args.dsn, template)
    dsn = pg.dsn_for(args.dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(HISTORY)
            failed = _failed_email(conn)
        with tempfile.TemporaryDirectory() as tmp, _worker(dsn, Path(tmp)):
            _feed(dsn)
            _shoot(dsn, failed, Path(tmp))
    finally:
        pg.drop_database(args.dsn, name)
        pg.drop_database(args.dsn, template)
    print(f"wrote {DOCS / 'dashboard-overview.png'} and {DOCS / 'dashboard-task.png'}")
    return 0


@contextlib.contextmanager
def _worker(dsn: str, tmp: Path) -> Iterator[None]:
    """`listener run` with this script's handlers, stopped (drained) with SIGTERM."""
    log = (tmp / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "listener.cli", "run", "--dsn", dsn, "--concurrency", "4",
         "--handlers", "scripts.screenshot_handlers", "--metrics-port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(
                lambda: (
                    process.poll() is not None
                    or conn.execute("SELECT count(*) FROM listener.workers").fetchone() == (1,)
                ),
                timeout_s=30,
            )
        assert process.poll() is None, (tmp / "worker.log").read_text()
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        log.close()


def _failed_email(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "INSERT INTO tasks (type, payload) VALUES ('send_email', %s) RETURNING id",
        (json.dumps({"to": "bounce@clinic.example", "subject": "Your care plan", "body": "…"}),),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _feed(dsn: str) -> None:
    """A few live tasks, so the last minute of the chart and the worker are real."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(5):
            conn.execute(
                "INSERT INTO tasks (type, payload) SELECT "
                "(ARRAY['send_email', 'generate_care_plan', 'razorpay_webhook'])[1 + g % 3], "
                "jsonb_build_object('to', 'p' || g || '@clinic.example') "
                "FROM generate_series(1, 40) AS g"
            )
            time.sleep(0.3)
        wait_until(
            lambda: conn.execute(
                "SELECT count(*) = 0 FROM tasks WHERE status IN ('processing') "
                "OR (status = 'pending' AND run_at <= now())"
            ).fetchone()[0],  # type: ignore[index]
            timeout_s=30,
        )


def _shoot(dsn: str, failed: str, tmp: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = chrome(tmp / "profile")
    try:
        with ui_process(dsn, TOKEN, tmp / "ui.log") as base:
            driver.set_window_size(1280, 1400)
            driver.get(f"{base}/login?next=/")
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            driver.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
            wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "[data-chart-ready]"))
            _full_page(driver, DOCS / "dashboard-overview.png")
            driver.get(f"{base}/tasks/{failed}")
            wait_until(lambda: driver.find_elements(By.ID, "retry"))
            _full_page(driver, DOCS / "dashboard-task.png")
    finally:
        driver.quit()


def _full_page(driver: Any, path: Path) -> None:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height) + 40, 2400))
    time.sleep(0.3)  # let the chart take the new width before the picture
    driver.save_screenshot(str(path))


if __name__ == "__main__":
    sys.exit(main())
