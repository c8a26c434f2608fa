"""``python -m listener.healthcheck [URL]``: exit 0 if the endpoint answers 200.

For container HEALTHCHECKs: slim images have no curl, but they have Python.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from listener.http import DEFAULT_PORT


def default_url() -> str:
    port = os.environ.get("LISTENER_METRICS_PORT", str(DEFAULT_PORT))
    return f"http://127.0.0.1:{port}/healthz"


def main(argv: Sequence[str] | None = None, timeout_s: float = 3.0) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else default_url()
    if not url.startswith(("http://", "https://")):
        print(f"healthcheck: {url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - scheme checked
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url} unreachable: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
