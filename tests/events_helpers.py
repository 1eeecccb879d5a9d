"""Helpers for the event log's tests: reading it over gRPC, and a small run
driven through every state a job can take on its way."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from conftest import Running, wait_until
from engine_helpers import (
    RPC_TIMEOUT,
    complete,
    create_workflow,
    fail,
    job,
    must_claim,
    no_delay,
    start_run,
    wait_run_state,
)

from trellis.v1 import events_pb2, events_pb2_grpc, runs_pb2


def stub(channel: grpc.Channel) -> events_pb2_grpc.EventServiceStub:
    return events_pb2_grpc.EventServiceStub(channel)


def type_name(event: events_pb2.Event) -> str:
    return str(events_pb2.EventType.Name(event.type)).removeprefix("EVENT_TYPE_")


def types_of(name: str) -> int:
    return int(events_pb2.EventType.Value("EVENT_TYPE_" + name))


def list_all(
    channel: grpc.Channel,
    *,
    after: str = "",
    run_id: str = "",
    workflow_id: str = "",
    job_id: str = "",
    types: Iterable[str] = (),
    page_size: int = 0,
) -> list[events_pb2.Event]:
    """Every event readable now that matches, page by page."""
    flt = events_pb2.EventFilter(
        run_id=run_id,
        workflow_id=workflow_id,
        job_id=job_id,
        types=[types_of(t) for t in types],
    )
    found: list[events_pb2.Event] = []
    while True:
        page = stub(channel).ListEvents(
            events_pb2.ListEventsRequest(after_cursor=after, filter=flt, page_size=page_size),
            timeout=RPC_TIMEOUT,
        )
        found.extend(page.events)
        if not page.events or page.next_cursor == after:
            return found
        after = page.next_cursor


def stream(
    channel: grpc.Channel, *, after: str = "", run_id: str = "", timeout: float = RPC_TIMEOUT
) -> grpc.Future:
    """A StreamEvents call (iterate it; cancel it when done)."""
    call = stub(channel).StreamEvents(
        events_pb2.StreamEventsRequest(
            after_cursor=after, filter=events_pb2.EventFilter(run_id=run_id)
        ),
        timeout=timeout,
    )
    return call  # type: ignore[no-any-return]


# What the small run below records, in order: (type, job, attempt).
SMALL_RUN = [
    ("RUN_CREATED", "", 0),
    ("JOB_QUEUED", "a", 0),
    ("JOB_LEASED", "a", 0),
    ("JOB_STARTED", "a", 0),
    ("JOB_SUCCEEDED", "a", 0),
    ("JOB_QUEUED", "b", 0),
    ("JOB_LEASED", "b", 0),
    ("JOB_STARTED", "b", 0),
    ("JOB_RETRYING", "b", 0),
    ("JOB_LEASED", "b", 1),
    ("JOB_STARTED", "b", 1),
    ("JOB_FAILED", "b", 1),
    ("JOB_SKIPPED", "c", 0),
    ("RUN_FINISHED", "", 0),
]


def small_run(server: Running) -> tuple[str, str]:
    """Runs a -> b -> c where b fails twice (one retry) and c is skipped;
    returns (workflow id, run id) once all its events are readable (on
    PostgreSQL an event is, once every older transaction has ended)."""
    wf = create_workflow(
        server,
        [job("a"), job("b", needs=["a"], retries=1, backoff=no_delay()), job("c", needs=["b"])],
    )
    run_id = start_run(server, wf)
    complete(server, must_claim(server, "w1").lease.lease_id)
    fail(server, must_claim(server, "w1").lease.lease_id, "first", retryable=True)
    fail(server, must_claim(server, "w2").lease.lease_id, "second")
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    wait_until(lambda: len(list_all(server.channel, run_id=run_id)) == len(SMALL_RUN))
    return wf, run_id


def shape(events: Iterable[events_pb2.Event]) -> list[tuple[str, str, int]]:
    return [(type_name(e), e.job_id, e.attempt) for e in events]
