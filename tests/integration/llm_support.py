"""A real HTTP server on loopback that speaks the chat-completions protocol."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drip_s: float = 0.0  # > 0: send the body one byte at a time, this far apart
    content_length: bool = True  # False: no Content-Length, the body ends at close


def completion(content: str, model: str = "test-model") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
    }


@dataclass
class ChatServer:
    """Replies are taken in order; once one is left it repeats. Requests are recorded."""

    replies: list[Reply] = field(default_factory=lambda: [Reply(body=completion("## Plan"))])
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _handler_class(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self._answer(json.loads(self.rfile.read(length) or b"null"))

        def do_GET(self) -> None:  # what a client following a redirect sends
            self._answer(None)

        def _answer(self, body: Any) -> None:
            reply = server.next_reply(
                {"method": self.command, "path": self.path, "headers": dict(self.headers),
                 "json": body}
            )  # fmt: skip
            if reply.delay_s:
                server._stop.wait(reply.delay_s)  # a slow model; ends early on shutdown
            raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            if reply.content_length:
                self.send_header("Content-Length", str(len(raw)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may have timed out and gone
                if not reply.drip_s:
                    self.wfile.write(raw)
                    return
                for i in range(len(raw)):
                    if server._stop.wait(reply.drip_s):
                        return
                    self.wfile.write(raw[i : i + 1])
                    self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on what it recorded."""

    return Handler


@contextlib.contextmanager
def chat_server(*replies: Reply) -> Iterator[ChatServer]:
    state = ChatServer(replies=list(replies)) if replies else ChatServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(state))
    httpd.daemon_threads = True
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state._stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def point_at(monkeypatch: pytest.MonkeyPatch, server: ChatServer, **env: str) -> None:
    """Set the LLM_* and CARE_PLAN_* environment for ``server``."""
    for name in ("LLM_MAX_RETRY_AFTER_S", "CARE_PLAN_LINK_PATH", "CARE_PLAN_EMAIL_SUBJECT",
                 "CARE_PLAN_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    settings = {
        "LLM_BASE_URL": server.base_url,
        "LLM_MODEL": "test-model",
        "LLM_API_KEY": "sk-test-key",
        "LLM_TIMEOUT_S": "5",
        **env,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
