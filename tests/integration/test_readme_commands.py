"""Every command the README shows in a fenced block is run by a test, or COVERAGE
below names the test that runs it or says in one line why it cannot run here.

The commands are read from README.md, so a command added there without a test
fails test_every_readme_command_is_run_or_accounted_for. How each is covered:

- `$ listener ...` lines of console blocks in Demo, Operations and Troubleshooting:
  tests/integration/test_admin_docs.py runs them (its own extraction decides which);
- `listener ...` lines of shell blocks: run here through bash, with DATABASE_URL set
  to the test database (`listener run` is started, checked and stopped with SIGTERM);
- `psql ...` lines: run here with the real psql against the test database;
- SQL blocks: run here on the test database;
- anything else (Python and JavaScript snippets, curl, docker, pytest, ...): COVERAGE.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from listener import payments, producer
from listener.worker import WorkerSettings, _open_pool
from tests.integration import test_admin_docs
from tests.integration.engine_support import free_port, wait_until
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SHELL = {"sh", "bash", "shell", ""}  # an untyped block is read as shell lines
DIAGRAM = re.compile(r"[─│►▼]")  # box drawing: a picture, not commands
THIS = "tests/integration/test_readme_commands.py"


@dataclass(frozen=True, slots=True)
class Command:
    """One command shown in the README."""

    kind: str  # console, shell, sql, python, js
    text: str  # the whole command (a block's text for sql, python and js)
    section: str

    @property
    def key(self) -> str:
        """How COVERAGE names it: its first line, without a trailing comment or `\\`."""
        first = self.text.strip().splitlines()[0]
        return re.sub(r"\s+#\s.*$", "", first).removesuffix("\\").strip()


@dataclass(frozen=True, slots=True)
class RunBy:
    """Run, as shown (or as noted), by this test."""

    test: str  # path::function
    note: str = ""


@dataclass(frozen=True, slots=True)
class NotHere:
    """Cannot run in this suite; ``checked_by`` tests what can be tested of it."""

    reason: str
    checked_by: str = ""


CONTAINER = "tests/integration/test_observability_container.py"
COVERAGE: dict[str, RunBy | NotHere] = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]'": NotHere(
        "makes the developer venv this suite runs in; .ci/install runs the same steps"
    ),
    "pytest": NotHere("the whole suite, this test included; .ci/run runs it"),
    "TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres pytest": NotHere(
        "the whole suite, this test included; .ci/run runs exactly this"
    ),
    "ruff check . && ruff format --check . && mypy && lint-imports": NotHere(
        "lint, not a test: .ci/run's lint step runs these four"
    ),
    "from listener import create_task": RunBy(
        f"{THIS}::test_python_producer_snippet_enqueues_its_tasks",
        "`{...}` stands for a payload: run with `{}`",
    ),
    "# myapp/tasks.py": RunBy(
        f"{THIS}::test_handler_example_runs_in_a_real_worker",
    ),
    "# myapp/periodic.py": RunBy(
        "tests/integration/test_schedules.py"
        "::test_readme_schedules_example_registers_both_schedules_in_a_real_worker"
    ),
    "# myapp/llm_tasks.py": RunBy(
        "tests/integration/test_schedules.py"
        "::test_readme_limits_example_is_published_by_a_real_worker"
    ),
    "import base64": NotHere(
        "Flask is not a dependency; the same endpoint on http.server is run by the test",
        "tests/integration/test_razorpay_worker.py"
        "::test_webhook_posted_to_the_endpoint_pattern_is_credited_by_the_worker",
    ),
    "from listener import payments": RunBy(f"{THIS}::test_credit_hook_snippet_credits_a_payment"),
    'const { data: taskId, error } = await supabase.rpc("enqueue_task", {': NotHere(
        "needs a Supabase project; the test checks the function and argument names exist",
        f"{THIS}::test_supabase_rpc_examples_call_a_function_that_exists_with_those_arguments",
    ),
    'curl -X POST "$SUPABASE_URL/rest/v1/rpc/enqueue_task"': NotHere(
        "needs PostgREST; the test makes the call PostgREST makes, with this JSON body",
        f"{THIS}::test_curl_rpc_body_enqueues_a_task_when_called_as_postgrest_calls_it",
    ),
    "docker compose up -d --build": NotHere(
        "needs a Docker engine; the compose file is validated here, the image run by podman",
        "tests/deploy/test_container_files.py::test_compose_file_is_valid",
    ),
    "docker compose up -d --scale worker=3": NotHere(
        "needs a Docker engine; the worker service's scaling setup is checked",
        "tests/deploy/test_container_files.py"
        "::test_worker_is_scalable_and_starts_after_the_one_shot_migration",
    ),
    "docker build -t listener .": RunBy(
        f"{CONTAINER}::test_container_serves_metrics_is_healthy_runs_a_task_and_drains_on_sigterm",
        "the same Dockerfile built with podman, from .ci/container-test",
    ),
    "docker run --rm -e DATABASE_URL=postgresql://... listener migrate": RunBy(
        f"{CONTAINER}::test_migrate_is_a_one_shot_command", "with podman, from .ci/container-test"
    ),
    "docker run -d -e DATABASE_URL=postgresql://... -p 9108:9108 listener": RunBy(
        f"{CONTAINER}::test_container_serves_metrics_is_healthy_runs_a_task_and_drains_on_sigterm",
        "with podman, from .ci/container-test",
    ),
    "pip install 'listener[ui]'": NotHere(
        "installs the ui extra; .ci/install installs .[test], which includes it",
        "tests/integration/test_packaging.py"
        "::test_wheel_installed_outside_the_checkout_ships_the_sql_and_migrates",
    ),
    'export LISTENER_UI_TOKEN="$(python3 -c '
    "'import secrets; print(secrets.token_urlsafe(32))')\"": (
        NotHere(
            "sets a variable for the next line; listener ui runs with a token in the browser tests",
            "tests/integration/test_ui_browser.py"
            "::test_a_failed_task_is_retried_from_the_browser_and_the_worker_completes_it",
        )
    ),
    "pip install -e '.[bench]'": NotHere(
        "installs the peer queues for the benchmark; the smoke run measures them when present"
    ),
    "python -m bench": NotHere(
        "30 minutes of load; the smoke test runs `python -m bench --quick`",
        "tests/integration/test_bench_smoke.py"
        "::test_quick_benchmark_runs_every_item_and_writes_valid_json",
    ),
    "python -m bench --only raw,latency --json results.json --dsn "
    "postgresql://postgres@127.0.0.1:5432/postgres": NotHere(
        "minutes of load; the smoke test runs every item with --quick --json --dsn",
        "tests/integration/test_bench_smoke.py"
        "::test_quick_benchmark_runs_every_item_and_writes_valid_json",
    ),
}


def _section_at(text: str, offset: int) -> str:
    headings = re.findall(r"^## (.+)$", text[:offset], re.MULTILINE)
    return headings[-1] if headings else ""


def _shell_lines(block: str) -> list[str]:
    """Logical lines (a `\\` line goes on), without comments and blank lines."""
    lines: list[str] = []
    going_on = False
    for line in block.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if going_on:
            lines[-1] += "\n" + line
        elif line and not line.startswith("#"):
            lines.append(line)
        going_on = line.endswith("\\")
    return lines


def _argv(command: str) -> list[str]:
    return shlex.split(command.replace("\\\n", " "))


def readme_commands(text: str = README) -> list[Command]:
    """Every command in the README's fenced blocks, in order."""
    found: list[Command] = []
    for match in FENCE.finditer(text):
        lang, block, section = match[1], match[2], _section_at(text, match.start())
        if lang == "console":
            lines = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
            found += [Command("console", line, section) for line in lines]
        elif lang in SHELL and not DIAGRAM.search(block):
            found += [Command("shell", line, section) for line in _shell_lines(block)]
        elif lang in {"sql", "python", "js"}:
            found.append(Command(lang, block, section))
        elif lang not in SHELL:
            raise AssertionError(f"a ```{lang} block in {section}: teach this test to run it")
    return found


