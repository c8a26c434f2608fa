"""The compose file's `ui` service: the dashboard, after the migration, on loopback."""

from __future__ import annotations

from typing import Any

from tests.deploy.test_container_files import compose  # noqa: F401 - the fixture


def test_ui_service_serves_the_dashboard_on_loopback_after_the_migration(
    compose: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    ui = compose["services"]["ui"]
    assert ui["image"] == compose["services"]["worker"]["image"]
    assert ui["command"][:3] == ["ui", "--host", "0.0.0.0"]  # noqa: S104 - in its container
    assert ui["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    (port,) = ui["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "8089", 8089)
    assert ui["healthcheck"]["test"] == ["CMD", "python3", "-m", "listener.ui.healthcheck"]
    assert (
        ui["environment"]["DATABASE_URL"]
        == compose["services"]["worker"]["environment"]["DATABASE_URL"]
    )
    assert "LISTENER_UI_TOKEN" in ui["environment"]
