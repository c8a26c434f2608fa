"""handlers.llm against real HTTP servers on loopback: what it sends, and what it refuses."""

from __future__ import annotations

import time

import pytest

from handlers.llm import LlmUnavailableError, chat
from handlers.settings import llm_settings
from listener import PermanentError
from listener.errors import ConfigError
from tests.integration.llm_support import Reply, chat_server, completion, point_at

MESSAGES = [{"role": "user", "content": "Transcript: the patient sleeps badly."}]
SECRET = "the patient sleeps badly"
API_KEY = "local-key-5f3a9c1e77"  # no provider prefix: only the client can know it is the key


def ask() -> str:
    return chat(llm_settings(), MESSAGES, SECRET)


def test_max_tokens_is_sent_and_follows_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server)
        ask()
        monkeypatch.setenv("LLM_MAX_TOKENS", "256")
        ask()
    assert [r["json"]["max_tokens"] for r in server.requests] == [4096, 256]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_error_and_the_key_never_reaches_the_other_host(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    with chat_server() as elsewhere:
        moved = Reply(status=status, body={}, headers={"Location": f"{elsewhere.base_url}/x"})
        with chat_server(moved) as server:
            point_at(monkeypatch, server)
            with pytest.raises(ConfigError, match=f"answered {status} \\(a redirect\\)"):
                ask()
    assert elsewhere.requests == []


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_an_answer_over_the_size_bound_is_refused_without_reading_it_all(
    monkeypatch: pytest.MonkeyPatch, length: bool
) -> None:
    huge = Reply(body=completion("x" * 3_000_000), content_length=length)
    with chat_server(huge) as server:
        point_at(monkeypatch, server, LLM_MAX_RESPONSE_BYTES="100000")
        with pytest.raises(LlmUnavailableError, match="more than LLM_MAX_RESPONSE_BYTES=100000"):
            ask()


def test_a_server_dripping_its_answer_hits_the_total_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each byte comes well within the per-read timeout; only a total deadline ends it.
    drip = Reply(body=completion("a plan that takes its time"), drip_s=0.05)
    with chat_server(drip) as server:
        point_at(monkeypatch, server, LLM_TIMEOUT_S="5", LLM_DEADLINE_S="0.5")
        started = time.monotonic()
        with pytest.raises(
            LlmUnavailableError, match=r"did not answer within LLM_DEADLINE_S=0\.5s"
        ):
            ask()
    assert time.monotonic() - started < 3


def test_an_error_that_echoes_the_api_key_leaves_it_out(monkeypatch: pytest.MonkeyPatch) -> None:
    echo = Reply(status=401, body={"error": {"message": f"invalid key {API_KEY[:14]}…"}})
    with chat_server(echo) as server:
        point_at(monkeypatch, server, LLM_API_KEY=API_KEY)
        with pytest.raises(PermanentError) as err:
            ask()
    assert str(err.value) == f"{server.base_url} answered 401"


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.7:8000/v1", "http://llm.internal/v1", "http://[fd00::1]:11434/v1"],
)
def test_plain_http_to_another_host_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server, LLM_BASE_URL=url)
        with pytest.raises(ConfigError, match="plain http to another host"):
            llm_settings()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:11434/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1",
     "https://api.openai.com/v1"],
)  # fmt: skip
def test_https_or_loopback_is_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server, LLM_BASE_URL=url)
        assert llm_settings().base_url == url


def test_plain_http_elsewhere_is_accepted_when_allowed_explicitly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server, LLM_BASE_URL="http://ollama:11434/v1")
        monkeypatch.setenv("LLM_ALLOW_PLAIN_HTTP", "1")
        assert llm_settings().base_url == "http://ollama:11434/v1"


def test_credentials_in_the_base_url_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with chat_server() as server:
        point_at(monkeypatch, server, LLM_BASE_URL="https://user:pw@api.example.com/v1")
        with pytest.raises(ConfigError, match="must not hold credentials"):
            llm_settings()
