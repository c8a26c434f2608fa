"""Limit and schedule options: parsed at import into typed values, refused naming the option."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from listener.cli import build_parser, main
from listener.cli_run import apply_limits
from listener.errors import ConfigError
from listener.limits import LimitOverride, RateLimit, parse_limit_override, parse_rate_limit
from listener.models import Task
from listener.registry import Registry, handler
from listener.schedules import Schedule

ROOT = Path(__file__).resolve().parents[2]


def _register(registry: Registry, task_type: str = "t", **options: Any) -> None:
    @handler(task_type, registry=registry, **options)
    async def run(task: Task) -> None:
        return None


def test_limits_and_schedules_are_stored_on_the_spec_as_typed_values() -> None:
    registry = Registry()
    _register(registry, "llm", global_concurrency=4, rate_limit="30/m")
    _register(registry, "digest", cron="0 8 * * *", cron_tz="Europe/Berlin")
    _register(registry, "ping", every="15s")
    llm, digest, ping = (registry.get(t) for t in ("llm", "digest", "ping"))
    assert llm is not None
    assert digest is not None
    assert ping is not None
    assert llm.options.global_concurrency == 4
    assert llm.options.rate_limit == RateLimit(count=30, window_s=60)
    assert llm.options.schedule is None
    assert digest.options.schedule == Schedule(cron="0 8 * * *", tz="Europe/Berlin")
    assert ping.options.schedule == Schedule(every_s=15)
    assert (ping.options.global_concurrency, ping.options.rate_limit) == (None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5/s", RateLimit(5, 1)), ("30/m", RateLimit(30, 60)), ("1000/h", RateLimit(1000, 3600))],
)
def test_rate_limits_count_starts_per_second_minute_or_hour(text: str, expected: RateLimit) -> None:
    assert parse_rate_limit(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"global_concurrency": 0}, "global_concurrency must be between 1 and"),
        ({"global_concurrency": -3}, "global_concurrency must be between 1 and"),
        ({"global_concurrency": 2.5}, "global_concurrency must be a whole number"),
        ({"global_concurrency": "4"}, "global_concurrency must be a whole number"),
        ({"global_concurrency": True}, "global_concurrency must be a whole number"),
        ({"rate_limit": "5/week"}, "rate_limit='5/week' is not a rate like '30/m'"),
        ({"rate_limit": "0/s"}, "rate_limit='0/s' is not a rate"),
        ({"rate_limit": "-1/m"}, "rate_limit='-1/m' is not a rate"),
        ({"rate_limit": "30"}, "rate_limit='30' is not a rate"),
        ({"rate_limit": 30}, "rate_limit must be a string like '30/m'"),
        ({"cron": "61 * * * *"}, "cron='61 \\* \\* \\* \\*' is not a valid cron expression"),
        ({"cron": "0 8 * *"}, "cron='0 8 \\* \\*' must have 5 fields"),
        ({"cron": "0 8 * * *", "every": "1h"}, "give cron= or every=, not both"),
        ({"cron": "0 8 * * *", "cron_tz": "Europe/Atlantis"}, "cron_tz='Europe/Atlantis' is not"),
        ({"every": "15"}, "every='15' is not an interval"),
        ({"every": "0s"}, "every='0s' is not an interval"),
        ({"every": "1h", "cron_tz": "UTC"}, "cron_tz= applies to cron= only"),
    ],
)
def test_invalid_options_fail_at_import_naming_the_handler_and_the_option(
    options: dict[str, Any], named: str
) -> None:
    registry = Registry()
    with pytest.raises(ConfigError, match=f"^handler for 'nightly_digest': {named}"):
        _register(registry, "nightly_digest", **options)
    assert registry.types() == []


def test_a_bad_option_stops_the_worker_at_start_with_one_line(tmp_path: Any) -> None:
    (tmp_path / "bad_handlers.py").write_text(
        "from listener import handler\n\n"
        "@handler('nightly_digest', rate_limit='5/week')\n"
        "async def digest(task):\n    pass\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "listener.cli", "run", "--handlers", "bad_handlers",
         "--dsn", "postgresql://nobody@127.0.0.1:1/none"],
        cwd=ROOT, env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "listener: error: handler for 'nightly_digest': rate_limit='5/week' is not a rate "
        "like '30/m': a whole number > 0, '/', and s, m or h"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("generate_care_plan=global:4,rate:30/m",
         LimitOverride("generate_care_plan", 4, RateLimit(30, 60))),
        ("t=global:2", LimitOverride("t", global_concurrency=2)),
        ("t=rate:5/s", LimitOverride("t", rate_limit=RateLimit(5, 1))),
        (" t = rate : 5/s , global : 3 ", LimitOverride("t", 3, RateLimit(5, 1))),
        ("t=global:off", LimitOverride("t", clear_global=True)),
        ("t=rate:off,global:1", LimitOverride("t", global_concurrency=1, clear_rate=True)),
    ],
)  # fmt: skip
def test_limit_flag_parses_global_and_rate(text: str, expected: LimitOverride) -> None:
    assert parse_limit_override(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("generate_care_plan", "is not TYPE=global:N,rate:N/s|m|h"),
        ("=global:4", "is not TYPE=global:N"),
        ("t=", "is not TYPE=global:N"),
        ("t=global:0", "global must be between 1 and"),
        ("t=global:-1", "global must be between 1 and"),
        ("t=global:many", "global='many' is not a whole number"),
        ("t=rate:5/week", "rate='5/week' is not a rate like '30/m'"),
        ("t=burst:5", "'burst:5' is not global:N or rate:N/s|m|h"),
        ("t=global4", "'global4' is not global:N"),
        ("t=global:1,global:2", "global is given twice"),
    ],
)
def test_limit_flag_refuses_bad_input_saying_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_limit_override(text)


def test_limit_flag_errors_are_one_usage_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--limit", "generate_care_plan=rate:5/week"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "listener: error: argument --limit: rate='5/week' is not a rate like '30/m': "
        "a whole number > 0, '/', and s, m or h"
    ]


def test_limit_flags_override_the_decorator_key_by_key() -> None:
    registry = Registry()
    _register(registry, "llm", global_concurrency=4, rate_limit="30/m", timeout_s=9)
    _register(registry, "other", rate_limit="1/s")
    args = build_parser().parse_args(
        ["run", "--limit", "llm=global:2", "--limit", "other=rate:off,global:7"]
    )
    apply_limits(registry, args.limit)
    llm, other = registry.get("llm"), registry.get("other")
    assert llm is not None
    assert other is not None
    assert (llm.options.global_concurrency, llm.options.rate_limit) == (2, RateLimit(30, 60))
    assert llm.options.timeout_s == 9  # everything else is kept
    assert (other.options.global_concurrency, other.options.rate_limit) == (7, None)


def test_limit_flag_for_a_type_without_a_handler_is_refused() -> None:
    registry = Registry()
    _register(registry, "llm")
    with pytest.raises(ConfigError, match="--limit nope: no handler registered for that type"):
        apply_limits(registry, [parse_limit_override("nope=global:1")])


def _care_plan_options(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import handlers\n"
        "from listener.registry import default_registry\n"
        "o = default_registry.get('generate_care_plan').options\n"
        "print(o.global_concurrency, o.rate_limit)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        ({}, "4 30/m"),  # the documented defaults
        ({"CARE_PLAN_GLOBAL_CONCURRENCY": "2", "CARE_PLAN_RATE_LIMIT": "500/h"}, "2 500/h"),
        ({"CARE_PLAN_GLOBAL_CONCURRENCY": "off", "CARE_PLAN_RATE_LIMIT": "off"}, "None None"),
    ],
)
def test_care_plan_limits_have_defaults_and_follow_the_environment(
    env: dict[str, str], shown: str
) -> None:
    result = _care_plan_options(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shown


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CARE_PLAN_RATE_LIMIT": "5/week"}, "CARE_PLAN_RATE_LIMIT='5/week' is not a rate"),
        ({"CARE_PLAN_GLOBAL_CONCURRENCY": "0"}, "CARE_PLAN_GLOBAL_CONCURRENCY must be between"),
        ({"CARE_PLAN_GLOBAL_CONCURRENCY": "four"}, "CARE_PLAN_GLOBAL_CONCURRENCY='four' is not"),
    ],
)
def test_invalid_care_plan_limits_stop_the_worker_at_start_with_one_line(
    env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "listener.cli", "run", "--handlers", "handlers",
         "--dsn", "postgresql://nobody@127.0.0.1:1/none"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"listener: error: {message}")
