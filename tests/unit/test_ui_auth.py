"""The dashboard's token rules: sessions, CSRF tokens, login throttling (no HTTP)."""

from __future__ import annotations

import pytest

from listener.errors import ConfigError
from listener.ui.auth import SESSION_MAX_AGE_S, Auth, LoginThrottle, token_from_env

TOKEN = "a-token-of-sixteen-plus"


def test_without_a_token_nothing_is_ever_accepted() -> None:
    auth = Auth(None)
    assert not auth.actions_enabled
    assert not auth.check_token("")
    assert auth.session_nonce(Auth(TOKEN).new_session()) is None


def test_a_session_cookie_is_accepted_until_it_expires() -> None:
    auth = Auth(TOKEN)
    cookie = auth.new_session(now=1_000_000)
    assert auth.session_nonce(cookie, now=1_000_000 + SESSION_MAX_AGE_S) is not None
    assert auth.session_nonce(cookie, now=1_000_001 + SESSION_MAX_AGE_S) is None
    assert auth.session_nonce(cookie, now=999_999) is None  # issued in the future


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c.replace(c.split(".")[0], str(int(c.split(".")[0]) + 60)),  # extended
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),  # signature changed
        lambda c: "x" + c,
        lambda c: c.rsplit(".", 1)[0],
    ],
)
def test_a_tampered_session_cookie_is_refused(tamper: object) -> None:
    auth = Auth(TOKEN)
    cookie = auth.new_session(now=1_000_000)
    assert auth.session_nonce(tamper(cookie), now=1_000_000) is None  # type: ignore[operator]


def test_changing_the_token_ends_every_session_and_no_cookie_holds_it() -> None:
    cookie = Auth(TOKEN).new_session()
    assert TOKEN not in cookie
    assert Auth(TOKEN + "-rotated").session_nonce(cookie) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    auth = Auth(TOKEN)
    mine, theirs = auth.new_session().split(".")[1], auth.new_session().split(".")[1]
    assert auth.check_csrf(mine, auth.csrf_token(mine))
    assert not auth.check_csrf(mine, auth.csrf_token(theirs))
    assert not auth.check_csrf(mine, "")
    assert not auth.check_csrf(None, auth.csrf_token(mine))


@pytest.mark.parametrize("value", ["short", " " + TOKEN, TOKEN + "\n"])
def test_a_short_or_padded_token_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="at least 16 characters"):
        token_from_env({"LISTENER_UI_TOKEN": value})


def test_an_empty_token_means_read_only() -> None:
    assert token_from_env({"LISTENER_UI_TOKEN": ""}) is None
    assert token_from_env({}) is None
    assert token_from_env({"LISTENER_UI_TOKEN": TOKEN}) == TOKEN


def test_logins_are_throttled_per_client_and_the_window_slides() -> None:
    throttle = LoginThrottle(limit=3, window_s=60)
    for second in range(3):
        assert throttle.allowed("a", now=second)
        throttle.failed("a", now=second)
    assert not throttle.allowed("a", now=10)
    assert throttle.allowed("b", now=10)
    assert throttle.allowed("a", now=60.5)  # the first failure aged out


def test_the_throttle_forgets_clients_rather_than_grow_without_bound() -> None:
    throttle = LoginThrottle(limit=1, window_s=60, max_clients=2)
    for client in ("a", "b", "c"):
        throttle.failed(client, now=0)
    assert len(throttle._failures) <= 2
