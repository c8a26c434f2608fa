"""`listener run`: placeholder wiring until the engine lands (issue 3)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """No engine commands yet."""
