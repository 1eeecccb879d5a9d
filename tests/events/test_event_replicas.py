"""Two replicas on one PostgreSQL database: writers commit through both at
once (so event ids commit out of order), and a follower that moves from one
replica to the other mid-stream sees every event exactly once, in cursor
order."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from conftest import Running, race
from engine_helpers import complete, create_workflow, job, must_claim, start_run, uid
from events_helpers import list_all, type_name

from trellis.v1 import events_pb2, events_pb2_grpc

RUNS_PER_WRITER = 8
WRITERS = 4
# A one-job run's events: created, queued, leased, started, succeeded, finished.
PER_RUN = 6


def test_a_follower_switching_replicas_sees_every_event_once_in_order(
    start_server: Callable[..., Running], database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    replicas = [start_server(rest_enabled=False), start_server(rest_enabled=False)]
    label = uid("replicated")
    wf = create_workflow(replicas[0], [job("only", labels=[label])])
    expected = 1 + WRITERS * RUNS_PER_WRITER * PER_RUN
    flt = events_pb2.EventFilter(workflow_id=wf)

    got: list[events_pb2.Event] = []
    halfway = threading.Event()
    first = events_pb2_grpc.EventServiceStub(replicas[0].channel).StreamEvents(
        events_pb2.StreamEventsRequest(filter=flt), timeout=120
    )

    def follow_first() -> None:
        for event in first:
            got.append(event)
            if len(got) >= expected // 2:
                halfway.set()
                first.cancel()
                return

    follower = threading.Thread(target=follow_first)
    follower.start()

    def write(i: int) -> None:
        server = replicas[i % 2]
        for _ in range(RUNS_PER_WRITER):
            start_run(server, wf)
            complete(server, must_claim(server, uid("w"), [label]).lease.lease_id)

    race(WRITERS, write)
    follower.join(timeout=120)
    assert halfway.is_set(), f"the first replica streamed only {len(got)} events"

    second = events_pb2_grpc.EventServiceStub(replicas[1].channel).StreamEvents(
        events_pb2.StreamEventsRequest(after_cursor=got[-1].cursor, filter=flt), timeout=120
    )
    try:
        for event in second:
            got.append(event)
            if len(got) == expected:
                break
    finally:
        second.cancel()

    cursors = [e.cursor for e in got]
    assert len(set(cursors)) == len(cursors), "an event was streamed twice"
    assert cursors == sorted(cursors)
    assert got == list_all(replicas[0].channel, workflow_id=wf)
    assert got == list_all(replicas[1].channel, workflow_id=wf)
    per_run: dict[str, list[str]] = {}
    for e in got[1:]:
        per_run.setdefault(e.run_id, []).append(type_name(e))
    assert len(per_run) == WRITERS * RUNS_PER_WRITER
    assert set(map(tuple, per_run.values())) == {
        (
            "RUN_CREATED",
            "JOB_QUEUED",
            "JOB_LEASED",
            "JOB_STARTED",
            "JOB_SUCCEEDED",
            "RUN_FINISHED",
        )
    }
