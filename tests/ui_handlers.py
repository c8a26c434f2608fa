"""A handler for the dashboard's browser tests, importable by `listener run --handlers`."""

from __future__ import annotations

import anyio

from listener import PermanentError, Task, handler


@handler("ui_flaky", max_attempts=1)
async def ui_flaky(task: Task) -> None:
    """Fails at once until the file named in its payload exists, then completes."""
    if not await anyio.Path(task.payload["ok_file"]).exists():
        raise PermanentError("upstream refused the request")
