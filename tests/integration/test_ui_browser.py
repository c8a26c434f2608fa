"""The dashboard in a real browser against a real `listener run` worker and `listener ui`.

Needs chromium and chromedriver (.ci/install-tools); gated like the other tool
tests (tests/tools.py), so CI runs these once, in the PostgreSQL 15 pass.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from tests.integration.engine_support import WorkerProcess, wait_until
from tests.integration.support import run_cli
from tests.integration.ui_browser import axe_violations, chrome, console_errors, ui_process
from tests.integration.ui_support import TOKEN, status_of

T = TypeVar("T")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(autouse=True)
def blank_page_after(browser: Any) -> Iterator[None]:
    """Each test starts with an empty console: the last page stops polling its server."""
    yield
    browser.get("about:blank")
    browser.get_log("browser")


@pytest.fixture
def worker(dsn: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(dsn, "--handlers", "tests.ui_handlers")
    try:
        process.wait_started()
        yield process
    finally:
        process.stop()


def _fresh(action: Callable[[], T]) -> T:
    """``action`` on elements found anew, again if live.js swapped them meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return action()
        except StaleElementReferenceException:
            continue
    return action()


def _failed_task(conn: psycopg.Connection[Any], ok_file: Path) -> uuid.UUID:
    """A ui_flaky task the worker fails (its file does not exist yet)."""
    row = conn.execute(
        "INSERT INTO tasks (type, payload) VALUES ('ui_flaky', %s) RETURNING id",
        (json.dumps({"ok_file": str(ok_file)}),),
    ).fetchone()
    assert row is not None
    wait_until(lambda: status_of(conn, row[0]) == "failed", timeout_s=20)
    return row[0]  # type: ignore[no-any-return]


def _open(browser: Any, url: str) -> None:
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete")


