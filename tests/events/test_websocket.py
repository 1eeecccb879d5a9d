"""The WebSocket ``GET /ws`` against the real server and REST bridge, with a real
WebSocket client (``websockets``): auth by header and by query, refusals before
the upgrade, a run's events in log order, resuming with the last cursor, the
per-organization limit, heartbeat pings, slow clients and shutdown.

Every event received is checked against ``EventService/ListEvents``, the log
itself. Reads block with timeouts; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import ROOT, Running, wait_until
from rest_helpers import Rest, rest, uid
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from trellis.v1 import events_pb2, events_pb2_grpc

TIMEOUT = 20.0
ONE_JOB = [{"id": "job", "command": "true"}]
EVENT_KEYS = {"event_type", "timestamp", "data", "metadata"}


def ws_url(server: Running, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.server.rest_port}/ws{'?' + query if query else ''}"


def open_ws(server: Running, query: str = "", *, token: str | None = None) -> ClientConnection:
    """A socket authorized by the Authorization header (the admin's token by default)."""
    headers = {"Authorization": f"Bearer {token or server.token}"}
    return connect(ws_url(server, query), additional_headers=headers, open_timeout=TIMEOUT)


def refusal(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """The HTTP status and JSON body of a handshake the server refuses."""
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers=headers or {}, open_timeout=TIMEOUT)
    response: Response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(bytes(response.body or b""))


def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next event, checked for the documented shape."""
    message = ws.recv(timeout=TIMEOUT)
    assert isinstance(message, str)
    event: dict[str, Any] = json.loads(message)
    assert set(event) == EVENT_KEYS, event
    assert isinstance(event["data"], dict)
    assert isinstance(event["metadata"]["cursor"], str) and event["metadata"]["cursor"]
    stamp = event["timestamp"]
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp).utcoffset() is not None
    return event


def receive_until(ws: ClientConnection, event_type: str) -> list[dict[str, Any]]:
    """Events up to and including the first of ``event_type``."""
    got = [receive(ws)]
    while got[-1]["event_type"] != event_type:
        got.append(receive(ws))
    return got


def logged(server: Running, **flt: str) -> list[events_pb2.Event]:
    """Every event of the log that matches the filter, oldest first (ListEvents)."""
    stub = events_pb2_grpc.EventServiceStub(server.channel)
    found: list[events_pb2.Event] = []
    cursor = ""
    while True:
        page = stub.ListEvents(
            events_pb2.ListEventsRequest(
                after_cursor=cursor, filter=events_pb2.EventFilter(**flt), page_size=1000
            ),
            timeout=TIMEOUT,
        )
        found.extend(page.events)
        if not page.next_cursor or page.next_cursor == cursor:
            return found
        cursor = page.next_cursor


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["metadata"]["cursor"], e["event_type"]) for e in events]


def log_summary(events: list[events_pb2.Event]) -> list[tuple[str, str]]:
    name = events_pb2.EventType.Name
    return [(e.cursor, name(e.type).removeprefix("EVENT_TYPE_").lower()) for e in events]


def finish_one_job(client: Rest) -> None:
    """Claims the queued job and completes it."""
    client.complete(client.must_claim()["lease"]["lease_id"])


# ------------------------------------------------------------------------- streams


def test_header_auth_streams_a_workflows_events_in_log_order(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(ONE_JOB)["id"]
    with open_ws(server, f"workflow_id={workflow_id}") as ws:
        # The replay: the workflow's creation, before the socket opened.
        first = receive(ws)
        assert first["event_type"] == "workflow_created"
        assert first["metadata"]["workflow_id"] == workflow_id
        # Live: a run, from start to end.
        run_id = client.run(workflow_id)["run_id"]
        finish_one_job(client)
        got = [first, *receive_until(ws, "run_finished")]
    assert summary(got) == log_summary(logged(server, workflow_id=workflow_id))
    types = [e["event_type"] for e in got]
    for expected in ("run_created", "job_queued", "job_leased", "job_succeeded"):
        assert expected in types
    assert types.index("run_created") < types.index("job_succeeded") < types.index("run_finished")
    for event in got[1:]:
        assert event["metadata"]["run_id"] == run_id
        assert event["metadata"]["workflow_id"] == workflow_id
    succeeded = next(e for e in got if e["event_type"] == "job_succeeded")
    assert succeeded["metadata"]["job_id"] == "job"


def test_query_token_and_type_filter(server: Running) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(ONE_JOB)["id"]
    run_id = client.run(workflow_id)["run_id"]
    query = f"token={server.token}&run_id={run_id}&types=job_succeeded,RUN_FINISHED"
    with connect(ws_url(server, query), open_timeout=TIMEOUT) as ws:
        finish_one_job(client)
        got = receive_until(ws, "run_finished")
    assert [e["event_type"] for e in got] == ["job_succeeded", "run_finished"]
    wanted = [events_pb2.EVENT_TYPE_JOB_SUCCEEDED, events_pb2.EVENT_TYPE_RUN_FINISHED]
    assert summary(got) == log_summary(logged(server, run_id=run_id, types=wanted))  # type: ignore[arg-type]


def test_reconnecting_with_the_last_cursor_resumes_without_gap_or_duplicate(
    server: Running,
) -> None:
    client = rest(server)
    workflow_id = client.create_workflow(
        [*ONE_JOB, {"id": "next", "command": "true", "depends_on": ["job"]}]
    )["id"]
    run_id = client.run(workflow_id)["run_id"]
    query = f"run_id={run_id}"
    with open_ws(server, query) as ws:
        seen = [receive(ws), receive(ws)]
    # Events committed while the client is away come on reconnect, then live ones.
    finish_one_job(client)
    with open_ws(server, f"{query}&cursor={seen[-1]['metadata']['cursor']}") as ws:
        seen.append(receive(ws))
        finish_one_job(client)
        seen += receive_until(ws, "run_finished")
    cursors = [e["metadata"]["cursor"] for e in seen]
    assert len(set(cursors)) == len(cursors)
    assert summary(seen) == log_summary(logged(server, run_id=run_id))


# ------------------------------------------------------------------------ refusals


def test_refused_credentials_and_bad_requests_are_json_before_any_upgrade(
    server: Running,
) -> None:
    status, body = refusal(ws_url(server, "token=not-a-token"))
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED", body
    status, body = refusal(ws_url(server), {"Authorization": "Bearer trl_nope"})
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED", body
    status, body = refusal(ws_url(server))
    assert status == 401, body

    auth = {"Authorization": f"Bearer {server.token}"}
    status, body = refusal(ws_url(server, "types=job_succeeded,nope"), auth)
    assert status == 400 and "types" in body["error"]["message"], body
    status, body = refusal(ws_url(server, "cursor=not-a-cursor"), auth)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT", body

    # A plain request is no handshake.
    connection = http.client.HTTPConnection("127.0.0.1", server.server.rest_port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/ws", headers=auth)
        response = connection.getresponse()
        reply = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 400
    assert "not a WebSocket handshake" in reply["error"]["message"]


def test_sockets_per_organization_are_limited_and_freed_on_close(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(ws_max_per_org=2)
    auth = {"Authorization": f"Bearer {server.token}"}
    with open_ws(server), contextlib.ExitStack() as stack:
        with open_ws(server):
            status, body = refusal(ws_url(server), auth)
            assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED", body
            assert "limit 2" in body["error"]["message"]
            # Ordinary requests are still served.
            assert rest(server).ok(rest(server).get("/healthz")) == {"status": "ok"}

        def reopened() -> ClientConnection | None:
            try:
                return stack.enter_context(open_ws(server))
            except InvalidStatus as refused:
                assert refused.response.status_code == 429
                return None

        wait_until(reopened)
        assert refusal(ws_url(server), auth)[0] == 429


def test_stopping_the_server_closes_sockets_with_going_away(
    start_server: Callable[..., Running],
) -> None:
    server = start_server()
    with open_ws(server, "cursor=now") as ws:
        server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CloseCode.GOING_AWAY


# ------------------------------------------------------ heartbeat and slow clients


class RawClient:
    """A WebSocket client that reads frames itself and sends nothing unasked:
    it answers no ping, and reads only when told to."""

    def __init__(self, server: Running, query: str, *, receive_buffer: int = 0) -> None:
        self.protocol = ClientProtocol(parse_uri(ws_url(server, query)))
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", server.server.rest_port))
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {server.token}"
        self.protocol.send_request(request)
        self.sock.sendall(b"".join(self.protocol.data_to_send()))
        first = next(self._events())
        assert isinstance(first, Response) and first.status_code == 101, first

    def _events(self) -> Iterator[Any]:
        while True:
            data = self.sock.recv(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            # Pongs and close replies stay unsent: this client does not answer.
            self.protocol.data_to_send()
            yield from self.protocol.events_received()
            if not data:
                return

    def frames(self) -> Iterator[Frame]:
        for event in self._events():
            if isinstance(event, Frame):
                yield event

    def close(self) -> None:
        self.sock.close()


def test_idle_sockets_are_pinged_and_closed_when_no_pong_comes(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(ws_ping_interval_secs=0.2)
    client = RawClient(server, "cursor=now")
    try:
        opcodes = [frame.opcode for frame in client.frames()]
    finally:
        client.close()
    assert Opcode.PING in opcodes
    assert opcodes[-1] == Opcode.CLOSE
    # A client that answers stays open past several intervals.
    with open_ws(server, "cursor=now") as ws:
        for _ in range(3):
            assert ws.ping().wait(TIMEOUT)


def test_a_client_that_stops_reading_is_closed(start_server: Callable[..., Running]) -> None:
    # One socket per organization: a new one is admitted once the stalled one is gone.
    server = start_server(ws_max_per_org=1, ws_queue_events=2, ws_send_timeout_secs=0.5)
    client = rest(server)
    workflow_id = client.create_workflow(ONE_JOB, workflow_id=uid("slow"))["id"]
    stalled = RawClient(server, f"workflow_id={workflow_id}", receive_buffer=4096)
    requests = [{"workflow_id": workflow_id, "inputs": {}} for _ in range(100)]

    def admitted() -> ClientConnection | None:
        try:
            return open_ws(server, "cursor=now")
        except InvalidStatus as refused:
            assert refused.response.status_code == 429
            # More events than any buffer on the way holds.
            client.ok(client.post("/api/runs/batch", {"requests": requests}), 202)
            return None

    try:
        with wait_until(admitted, timeout=60):
            pass
        # What the stalled client finds when it reads: events, then the end (a
        # 1008 close frame when one still fit in, else the connection cut off).
        frames = list(stalled.frames())
        assert frames and frames[0].opcode == Opcode.TEXT
        if frames[-1].opcode == Opcode.CLOSE:
            assert frames[-1].data[:2] == CloseCode.POLICY_VIOLATION.to_bytes(2, "big")
    finally:
        stalled.close()


# -------------------------------------------------------------------------- README


def test_the_readme_example_follows_a_run_and_resumes_at_its_cursor(
    server: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## WebSocket events\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None
    code = found.group(1).replace("localhost:3000", f"127.0.0.1:{server.server.rest_port}")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the example as written
    follow: Callable[..., str] = namespace["follow"]

    client = rest(server)
    workflow_id = client.create_workflow(ONE_JOB)["id"]
    run_id = client.run(workflow_id)["run_id"]
    finish_one_job(client)
    last = follow(run_id)
    printed = capsys.readouterr().out.splitlines()
    log = logged(server, run_id=run_id)
    assert last == log[-1].cursor
    assert [line.split()[0] for line in printed] == [t for _, t in log_summary(log)]
    assert "job_succeeded job" in printed