def _run_by_test_admin_docs() -> set[str]:
    shown = [*test_admin_docs.documented(), *test_admin_docs.demo_examples()]
    return {command for command, _ in shown}


def _first_word(command: Command) -> str:
    return _argv(command.text)[0] if command.kind == "shell" else ""


def covered_here(command: Command) -> str | None:
    """The test of this module that runs ``command`` because of what it is, if any."""
    if command.kind == "sql":
        return "test_sql_block_runs_on_a_migrated_database"
    if command.kind == "shell" and _first_word(command) == "psql":
        return "test_psql_command_runs_against_the_database"
    if command.kind == "shell" and _first_word(command) == "listener":
        if _argv(command.text)[1] == "run":
            return "test_listener_run_starts_a_worker_that_drains_on_sigterm"
        if _argv(command.text)[1] == "ui":
            return "test_listener_ui_serves_the_dashboard_until_sigterm"
        return "test_listener_command_succeeds_against_the_database"
    return None


def _commands(kind: str, first_word: str | None = None) -> list[Command]:
    return [
        c
        for c in readme_commands()
        if c.kind == kind and (first_word is None or _first_word(c) == first_word)
    ]


def _readme_block(key: str) -> str:
    (block,) = [c.text for c in readme_commands() if c.key == key]
    return block


