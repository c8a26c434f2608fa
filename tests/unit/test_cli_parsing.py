"""The CLI's argument parsing: durations, --run-at, --payload, one-line usage errors."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta, timezone

import pytest

from listener.cli import build_parser, main, parse_duration, parse_payload, parse_run_at


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("+10m", timedelta(minutes=10)),
        (" 10s ", timedelta(seconds=10)),
    ],
)
def test_durations_parse_with_their_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "m", "10 minutes", "-5m", "5w", "1e3s"])
def test_malformed_durations_are_rejected_with_an_example(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration like 30s"):
        parse_duration(text)


def test_run_at_accepts_a_delay() -> None:
    assert parse_run_at("10m") == timedelta(minutes=10)


def test_run_at_accepts_an_iso_time_with_a_zone() -> None:
    assert parse_run_at("2030-01-01T09:00:00+05:30") == datetime(
        2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))
    )
    assert parse_run_at("2030-01-01T09:00:00Z") == datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


def test_run_at_without_a_zone_is_rejected() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="needs a time zone"):
        parse_run_at("2030-01-01T09:00:00")


def test_run_at_that_is_neither_time_nor_delay_is_rejected() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="neither an ISO time"):
        parse_run_at("tomorrow")


def test_payload_must_be_a_json_object() -> None:
    assert parse_payload('{"email": "a@b.c", "n": 1}') == {"email": "a@b.c", "n": 1}
    with pytest.raises(argparse.ArgumentTypeError, match="must be a JSON object, got list"):
        parse_payload("[1, 2]")
    with pytest.raises(argparse.ArgumentTypeError, match="not valid JSON"):
        parse_payload("{email: 1}")


def test_enqueue_arguments_parse_into_typed_values() -> None:
    args = build_parser().parse_args(
        ["enqueue", "send_email", "--payload", '{"to": "x"}', "--run-at", "5m", "--priority", "3"]
    )
    assert (args.type, args.payload, args.run_at, args.priority) == (
        "send_email",
        {"to": "x"},
        timedelta(minutes=5),
        3,
    )


def test_usage_error_is_one_line_on_stderr_with_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["enqueue", "send_email", "--payload", "{not json"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("listener: error: argument --payload: --payload is not valid JSON")


def test_unknown_subcommand_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_invalid_task_type_fails_before_connecting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 1 refuses connections: if validation ran after connecting, the error would say so.
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
    assert main(["enqueue", "bad type"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "listener: error: task type 'bad type' has characters outside letters, digits and _ . : -\n"
    )


def test_schema_prints_the_script_without_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-- listener schema")
    assert "CREATE TABLE IF NOT EXISTS public.tasks" in out
    assert out.rstrip().endswith("COMMIT;")
