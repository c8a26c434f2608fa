"""A private registry holding the bundled handlers, for tests that run a real Worker."""

from __future__ import annotations

import handlers  # noqa: F401  (importing the package registers the bundled handlers)
from listener.registry import Registry, default_registry


def bundled(*types: str) -> Registry:
    """A registry with just ``types`` from the bundled handlers."""
    registry = Registry()
    for task_type in types:
        spec = default_registry.get(task_type)
        assert spec is not None, f"handlers did not register {task_type!r}"
        registry.register(spec)
    return registry
