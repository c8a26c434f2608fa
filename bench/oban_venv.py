"""Oban for Python (PyPI ``oban``) needs Python >= 3.12: it runs from a venv of its own.

``python -m bench.oban_venv`` creates it (``.venv-oban`` in the checkout, or
``$BENCH_OBAN_VENV``) with the first Python >= 3.12 found: ``$BENCH_OBAN_PYTHON``,
``python3.12``, ``python3.13``, then pyenv's. The project's own venv stays as it is.
A full benchmark run creates it when missing; ``--quick`` never does (it would
download from PyPI) and leaves Oban out instead, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = "oban==0.7.0"
VENV_ENV = "BENCH_OBAN_VENV"
PYTHON_ENV = "BENCH_OBAN_PYTHON"
PYENV_GLOBS = ("3.12*", "3.13*")
INSTALL_TIMEOUT_S = 600
_lock = threading.Lock()
_verdicts: dict[bool, str | None] = {}


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".venv-oban")


def oban_cli() -> Path:
    """The ``oban`` command of the venv."""
    return venv_dir() / "bin" / "oban"


def command(dsn: str, limit: int) -> list[str]:
    """``oban start`` as its docs show it; our module is imported as its cron module,
    which also keeps Oban from grepping the checkout for cron workers."""
    return [
        str(oban_cli()),
        "start",
        "--dsn",
        dsn,
        "--queues",
        f"default:{limit}",
        "--cron-modules",
        "bench.oban_workers",
    ]


def run_env() -> dict[str, str]:
    """Oban's venv has no listener: it finds bench.oban_workers through PYTHONPATH."""
    return {"PYTHONPATH": str(ROOT)}


def find_python() -> str | None:
    """An interpreter >= 3.12 to build the venv with, or None."""
    candidates = [os.environ.get(PYTHON_ENV)]
    candidates += [shutil.which("python3.12"), shutil.which("python3.13")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for pattern in PYENV_GLOBS:
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob(pattern))]
    for candidate in candidates:
        if candidate and _version_ok(candidate):
            return candidate
    return None


def _version_ok(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def create(say: Callable[[str], None]) -> Path:
    """Make the venv and install Oban into it; raises RuntimeError with one line."""
    python = find_python()
    if python is None:
        raise RuntimeError(f"no Python >= 3.12 found; set {PYTHON_ENV} to one")
    target = venv_dir()
    say(f"creating {target} with {python} and installing {REQUIREMENT} (once)")
    steps = (
        [python, "-m", "venv", "--clear", str(target)],
        [str(target / "bin" / "python"), "-m", "pip", "install", "-q", REQUIREMENT],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            lines = [x for x in done.stderr.splitlines() if x.startswith("ERROR")]
            tail = (lines or done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{' '.join(step[:3])} failed: {tail}")
    return target


def _ensure(allow_create: bool, say: Callable[[str], None]) -> str | None:
    if oban_cli().exists():
        return None
    if not allow_create:
        return (
            f"its venv ({venv_dir()}) is absent and --quick never creates it (that "
            "downloads oban from PyPI); create it with `python -m bench.oban_venv` "
            "(needs Python >= 3.12)"
        )
    try:
        create(say)
    except RuntimeError as exc:
        return f"cannot create its venv: {exc}"
    return None


def unavailable(allow_create: bool, say: Callable[[str], None]) -> str | None:
    """Why Oban cannot run here, or None once its venv is in place."""
    with _lock:  # items may ask at once (--parallel); try to create the venv once
        if allow_create not in _verdicts:
            _verdicts[allow_create] = _ensure(allow_create, say)
        return _verdicts[allow_create]


def main() -> int:
    try:
        path = create(lambda line: print(f"bench: {line}", file=sys.stderr))
    except RuntimeError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
