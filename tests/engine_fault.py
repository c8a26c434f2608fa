"""A handlers module that injects a fault into the engine, for the exit-code test.

No real fault of the engine can be produced on purpose (each one found is fixed), so
this module makes the heartbeat loop raise a BaseException -- which no supervisor
catches -- LISTENER_TEST_FAULT_AFTER_S seconds after the worker starts.
"""

from __future__ import annotations

import os

import anyio

from listener import leases
from tests import fault_handlers  # noqa: F401 - registers the handlers

_original_run = leases.Heartbeat.run


class InjectedFault(BaseException):
    """Stands for a bug of the engine that escapes every handler of errors."""


async def _faulty_run(self: leases.Heartbeat) -> None:
    with anyio.move_on_after(float(os.environ.get("LISTENER_TEST_FAULT_AFTER_S", "1"))):
        await _original_run(self)
    raise InjectedFault("injected by tests/engine_fault.py")


leases.Heartbeat.run = _faulty_run  # type: ignore[method-assign]
