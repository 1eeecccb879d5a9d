"""FollowLogs as a view of the event log: a follower on one replica is woken
by the pushes through another, a follow resumes across a restart with no gap
and no duplicate chunk, and chunks whose events were pruned are still
replayed from the chunks themselves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    complete,
    create_workflow,
    job,
    must_claim,
    push_logs,
    start_run,
)
from sqlalchemy import delete

from trellis.server.core.db import Database
from trellis.server.core.models import EventRow, table
from trellis.v1 import jobs_pb2, logs_pb2

# Long enough that a follower relying on its poll, not on the event log's
# wake-ups, would not see the pushes within the stream's deadline.
NO_POLL_SECS = 3600.0


def _follow(wf: str, run_id: str, after_id: int = 0) -> logs_pb2.FollowLogsRequest:
    return logs_pb2.FollowLogsRequest(workflow_id=wf, job_id="a", run_id=run_id, after_id=after_id)


def test_a_follower_on_one_replica_sees_the_chunks_pushed_through_another(
    start_server: Callable[..., Running], database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database")
    a = start_server(rest_enabled=False, poll_interval_secs=NO_POLL_SECS)
    b = start_server(rest_enabled=False, poll_interval_secs=NO_POLL_SECS)
    wf = create_workflow(a, [job("a")])
    run_id = start_run(a, wf)
    lease_id = must_claim(a).lease.lease_id
    push_logs(a, lease_id, "one")
    stream = b.logs.FollowLogs(_follow(wf, run_id), timeout=RPC_TIMEOUT)
    try:
        assert [c.data for c in next(stream).chunks] == ["one"]
        for i, line in enumerate(["two", "three", "four"], start=1):
            push_logs(a, lease_id, line, first_sequence=i)
            assert [c.data for c in next(stream).chunks] == [line]
        complete(a, lease_id)
        rest = list(stream)
    finally:
        stream.cancel()
    assert [(m.job_finished, m.job_state) for m in rest] == [(True, jobs_pb2.JOB_STATE_SUCCEEDED)]


def test_a_follow_resumes_after_a_restart_with_no_gap_and_no_duplicate(
    start_server: Callable[..., Running],
) -> None:
    first = start_server(rest_enabled=False)
    wf = create_workflow(first, [job("a")])
    run_id = start_run(first, wf)
    lease_id = must_claim(first, ttl=120).lease.lease_id
    push_logs(first, lease_id, "one", "two")
    got: list[logs_pb2.LogChunk] = []
    stream = first.logs.FollowLogs(_follow(wf, run_id), timeout=RPC_TIMEOUT)
    try:
        got.extend(next(stream).chunks)
        push_logs(first, lease_id, "three", first_sequence=2)
        got.extend(next(stream).chunks)
    finally:
        stream.cancel()
    first.stop()

    second = start_server(rest_enabled=False)
    # Pushed while nobody follows, and a retried push of a chunk already sent.
    push_logs(second, lease_id, "four", "five", first_sequence=3)
    push_logs(second, lease_id, "five", "six", first_sequence=4)
    stream = second.logs.FollowLogs(_follow(wf, run_id, after_id=got[-1].id), timeout=RPC_TIMEOUT)
    try:
        got.extend(next(stream).chunks)
        push_logs(second, lease_id, "seven", first_sequence=6)
        got.extend(next(stream).chunks)
        complete(second, lease_id)
        rest = list(stream)
    finally:
        stream.cancel()
    assert [c.data for c in got] == ["one", "two", "three", "four", "five", "six", "seven"]
    assert [c.id for c in got] == sorted({c.id for c in got})
    assert [m.job_finished for m in rest] == [True]


def test_chunks_whose_events_were_pruned_are_still_replayed(
    start_server: Callable[..., Running], db: Database
) -> None:
    server = start_server(rest_enabled=False)
    wf = create_workflow(server, [job("a")])
    run_id = start_run(server, wf)
    lease_id = must_claim(server).lease.lease_id
    push_logs(server, lease_id, "one", "two")
    complete(server, lease_id)
    events = table(EventRow)
    with db.write() as conn:
        conn.execute(delete(events).where(events.c.run_id == run_id))
    answers = list(server.logs.FollowLogs(_follow(wf, run_id), timeout=RPC_TIMEOUT))
    assert [c.data for m in answers for c in m.chunks] == ["one", "two"]
    assert answers[-1].job_finished
    assert answers[-1].job_state == jobs_pb2.JOB_STATE_SUCCEEDED
