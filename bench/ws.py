"""Events per second through the event log to a WebSocket client, beside the
gRPC StreamEvents stream that the socket relays, on SQLite and PostgreSQL.

- replay: N events are written first (one-job runs started with
  ``BatchRunWorkflows`` of 100, no worker connected); then one client reads
  them all from the start of the log, filtered to the workflow: over
  ``GET /ws`` (websockets' sync client), and, alternately, over
  ``EventService/StreamEvents`` itself (the reference: the socket adds the
  bridge's hop, the JSON rendering and the framing to it). Timed from just
  before connecting to the last event's arrival.
- live: both clients follow (``cursor=now``) at once while runs are started
  as fast as one client thread can batch them; timed from the first start to
  the last event's arrival at each client (the production's own time is in
  the note: neither can be faster).

Every client is checked to have received exactly the log's events, in order.

    python bench/ws.py [--events 20000] [--repeats 2] [--backend both]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

import grpc
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
    server,
    short_id,
    stub,
    workdir,
)
from websockets.sync.client import connect

BENCH = "ws"
DEFAULT_EVENTS = 20_000
DEFAULT_REPEATS = 2
BATCH = 100
CALL_TIMEOUT = 120.0


def _start_runs(channel: grpc.Channel, workflow_id: str, runs: int) -> None:
    from trellis.v1 import workflows_pb2, workflows_pb2_grpc

    workflows = stub(workflows_pb2_grpc.WorkflowServiceStub, channel)
    for first in range(0, runs, BATCH):
        requests = [
            workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id)
            for _ in range(min(BATCH, runs - first))
        ]
        workflows.BatchRunWorkflows(
            workflows_pb2.BatchRunWorkflowsRequest(requests=requests), timeout=CALL_TIMEOUT
        )


def _log_cursors(channel: grpc.Channel, workflow_id: str) -> list[str]:
    from trellis.v1 import events_pb2, events_pb2_grpc

    events = stub(events_pb2_grpc.EventServiceStub, channel)
    cursors: list[str] = []
    cursor = ""
    while True:
        page = events.ListEvents(
            events_pb2.ListEventsRequest(
                after_cursor=cursor,
                filter=events_pb2.EventFilter(workflow_id=workflow_id),
                page_size=1000,
            ),
            timeout=CALL_TIMEOUT,
        )
        cursors.extend(e.cursor for e in page.events)
        if not page.events:
            return cursors
        cursor = page.next_cursor


def _wait_log(channel: grpc.Channel, workflow_id: str, count: int) -> list[str]:
    """The workflow's cursors, once the log shows at least ``count`` of them."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while True:
        cursors = _log_cursors(channel, workflow_id)
        if len(cursors) >= count:
            return cursors
        if time.monotonic() > deadline:
            raise TimeoutError(f"the log shows {len(cursors)} of {count} events")
        time.sleep(0.05)


def _read_ws(url: str, token: str, count: int, opened: threading.Event | None = None) -> Any:
    """(seconds from just before connecting to the last event, its arrival on the
    perf_counter clock, the cursors)."""
    t0 = time.perf_counter()
    cursors: list[str] = []
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None) as ws:
        if opened is not None:
            opened.set()
        while len(cursors) < count:
            message = ws.recv(timeout=CALL_TIMEOUT)
            cursors.append(json.loads(message)["metadata"]["cursor"])
    done = time.perf_counter()
    return done - t0, done, cursors


def _read_grpc(
    channel: grpc.Channel, workflow_id: str, after: str, count: int, opened: threading.Event | None
) -> Any:
    from trellis.v1 import events_pb2, events_pb2_grpc

    t0 = time.perf_counter()
    cursors: list[str] = []
    call = stub(events_pb2_grpc.EventServiceStub, channel).StreamEvents(
        events_pb2.StreamEventsRequest(
            after_cursor=after, filter=events_pb2.EventFilter(workflow_id=workflow_id)
        ),
        timeout=CALL_TIMEOUT,
    )
    try:
        call.initial_metadata()  # the stream is open: what commits next reaches it
        if opened is not None:
            opened.set()
        for event in call:
            cursors.append(event.cursor)
            if len(cursors) == count:
                break
    finally:
        call.cancel()
    done = time.perf_counter()
    return done - t0, done, cursors


