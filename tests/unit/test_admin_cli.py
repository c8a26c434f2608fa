"""Admin commands refuse bad or ambiguous input before touching any database."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from listener import admin, cli, cli_admin

# Nothing listens on port 1: a command that tried to connect would fail with
# "cannot connect" (exit 1) instead of the usage error (exit 2) these tests expect.
UNREACHABLE = ["--dsn", "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1"]
SOME_ID = str(uuid.uuid4())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main([*argv, *UNREACHABLE])
    except SystemExit as exc:  # argparse errors exit through the parser
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["retry", "cancel"])
def test_change_without_selector_is_refused_with_one_line(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = run(capsys, command)
    assert code == cli.EXIT_USAGE
    assert out == ""
    assert err == "listener: error: say which tasks: --id ID (repeatable), --type TYPE, or --all\n"


@pytest.mark.parametrize("command", ["retry", "cancel"])
def test_all_combined_with_id_is_refused(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, _, err = run(capsys, command, "--all", "--id", SOME_ID)
    assert code == cli.EXIT_USAGE
    assert err == "listener: error: --all cannot be combined with --id\n"


def test_id_and_type_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "retry", "--id", SOME_ID, "--type", "send_email")
    assert code == cli.EXIT_USAGE
    assert err == "listener: error: choose tasks by --id or by --type, not both\n"


def test_malformed_task_id_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cancel", "--id", "42")
    assert code == cli.EXIT_USAGE
    assert err.count("\n") == 1
    assert "'42' is not a task id (a UUID)" in err


def test_prune_needs_older_than(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "prune")
    assert code == cli.EXIT_USAGE
    assert "--older-than" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_prune_rejects_a_batch_size_below_one(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, _, err = run(capsys, "prune", "--older-than", "7d", "--batch-size", value)
    assert code == cli.EXIT_USAGE
    assert "is not a whole number of at least 1" in err


def test_prune_rejects_a_duration_without_unit(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "prune", "--older-than", "7")
    assert code == cli.EXIT_USAGE
    assert "'7' is not a duration like 30s, 5m, 2h or 7d" in err


def test_tasks_refuses_a_window_that_matches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tasks", "--older-than", "2d", "--newer-than", "1d")
    assert code == cli.EXIT_USAGE
    assert err == (
        "listener: error: --newer-than must be longer than --older-than, or no task can match\n"
    )


def test_tasks_refuses_an_unknown_status(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tasks", "--status", "done")
    assert code == cli.EXIT_USAGE
    assert "invalid choice: 'done'" in err


def test_selection_params_carry_exactly_one_kind_of_selector() -> None:
    task_id = uuid.uuid4()
    assert admin.Selection(ids=(task_id,)).params() == {"all": False, "ids": [task_id], "types": []}
    assert admin.Selection(all=True).params() == {"all": True, "ids": [], "types": []}


def test_prune_refuses_a_negative_age_before_querying() -> None:
    with pytest.raises(admin.SelectionError, match="must not be negative"):
        admin._check_older_than(timedelta(seconds=-1))


@pytest.mark.parametrize(
    ("by_type", "dry_run", "expected"),
    [
        ({"send_email": 3}, False, "retried 3 failed tasks of type send_email"),
        ({"send_email": 1}, False, "retried 1 failed task of type send_email"),
        (
            {"b": 1, "a": 2},
            True,
            "would retry 3 failed tasks (a: 2, b: 1) (dry run: nothing changed)",
        ),
        ({}, False, "no failed tasks match: nothing retried"),
    ],
)
def test_retry_summary_names_counts_and_types(
    by_type: dict[str, int], dry_run: bool, expected: str
) -> None:
    outcome = admin.Outcome(by_type, dry_run)
    assert cli_admin._summary(outcome, "retried", "retry", "failed") == expected
