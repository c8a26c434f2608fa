"""A handler registered into a private, empty Registry stays out of the default one."""

from __future__ import annotations

from listener.registry import Registry, default_registry, handler


def test_handler_with_an_empty_private_registry_does_not_touch_the_default() -> None:
    private = Registry()

    @handler("isolation_check_type", registry=private)
    async def isolated(task: object) -> None:
        return None

    assert private.types() == ["isolation_check_type"]
    assert default_registry.get("isolation_check_type") is None