def measure(backend: Backend, *, events: int, repeats: int) -> list[Figure]:
    with workdir() as wd, database(backend, wd) as url, server(url, wd) as srv:
        channel = srv.channel
        base = f"ws://127.0.0.1:{srv.rest_port}/ws"

        # --- replay
        wf_id = f"ws-{short_id()}"
        create_workflow(channel, noop_workflow(1, name="ws"), wf_id)
        # How many events one start writes: in its one transaction, so they
        # become readable together (on PostgreSQL a little after the commit).
        _start_runs(channel, wf_id, 1)
        base_count = len(_wait_log(channel, wf_id, 2))
        per_run = base_count - 1  # less the workflow's creation
        runs = max(1, events // per_run)
        log(f"{BENCH}/{backend}: writing {runs} runs ({per_run} events each)")
        _start_runs(channel, wf_id, runs)
        expected = _wait_log(channel, wf_id, base_count + runs * per_run)
        n = len(expected)
        ws_rates: list[float] = []
        grpc_rates: list[float] = []
        for repeat in range(repeats):
            log(f"{BENCH}/{backend}: replay {repeat + 1}/{repeats}: {n} events, socket and stream")
            secs, _, got = _read_ws(f"{base}?workflow_id={wf_id}", srv.token, n)
            assert got == expected, "the socket's replay differs from the log"
            ws_rates.append(n / secs)
            secs, _, got = _read_grpc(channel, wf_id, "", n, None)
            assert got == expected, "the stream's replay differs from the log"
            grpc_rates.append(n / secs)

        # --- live
        live_wf = f"ws-live-{short_id()}"
        create_workflow(channel, noop_workflow(1, name="ws-live"), live_wf)
        live_events = runs * per_run
        already = len(_wait_log(channel, live_wf, 1))  # its creation
        results: dict[str, Any] = {}
        opened = [threading.Event(), threading.Event()]

        def ws_client() -> None:
            results["ws"] = _read_ws(
                f"{base}?workflow_id={live_wf}&cursor=now", srv.token, live_events, opened[0]
            )

        def grpc_client() -> None:
            results["grpc"] = _read_grpc(channel, live_wf, "now", live_events, opened[1])

        threads = [threading.Thread(target=ws_client), threading.Thread(target=grpc_client)]
        for thread in threads:
            thread.start()
        for event in opened:
            if not event.wait(60):
                raise TimeoutError("a live client did not open")
        log(f"{BENCH}/{backend}: live: {runs} runs while both clients follow")
        t0 = time.perf_counter()
        _start_runs(channel, live_wf, runs)
        produced = time.perf_counter() - t0
        for thread in threads:
            thread.join(CALL_TIMEOUT)
        live_expected = _wait_log(channel, live_wf, already + live_events)[already:]
        for name in ("ws", "grpc"):
            assert results[name][2] == live_expected, f"the live {name} client missed events"

    best_ws, best_grpc = max(ws_rates), max(grpc_rates)
    # From the first start to each client's last event.
    live_ws = live_events / (results["ws"][1] - t0)
    live_grpc = live_events / (results["grpc"][1] - t0)
    log(
        f"{BENCH}/{backend}: replay {best_ws:.0f} ev/s socket, {best_grpc:.0f} stream; "
        f"live {live_ws:.0f} / {live_grpc:.0f} (produced in {produced:.1f} s)"
    )
    note = f"{n} events, best of {repeats}"
    return [
        Figure(BENCH, backend, "replay, WebSocket", best_ws, "events/s", note=note),
        Figure(BENCH, backend, "replay, StreamEvents (reference)", best_grpc, "events/s"),
        Figure(BENCH, backend, "replay, socket : stream", best_ws / best_grpc, "ratio"),
        Figure(
            BENCH,
            backend,
            "live, WebSocket",
            live_ws,
            "events/s",
            note=f"{live_events} events while runs start; production took {produced:.1f} s",
        ),
        Figure(BENCH, backend, "live, StreamEvents (reference)", live_grpc, "events/s"),
    ]


def run(
    backends: list[Backend], *, events: int = DEFAULT_EVENTS, repeats: int = DEFAULT_REPEATS
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(measure(backend, events=events, repeats=repeats))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    started = time.monotonic()
    figures = run(backends_of(args.backend), events=args.events, repeats=args.repeats)
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