def _test_exists(test: str) -> bool:
    path, _, name = test.partition("::")
    source = (ROOT / path).read_text(encoding="utf-8")
    return re.search(rf"^(async )?def {re.escape(name)}\(", source, re.MULTILINE) is not None


# -- coverage ---------------------------------------------------------------------


def uncovered(commands: list[Command]) -> list[str]:
    """Commands no test runs and COVERAGE does not account for."""
    by_admin_docs = _run_by_test_admin_docs()
    return [
        f"{c.section}: {c.key}"
        for c in commands
        if covered_here(c) is None
        and not (c.kind == "console" and c.text in by_admin_docs)
        and c.key not in COVERAGE
    ]


def test_every_readme_command_is_run_or_accounted_for() -> None:
    assert uncovered(readme_commands()) == [], "run these in a test, or add them to COVERAGE"


def test_a_command_added_to_the_readme_without_a_test_is_reported() -> None:
    added = "\n## Scaling\n\n```sh\nkubectl scale deployment/worker --replicas 3\n```\n"
    extra = "\n## Ops\n\n```console\n$ listener tasks --all\n```\n"
    assert uncovered(readme_commands(README + added + extra)) == [
        "Scaling: kubectl scale deployment/worker --replicas 3",
        "Ops: listener tasks --all",
    ]


def test_coverage_names_only_readme_commands_and_tests_that_exist() -> None:
    keys = [c.key for c in readme_commands()]
    assert sorted(set(COVERAGE) - set(keys)) == [], "stale COVERAGE entries"
    for key, entry in COVERAGE.items():
        test = entry.test if isinstance(entry, RunBy) else entry.checked_by
        if test:
            assert _test_exists(test), f"{key}: no test {test}"
        if isinstance(entry, NotHere):
            assert entry.reason, key
            assert "\n" not in entry.reason, key


def test_snippets_are_told_apart_by_their_first_line() -> None:
    blocks = [c for c in readme_commands() if c.kind in {"python", "js", "sql"}]
    assert len({c.key for c in blocks}) == len(blocks)


def test_the_extraction_finds_commands_of_every_kind() -> None:
    kinds = {c.kind for c in readme_commands()}
    assert kinds == {"console", "shell", "sql", "python", "js"}
    assert _listener_runs()
    assert _commands("shell", "psql")
    assert _commands("shell", "curl")


# -- shell, psql and SQL, run because of what they are ------------------------------


def _environment(dsn: str, **extra: str) -> dict[str, str]:
    """The user's shell: the venv's scripts on PATH and DATABASE_URL set."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "DATABASE_URL": dsn, **extra}


def _bash(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _listener_runs() -> list[str]:
    return [c.text for c in _commands("shell", "listener") if _argv(c.text)[1] == "run"]


def _listener_uis() -> list[str]:
    return [c.text for c in _commands("shell", "listener") if _argv(c.text)[1] == "ui"]


@pytest.mark.parametrize(
    "command",
    [
        c.text
        for c in _commands("shell", "listener")
        if c.text not in _listener_runs() and c.text not in _listener_uis()
    ],
)
def test_listener_command_succeeds_against_the_database(dsn: str, command: str) -> None:
    done = _bash(command, _environment(dsn))
    assert (done.returncode, done.stderr) == (0, ""), done.stdout


def _sessions(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Other sessions on this test's database, per application_name."""
    rows = conn.execute(
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
    ).fetchall()
    return {str(name): int(n) for name, n in rows}


def _registration(conn: psycopg.Connection[Any], pid: int) -> Any:
    """(types, concurrency) of the worker with this pid, once it has registered."""
    return conn.execute(
        "SELECT types, concurrency FROM listener.workers WHERE pid = %s", (pid,)
    ).fetchone()


