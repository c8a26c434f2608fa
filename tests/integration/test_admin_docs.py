"""Every `$ listener ...` line in the README's Demo, Operations and Troubleshooting
sections and in docs/troubleshooting.md runs, in order, against a real database;
where the docs show the output in full, the output must match."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import psycopg
import pytest

from listener import cli

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```console\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def examples(text: str) -> list[tuple[str, list[str]]]:
    """(command, documented output lines) for each `$ listener` line in console blocks."""
    found: list[tuple[str, list[str]]] = []
    for block in FENCE.findall(text):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            elif found:
                found[-1][1].append(line)
    return found


def documented() -> list[tuple[str, list[str]]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    docs = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    return [
        *examples(section(readme, "Operations")),
        *examples(section(readme, "Troubleshooting")),
        *examples(docs),
    ]


def demo_examples() -> list[tuple[str, list[str]]]:
    return examples(section((ROOT / "README.md").read_text(encoding="utf-8"), "Demo"))


def test_the_docs_show_admin_and_doctor_commands() -> None:
    commands = {shlex.split(c)[1] for c, _ in documented()}
    assert commands == {"tasks", "retry", "cancel", "prune", "doctor"}
    assert {shlex.split(c)[1] for c, _ in demo_examples()} == {"demo"}


@pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="the README's demos take ~15 s: they run once, in the CI run without TEST_DATABASE_URL",
)
def test_every_demo_command_in_the_readme_runs_to_the_end(dsn: str) -> None:
    from tests.integration.test_demo import run_listener

    # Its own database: the demo's churn leaves dead rows that doctor rightly reports.
    for command, _ in demo_examples():
        done = run_listener(*shlex.split(command)[1:], "--dsn", dsn)
        assert (done.returncode, done.stderr) == (0, ""), command
        assert "\ndone: " in done.stdout


def test_every_documented_command_runs_and_prints_what_the_docs_show(
    conn: psycopg.Connection[Any], dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn.execute(
        "INSERT INTO tasks (type, status, attempts, error, completed_at) "
        "SELECT 'send_email', 'failed', 5, 'boom', now() FROM generate_series(1, 3)"
    )
    row = conn.execute(
        "INSERT INTO tasks (type, status, attempts, error, completed_at) "
        "VALUES ('report', 'failed', 5, 'boom', now()) RETURNING id"
    ).fetchone()
    assert row is not None
    for command, shown in documented():
        argv = shlex.split(command.replace("TASK_ID", str(row[0])))
        assert argv[0] == "listener"
        code = cli.main([*argv[1:], "--dsn", dsn])
        out, err = capsys.readouterr()
        assert (code, err) == (0, ""), command
        if shown and not any("…" in line for line in shown):
            assert out.splitlines() == shown, command