def test_a_failed_task_is_retried_from_the_browser_and_the_worker_completes_it(
    dsn: str, conn: psycopg.Connection[Any], worker: WorkerProcess, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    ok_file = tmp_path / "upstream-is-back"
    task_id = _failed_task(conn, ok_file)
    with ui_process(dsn, TOKEN, tmp_path / "ui.log") as base:
        _open(browser, f"{base}/tasks?status=failed")
        link = f"//a[text()='{str(task_id)[:8]}']"
        row_text = _fresh(lambda: browser.find_element(By.XPATH, f"{link}/ancestor::tr").text)
        assert "upstream refused the request" in row_text  # the error, on the tasks page
        assert axe_violations(browser) == []
        _fresh(lambda: browser.find_element(By.XPATH, link).click())
        wait_until(lambda: browser.current_url.endswith(f"/tasks/{task_id}"))
        assert browser.find_elements(By.ID, "retry") == []  # not logged in: no button
        assert axe_violations(browser) == []

        _fresh(lambda: browser.find_element(By.LINK_TEXT, "Log in").click())
        wait_until(lambda: browser.find_elements(By.ID, "token"))  # the login page loaded
        assert axe_violations(browser) == []
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form.stack button[type=submit]").click()
        wait_until(lambda: browser.find_elements(By.ID, "retry"))

        ok_file.touch()  # the upstream works again: the next attempt succeeds
        _fresh(lambda: browser.find_element(By.ID, "retry").click())
        # The retry posts and a new page comes back: looked for at once, the flash was
        # sometimes looked for on the old page (failed once in a clean-clone CI run).
        flash = wait_until(
            lambda: _fresh(
                lambda: " ".join(
                    e.text for e in browser.find_elements(By.CSS_SELECTOR, ".flash.ok")
                )
            )
        )
        assert "retried: back to pending" in flash
        wait_until(lambda: status_of(conn, task_id) == "completed", timeout_s=20)
        # The page updates itself: the status turns to completed without a reload.
        browser.execute_script("window.__not_reloaded = true;")
        wait_until(
            lambda: (
                "completed" in _fresh(lambda: browser.find_element(By.CSS_SELECTOR, ".badge").text)
            )
        )
        assert browser.execute_script("return window.__not_reloaded === true;")
        assert console_errors(browser) == []
    row = conn.execute("SELECT attempts, error FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row == (1, None)  # a fresh set of attempts, the error cleared


def test_without_the_token_there_is_no_button_and_a_forged_post_is_refused(
    dsn: str, conn: psycopg.Connection[Any], worker: WorkerProcess, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    task_id = _failed_task(conn, tmp_path / "never")
    with ui_process(dsn, None, tmp_path / "ui.log") as base:
        _open(browser, f"{base}/tasks/{task_id}")
        assert browser.find_elements(By.ID, "retry") == []
        assert "read-only" in browser.page_source
        forged = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "const form = {method: 'POST', body: new URLSearchParams({csrf: 'x'})};"
            f"const bearer = {{method: 'POST', headers: {{Authorization: 'Bearer {TOKEN}'}}}};"
            f"Promise.all([fetch('/tasks/{task_id}/retry', form),"
            f" fetch('/api/tasks/{task_id}/retry', bearer)])"
            ".then(rs => done(rs.map(r => r.status)));"
        )
        assert forged == [403, 403]
    assert status_of(conn, task_id) == "failed"


def test_the_overview_counts_match_listener_status_json_and_update_live(
    dsn: str, conn: psycopg.Connection[Any], worker: WorkerProcess, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    _failed_task(conn, tmp_path / "never")
    conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 5)")
    conn.execute("INSERT INTO tasks (type, run_at) VALUES ('report', now() + interval '1 h')")
    wait_until(lambda: status_of_count(conn, "noop", "completed") == 5, timeout_s=20)
    with ui_process(dsn, TOKEN, tmp_path / "ui.log") as base:
        _open(browser, base + "/")
        done = run_cli("status", "--json", "--dsn", dsn)
        assert done.returncode == 0, done.stderr
        expected = {(c["status"], c["type"]): c["count"] for c in json.loads(done.stdout)["counts"]}
        assert _page_counts(browser, By) == expected
        assert axe_violations(browser) == []
        assert browser.find_element(By.ID, "throughput-chart").get_attribute("data-chart-ready")
        workers = _fresh(lambda: browser.find_element(By.ID, "workers").text)
        assert "noop" in workers
        assert "ui_flaky" in workers  # the live worker and its types

        browser.execute_script("window.__not_reloaded = true;")
        conn.execute("INSERT INTO tasks (type) SELECT 'noop' FROM generate_series(1, 3)")
        wait_until(lambda: _page_counts(browser, By).get(("completed", "noop")) == 8, timeout_s=20)
        assert browser.execute_script("return window.__not_reloaded === true;")
        assert console_errors(browser) == []

        # The other pages pass the accessibility check too: retry-all, schedules and
        # limits with none to show (this worker has neither), an error page.
        for path in (
            "/actions/retry-failed?type=ui_flaky", "/schedules", f"/tasks/{uuid.uuid4()}",
        ):  # fmt: skip
            _open(browser, base + path)
            assert axe_violations(browser) == [], path
        errors = console_errors(browser)
        assert all("status of 404" in m for m in errors), errors  # the error page's own


def status_of_count(conn: psycopg.Connection[Any], task_type: str, status: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM tasks WHERE type = %s AND status = %s", (task_type, status)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _page_counts(browser: Any, by: Any) -> dict[tuple[str, str], int]:
    """The counts table as the page shows it now, read in one go (live.js swaps it)."""
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('td[data-status][data-type]'))"
        ".map(td => [td.dataset.status, td.dataset.type, td.textContent.trim()]);"
    )
    return {(status, task_type): int(n) for status, task_type, n in cells if int(n)}


def test_the_schedules_page_shows_a_schedule_and_a_limit_live_and_links_the_last_run(
    dsn: str, conn: psycopg.Connection[Any], browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    # every_second fires every second; limited: global_concurrency=2, rate_limit="5/s".
    worker = WorkerProcess(
        dsn, "--handlers", "tests.schedule_handlers", "--types", "every_second", "limited"
    )
    try:
        worker.wait_started()
        wait_until(lambda: _last_scheduled_task(conn, "every_second"), timeout_s=20)
        with ui_process(dsn, None, tmp_path / "ui.log") as base:
            _open(browser, base + "/")
            _fresh(lambda: browser.find_element(By.LINK_TEXT, "Schedules and limits").click())
            wait_until(lambda: browser.current_url == base + "/schedules")
            schedule = "#schedules tr[data-type=every_second]"
            row = _fresh(lambda: browser.find_element(By.CSS_SELECTOR, schedule).text)
            assert "every 1s" in row
            (worker_id,) = conn.execute(
                "SELECT id FROM listener.workers WHERE pid = %s", (worker.proc.pid,)
            ).fetchone() or (None,)
            assert worker_id
            assert worker_id in row  # run by this worker
            limit = _fresh(lambda: browser.find_element(By.ID, "limits").text)
            assert "limited" in limit
            assert "0 / 2" in limit  # running / global_concurrency
            assert "per second" in limit
            assert axe_violations(browser) == []

            # Live: the last run moves on each second, without a reload.
            browser.execute_script("window.__not_reloaded = true;")
            last_run = f"return document.querySelector('{schedule} time').dateTime;"
            first = browser.execute_script(last_run)
            wait_until(lambda: browser.execute_script(last_run) != first, timeout_s=15)
            assert browser.execute_script("return window.__not_reloaded === true;")

            _fresh(lambda: browser.find_element(By.CSS_SELECTOR, f"{schedule} a.id").click())
            wait_until(lambda: "/tasks/" in browser.current_url)
            assert "every_second" in browser.find_element(By.TAG_NAME, "h1").text + (
                browser.find_element(By.ID, "task-summary").text
            )
            assert console_errors(browser) == []
    finally:
        worker.stop()


def _last_scheduled_task(conn: psycopg.Connection[Any], task_type: str) -> Any:
    row = conn.execute(
        "SELECT last_task_id FROM listener.schedules WHERE type = %s", (task_type,)
    ).fetchone()
    return row[0] if row else None


def test_live_updates_wait_while_the_keyboard_focus_is_in_the_part_they_would_replace(
    dsn: str, conn: psycopg.Connection[Any], browser: Any, tmp_path: Path
) -> None:
    from tests.integration.ui_support import add_failed

    add_failed(conn, "report", error="first")
    with ui_process(dsn, None, tmp_path / "ui.log", poll_s=0.5) as base:
        _open(browser, f"{base}/tasks?status=failed")
        browser.execute_script(
            "const a = document.querySelector('#task-list a.id'); a.focus(); a.__mine = true;"
        )
        add_failed(conn, "report", error="second")
        region_text = "return document.getElementById('task-list').textContent;"
        still = "return document.activeElement.__mine === true;"
        # Something that must not happen: watch it for three polls (0.5 s each).
        for _ in range(6):
            assert browser.execute_script(still)
            time.sleep(0.25)
        assert "second" not in browser.execute_script(region_text)
        browser.execute_script("document.activeElement.blur();")
        wait_until(lambda: "second" in browser.execute_script(region_text))
