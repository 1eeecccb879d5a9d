"""Webhook delivery: events/s from the event log to a local receiver.

A receiver (``http.server``, HTTP/1.1 keep-alive, answering 200 at once)
runs in this process. On a fresh server, a subscription to ``run.created``
is made disabled, N runs are started (N events), then the subscription is
enabled and the clock runs until the receiver has N requests: delivery
alone, one subscription, in order. The reference, in the same invocation:
the same receiver hit N times in a row directly by the same HTTP client
(Trellis's ``GuardedClient``, the receiver allow-listed), with bodies signed
the same way, so the gap is what the deliverer adds (reading the log,
recording each attempt in a transaction).

    python bench/webhooks.py [--events 2000] [--backend both] [--json]
"""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from datetime import UTC, datetime

from _common import (
    Backend,
    Figure,
    backends_of,
    create_workflow,
    database,
    exit_on_sigterm,
    log,
    noop_workflow,
    print_figures,
    run_workflow,
    server,
    short_id,
    stub,
    workdir,
)

from trellis.server.events import EgressPolicy, GuardedClient
from trellis.server.events._signing import new_secret, signed_request
from trellis.v1 import webhooks_pb2, webhooks_pb2_grpc

BENCH = "webhooks"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this the body
    # waits for the ACK of the headers (Nagle), which the client delays.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
        server = self.server
        assert isinstance(server, _Receiver)
        with server.done:
            server.count += 1
            server.done.notify_all()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Receiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.count = 0
        self.done = threading.Condition()

    def wait_for(self, n: int, timeout: float) -> None:
        with self.done:
            if not self.done.wait_for(lambda: self.count >= n, timeout):
                raise SystemExit(f"only {self.count} of {n} deliveries within {timeout} s")


def _reference(url: str, n: int) -> float:
    client = GuardedClient(EgressPolicy.from_allow_list("127.0.0.1/32"))
    secret = new_secret()
    payload = {"event": "run.created", "timestamp": "", "data": {"run_id": "r"}}
    try:
        started = time.perf_counter()
        for i in range(n):
            body, headers = signed_request(secret, f"msg_{i}", payload, datetime.now(UTC))
            assert client.post(url, body, headers).status_code == 200
        return n / (time.perf_counter() - started)
    finally:
        client.close()


def measure(backend: Backend, n: int) -> list[Figure]:
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    try:
        with workdir() as tmp, database(backend, tmp) as url_db:
            env = {"EGRESS_ALLOW": "127.0.0.1/32"}
            with server(url_db, tmp, extra_env=env) as srv:
                hooks = stub(webhooks_pb2_grpc.WebhookServiceStub, srv.channel)
                made = hooks.CreateWebhook(
                    webhooks_pb2.CreateWebhookRequest(
                        url=url, event_types=["run.created"], disabled=True
                    ),
                    timeout=30,
                )
                workflow_id = f"bench-{short_id()}"
                create_workflow(srv.channel, noop_workflow(1, name="webhooks"), workflow_id)
                log(f"{backend}: starting {n} runs")
                for _ in range(n):
                    run_workflow(srv.channel, workflow_id)
                log(f"{backend}: delivering")
                started = time.perf_counter()
                hooks.UpdateWebhook(
                    webhooks_pb2.UpdateWebhookRequest(webhook_id=made.webhook.id, enabled=True),
                    timeout=30,
                )
                receiver.wait_for(n, timeout=600)
                delivered = n / (time.perf_counter() - started)
        reference = _reference(url, n)
    finally:
        receiver.shutdown()
        receiver.server_close()
    return [
        Figure(BENCH, backend, "webhook deliveries/s (one subscription)", delivered, "events/s"),
        Figure(BENCH, backend, "reference: same client, same receiver", reference, "requests/s"),
        Figure(BENCH, backend, "deliveries / reference", delivered / reference * 100, "%"),
    ]


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--backend", default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures: list[Figure] = []
    for backend in backends_of(args.backend):
        figures.extend(measure(backend, args.events))
    print_figures(figures, as_json=args.json)


if __name__ == "__main__":
    main()
