"""Events per second through the event log to a StreamEvents client, on SQLite
and PostgreSQL.

Events are made by ``BatchRunWorkflows`` calls of runs of a workflow of
``--jobs`` independent jobs (no worker is connected: each run writes one
RUN_CREATED and one JOB_QUEUED per job, ``1 + jobs`` events), ``--events``
of them per phase, from one client thread:

- reference: the same calls with no follower: how fast the server writes
  those events at all (the ceiling of any follower);
- live: a StreamEvents client opened at "now" (its headers received) before
  the calls; from the first call to the last event received, beside the
  reference; and the last event's delay after the last call returned;
- replay: a StreamEvents client from the start of the log reading every
  event the two phases wrote.

    python bench/events.py [--events 20000] [--jobs 50] [--backend both]
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

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

BENCH = "events"
DEFAULT_EVENTS = 20_000
DEFAULT_JOBS = 50
RUNS_PER_CALL = 20
CALL_TIMEOUT = 120.0


def _produce(channel: Any, wf_id: str, calls: int) -> float:
    """Makes ``calls`` BatchRunWorkflows calls; returns the seconds they took."""
    from trellis.v1 import workflows_pb2, workflows_pb2_grpc

    workflows = stub(workflows_pb2_grpc.WorkflowServiceStub, channel)
    batch = workflows_pb2.BatchRunWorkflowsRequest(
        requests=[workflows_pb2.RunWorkflowRequest(workflow_id=wf_id) for _ in range(RUNS_PER_CALL)]
    )
    t0 = time.perf_counter()
    for _ in range(calls):
        workflows.BatchRunWorkflows(batch, timeout=CALL_TIMEOUT)
    return time.perf_counter() - t0


class _Reader:
    """A StreamEvents client counting the events of one workflow in a thread."""

    def __init__(self, channel: Any, wf_id: str, after: str, expected: int) -> None:
        from trellis.v1 import events_pb2, events_pb2_grpc

        self.expected = expected
        self.count = 0
        self.last_at = 0.0
        self.cursors_ordered = True
        self.call = stub(events_pb2_grpc.EventServiceStub, channel).StreamEvents(
            events_pb2.StreamEventsRequest(
                after_cursor=after, filter=events_pb2.EventFilter(workflow_id=wf_id)
            ),
            timeout=600,
        )
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self.call.initial_metadata()  # the stream has read its starting point
        self.thread.start()

    def _read(self) -> None:
        last = ""
        try:
            for event in self.call:
                if event.cursor <= last:
                    self.cursors_ordered = False
                last = event.cursor
                self.count += 1
                if self.count >= self.expected:
                    self.last_at = time.perf_counter()
                    break
        finally:
            self.done.set()
            self.call.cancel()

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            self.call.cancel()
            raise TimeoutError(
                f"{BENCH}: {self.count} of {self.expected} events within {timeout} s"
            )
        if self.count < self.expected:
            raise AssertionError(f"{BENCH}: the stream ended after {self.count} events")
        if not self.cursors_ordered:
            raise AssertionError(f"{BENCH}: events arrived out of cursor order")


def measure(backend: Backend, *, events: int, jobs: int) -> list[Figure]:
    per_call = RUNS_PER_CALL * (1 + jobs)
    calls = max(1, events // per_call)
    n = calls * per_call
    with workdir() as wd, database(backend, wd) as url, server(url, wd) as srv:
        ref_wf, live_wf = f"ev-ref-{short_id()}", f"ev-live-{short_id()}"
        for wf_id in (ref_wf, live_wf):
            create_workflow(srv.channel, noop_workflow(jobs, name="events"), wf_id)
        _produce(srv.channel, ref_wf, 1)  # warm-up

        log(f"{BENCH}/{backend}: reference, {calls} calls writing {n} events, no follower")
        reference = n / _produce(srv.channel, ref_wf, calls)

        log(f"{BENCH}/{backend}: live, the same with a StreamEvents client")
        reader = _Reader(srv.channel, live_wf, "now", n)
        reader.start()
        t0 = time.perf_counter()
        written = _produce(srv.channel, live_wf, calls)
        t_end = t0 + written
        reader.wait(300)
        live = n / (reader.last_at - t0)
        lag_ms = max(0.0, reader.last_at - t_end) * 1000

        log(f"{BENCH}/{backend}: replay of the live phase's {n} events")
        replay_reader = _Reader(srv.channel, live_wf, "", n + 1)  # + WORKFLOW_CREATED
        t1 = time.perf_counter()
        replay_reader.start()
        replay_reader.wait(300)
        replay = (n + 1) / (replay_reader.last_at - t1)

    setting = f"{calls} BatchRunWorkflows({RUNS_PER_CALL}) of {jobs}-job runs, {n} events"
    log(f"{BENCH}/{backend}: ref {reference:,.0f}/s, live {live:,.0f}/s, replay {replay:,.0f}/s")
    return [
        Figure(
            BENCH, backend, "writes, no follower (reference)", reference, "events/s", "", setting
        ),
        Figure(BENCH, backend, "live: to a StreamEvents client", live, "events/s"),
        Figure(
            BENCH,
            backend,
            "  as % of the reference",
            100 * live / reference,
            "%",
            note="first call -> last event received",
        ),
        Figure(BENCH, backend, "  last event after the last call", lag_ms, "ms"),
        Figure(BENCH, backend, "replay: StreamEvents from the start", replay, "events/s"),
    ]


def run(
    backends: list[Backend], *, events: int = DEFAULT_EVENTS, jobs: int = DEFAULT_JOBS
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(measure(backend, events=events, jobs=jobs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events per phase")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="jobs per run")
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    started = time.monotonic()
    figures = run(backends_of(args.backend), events=args.events, jobs=args.jobs)
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
