"""`python -m listener.ui.healthcheck`: exit 0 if the dashboard answers /healthz.

The compose `ui` service's health check (the image's own HEALTHCHECK probes the
worker). The port is LISTENER_UI_PORT, default 8089.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = int(os.environ.get("LISTENER_UI_PORT", "8089"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"dashboard not healthy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
