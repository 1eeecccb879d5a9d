"""A webhook receiver on 127.0.0.1 for tests, and an independent check of
the signatures Trellis puts on what it sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    host: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


# (the request, how many came before it) -> (status, body)
Answer = Callable[[Received, int], tuple[int, bytes]]


def always(status: int = 200, body: bytes = b"ok") -> Answer:
    return lambda _request, _n: (status, body)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this the body
    # waits for the ACK of the headers (Nagle), which the client delays.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        server = self.server
        assert isinstance(server, Receiver)
        length = int(self.headers.get("content-length", "0"))
        got = Received(
            self.headers.get("host", ""),
            self.path,
            {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length),
        )
        with server.lock:
            n = len(server.requests)
            server.requests.append(got)
            server.arrived.notify_all()
        server.release.wait(30)
        status, body = server.answer(got, n)
        self.send_response(status)
        for name, value in server.extra_headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Receiver(http.server.ThreadingHTTPServer):
    """Records every POST; ``answer`` decides the reply. Clearing ``release``
    holds replies back until it is set again."""

    daemon_threads = True

    def __init__(self, answer: Answer | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.answer: Answer = answer or always()
        self.extra_headers: list[tuple[str, str]] = []
        self.release = threading.Event()
        self.release.set()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A sender that went away mid-answer (a killed server, a timeout) is
        # part of the tests, not a failure of the receiver.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """The first ``count`` requests, once they have arrived."""
        with self.arrived:
            ok = self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            assert ok, f"{len(self.requests)} of {count} requests within {timeout} s"
            return list(self.requests)


@contextmanager
def receiving(answer: Answer | None = None) -> Iterator[Receiver]:
    server = Receiver(answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


def key_of(secret: str) -> bytes:
    """The HMAC key of a secret, as the README documents it."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def verify(secret: str, request: Received) -> dict[str, Any]:
    """Checks both signatures from scratch (Standard Webhooks: HMAC-SHA256 of
    "id.timestamp.body", base64, after "v1,"; the payload's sha256= over its
    canonical JSON without the field); returns the payload."""
    key = key_of(secret)
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    expected = base64.b64encode(hmac.new(key, signed + request.body, hashlib.sha256).digest())
    versions = request.headers["webhook-signature"].split(" ")
    assert f"v1,{expected.decode()}" in versions, versions
    payload: dict[str, Any] = json.loads(request.body)
    unsigned = {k: v for k, v in payload.items() if k != "signature"}
    canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()
    assert payload["signature"] == f"sha256={digest}"
    return payload
