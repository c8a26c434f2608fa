"""The handler registry validates task types and handler options up front."""

from __future__ import annotations

import pytest

from listener.errors import ConfigError
from listener.models import Task
from listener.registry import Registry, handler, validate_task_type


@pytest.mark.parametrize(
    "task_type",
    ["send_email", "generate_care_plan", "a", "billing.invoice:v2", "x-y_z.1", "9lives"],
)
def test_valid_task_types_are_accepted(task_type: str) -> None:
    assert validate_task_type(task_type) == task_type


@pytest.mark.parametrize(
    ("task_type", "problem"),
    [
        ("", "must not be empty"),
        ("a" * 129, "longer than 128"),
        ("send email", "characters outside"),
        ("-leading-dash", "characters outside"),
        (".hidden", "characters outside"),
        ("semi;colon", "characters outside"),
        ("quote'd", "characters outside"),
        ("émail", "characters outside"),
        ("trailing_newline\n", "characters outside"),
        (42, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_invalid_task_types_are_rejected_naming_the_problem(
    task_type: object, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_task_type(task_type)


def test_longest_allowed_type_is_128_characters() -> None:
    assert validate_task_type("a" * 128) == "a" * 128


def test_handler_registers_the_function_under_its_type() -> None:
    registry = Registry()

    @handler("send_email", timeout_s=5, max_attempts=3, registry=registry)
    async def send_email(task: Task) -> None:
        return None

    spec = registry.get("send_email")
    assert spec is not None
    assert spec.func is send_email
    assert spec.is_async is True
    assert (spec.options.timeout_s, spec.options.max_attempts) == (5, 3)
    assert registry.types() == ["send_email"]
    assert len(registry) == 1


def test_sync_handler_is_registered_as_not_async() -> None:
    registry = Registry()

    @handler("resize", registry=registry)
    def resize(task: Task) -> None:
        return None

    spec = registry.get("resize")
    assert spec is not None
    assert spec.is_async is False


def test_two_handlers_for_one_type_are_a_config_error() -> None:
    registry = Registry()

    @handler("dup", registry=registry)
    def first(task: Task) -> None:
        return None

    with pytest.raises(ConfigError, match="two handlers for task type 'dup'"):

        @handler("dup", registry=registry)
        def second(task: Task) -> None:
            return None


def test_registering_the_same_function_twice_is_harmless() -> None:
    registry = Registry()

    def same(task: Task) -> None:
        return None

    handler("again", registry=registry)(same)
    handler("again", registry=registry)(same)
    assert registry.types() == ["again"]


def test_handler_with_an_invalid_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="characters outside"):
        handler("no spaces allowed", registry=Registry())


def test_transactional_handler_must_be_async() -> None:
    with pytest.raises(ConfigError, match="transactional handlers must be async"):

        @handler("tx", transactional=True, registry=Registry())
        def sync_tx(task: Task) -> None:
            return None


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"backoff_base_s": -1.0}, "backoff_base_s must be > 0"),
        ({"backoff_max_s": 0.0}, "backoff_max_s must be > 0"),
        ({"max_attempts": 0}, "max_attempts must be between 1 and 1000"),
        ({"max_attempts": 1001}, "max_attempts must be between 1 and 1000"),
    ],
)
def test_handler_options_out_of_range_are_config_errors(
    options: dict[str, float], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        handler("opts", registry=Registry(), **options)  # type: ignore[arg-type]


def test_handler_given_its_own_empty_registry_leaves_the_default_registry_alone() -> None:
    from listener.registry import default_registry

    before = default_registry.types()
    handler("only_in_mine", registry=Registry())(lambda task: None)
    assert default_registry.types() == before