@pytest.mark.parametrize("command", _listener_runs())
def test_listener_run_starts_a_worker_that_drains_on_sigterm(
    dsn: str, conn: psycopg.Connection[Any], command: str, tmp_path: Path
) -> None:
    # The metrics port is moved to a free loopback one: 9108 may be taken on this machine.
    port = free_port()
    log = (tmp_path / "worker.log").open("w")
    argv = _argv(command)
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command} --metrics-host 127.0.0.1 --metrics-port {port}"],
        cwd=ROOT, env=_environment(dsn), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: process.poll() is not None or _registration(conn, process.pid), 30)
        assert process.poll() is None, (tmp_path / "worker.log").read_text()
        types, concurrency = _registration(conn, process.pid)
        if "--types" in argv:
            shown = argv[argv.index("--types") + 1 :]
            assert types == sorted(t for t in shown if not t.startswith("-")), types
        if "--concurrency" in argv:
            assert concurrency == int(argv[argv.index("--concurrency") + 1])
        # Sizing connections: one LISTEN session, the pool within min(concurrency, 8) + 4.
        sessions = _sessions(conn)
        assert sessions.get("listener:listen") == 1, sessions
        assert sessions.get("listener", 0) <= min(concurrency, 8) + 4 + 1, sessions
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "worker.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


@pytest.mark.parametrize("command", _listener_uis())
def test_listener_ui_serves_the_dashboard_until_sigterm(
    dsn: str, command: str, tmp_path: Path
) -> None:
    # The port is moved to a free loopback one (argparse: the last --port wins).
    port = free_port()
    log = (tmp_path / "ui.log").open("w")
    env = _environment(dsn, LISTENER_UI_TOKEN="readme-test-token-0123456789")
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command} --port {port}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: process.poll() is not None or _page(port, "/healthz") == 200, 30)
        assert process.poll() is None, (tmp_path / "ui.log").read_text()
        assert _page(port, "/") == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, (tmp_path / "ui.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def _page(port: int, path: str) -> int | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except OSError:
        return None


@pytest.mark.parametrize("command", [c.text for c in _commands("shell", "psql")])
def test_psql_command_runs_against_the_database(dsn: str, command: str) -> None:
    require_tool("psql")
    done = _bash(command, _environment(dsn))
    assert (done.returncode, done.stderr) == (0, ""), command
    assert "row" in done.stdout  # psql's "(N rows)" footer: the query returned a result


@pytest.mark.parametrize("block", [c.text for c in _commands("sql")], ids=lambda b: b[:30])
def test_sql_block_runs_on_a_migrated_database(conn: psycopg.Connection[Any], block: str) -> None:
    before = conn.execute("SELECT count(*) FROM tasks").fetchone()
    conn.execute(block.encode())
    after = conn.execute("SELECT count(*) FROM tasks").fetchone()
    assert before is not None
    assert after is not None
    assert after[0] - before[0] == len(re.findall(r"^INSERT INTO tasks\b", block, re.MULTILINE))


# -- snippets COVERAGE maps to this module -----------------------------------------


def _exec_snippet(source: str, namespace: dict[str, Any]) -> None:
    # The README's own snippet, read from README.md a few lines up: exec is the point.
    exec(compile(source, "README.md", "exec"), namespace)  # noqa: S102


def test_python_producer_snippet_enqueues_its_tasks(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _readme_block("from listener import create_task")
    assert "{...}" in source
    monkeypatch.setenv("DATABASE_URL", dsn)
    try:
        with psycopg.connect(dsn) as my_conn:
            _exec_snippet(source.replace("{...}", "{}"), {"my_conn": my_conn})
            my_conn.commit()  # the README: "exists iff you commit"
    finally:
        producer.close_pools()
    rows = conn.execute("SELECT type, dedupe_key FROM tasks ORDER BY type").fetchall()
    assert rows == [("generate_care_plan", None), ("send_email", None), ("sync", "sync:42")]


def test_handler_example_runs_in_a_real_worker(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    source = _readme_block("# myapp/tasks.py")
    path = tmp_path / source.splitlines()[0].removeprefix("# ")  # myapp/tasks.py
    path.parent.mkdir()
    (path.parent / "__init__.py").write_text("")
    path.write_text(source)
    module = ".".join(path.relative_to(tmp_path).with_suffix("").parts)
    assert f"listener run --handlers {module}" in README
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [Path(sys.executable).parent / "listener", "run", "--handlers", module,
         "--metrics-port", "0"],
        cwd=ROOT, env=_environment(dsn, PYTHONPATH=str(tmp_path)),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # Both run to an end without the helpers the example leaves to you.
        conn.execute("INSERT INTO tasks (type) VALUES ('send_welcome'), ('resize_image')")
        outcome = "SELECT type, status, attempts, error FROM tasks ORDER BY type"
        expected = [
            ("resize_image", "completed", 1, None),
            ("send_welcome", "failed", 1, "PermanentError: payload has no 'to'"),
        ]
        wait_until(
            lambda: process.poll() is not None or conn.execute(outcome).fetchall() == expected,
            timeout_s=30,
        )
        assert conn.execute(outcome).fetchall() == expected, (tmp_path / "worker.log").read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


@pytest.mark.anyio
async def test_credit_hook_snippet_credits_a_payment(
    dsn: str, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from handlers.razorpay_webhook import razorpay_webhook
    from tests.handler_tasks import delivery, make_task, razorpay_event

    secret = "whsec_readme_0123"
    monkeypatch.setenv("RAZORPAY_WEBHOOK_SECRET", secret)
    monkeypatch.delenv("RAZORPAY_WEBHOOK_SECRET_PREVIOUS", raising=False)
    monkeypatch.delenv(payments.CREDIT_HOOK_ENV, raising=False)
    conn.execute("CREATE TABLE profiles (email text PRIMARY KEY, credits integer NOT NULL)")
    conn.execute("INSERT INTO profiles VALUES ('buyer@example.com', 0)")
    _exec_snippet(_readme_block("from listener import payments"), {"__name__": "readme"})
    try:
        task = make_task("razorpay_webhook", delivery(razorpay_event("payment.captured"), secret))
        async with await psycopg.AsyncConnection.connect(dsn) as aconn, aconn.transaction():
            await razorpay_webhook(task, aconn)
    finally:
        payments.set_credit_hook(None)
    assert conn.execute("SELECT credits FROM profiles").fetchone() == (10,)


# -- what can be checked of the Supabase examples ---------------------------------


def _curl() -> list[str]:
    (command,) = [c.text for c in _commands("shell", "curl")]
    return _argv(command)


def _function_arguments(conn: psycopg.Connection[Any], name: str) -> set[str]:
    row = conn.execute(
        "SELECT proargnames FROM pg_proc WHERE oid = to_regproc(%s)", (f"public.{name}",)
    ).fetchone()
    assert row is not None, f"no function public.{name}"
    return set(row[0])


def test_supabase_rpc_examples_call_a_function_that_exists_with_those_arguments(
    conn: psycopg.Connection[Any],
) -> None:
    js = _readme_block('const { data: taskId, error } = await supabase.rpc("enqueue_task", {')
    match = re.search(r'\.rpc\("(\w+)",\s*\{(.*)\}\s*\)', js, re.DOTALL)
    assert match is not None
    top_level = re.findall(r"^\s{2}(\w+):", match[2], re.MULTILINE)
    curl_url = next(a for a in _curl() if "/rpc/" in a)
    assert curl_url.rsplit("/", 1)[1] == match[1]  # both call the same function
    assert set(top_level) <= _function_arguments(conn, match[1]), top_level


def test_curl_rpc_body_enqueues_a_task_when_called_as_postgrest_calls_it(
    conn: psycopg.Connection[Any],
) -> None:
    argv = _curl()
    function = next(a for a in argv if "/rpc/" in a).rsplit("/", 1)[1]
    body: dict[str, Any] = json.loads(argv[argv.index("-d") + 1])
    # PostgREST calls the function with the body's keys as named arguments.
    call = sql.SQL("SELECT {}({})").format(
        sql.Identifier("public", function),
        sql.SQL(", ").join(sql.SQL("{} => %s").format(sql.Identifier(k)) for k in body),
    )
    values = [Jsonb(v) if isinstance(v, dict) else v for v in body.values()]
    row = conn.execute(call, values).fetchone()
    assert row is not None
    task = conn.execute("SELECT type, payload FROM tasks WHERE id = %s", (row[0],)).fetchone()
    assert task == (body["p_type"], body["p_payload"])


# -- the sizing the README documents ----------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 8, 10, 64])
def test_documented_pool_size_is_the_workers_pool_size(concurrency: int) -> None:
    assert "`min(concurrency, 8) + 4`" in README
    pool = _open_pool(WorkerSettings(dsn="postgresql://", concurrency=concurrency))
    assert pool.max_size == min(concurrency, 8) + 4
