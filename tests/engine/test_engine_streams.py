"""The streaming RPCs over real gRPC: assignments pushed within a worker's
slots, run events and logs followed live, heartbeats and log uploads over one
stream. Streams are awaited through their iterators under a deadline."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import psycopg
import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    complete,
    create_workflow,
    event_name,
    get_run,
    heartbeat,
    job,
    must_claim,
    push_logs,
    start_run,
    uid,
)

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def _report(server: Running, lease_id: str) -> None:
    answer = server.workers.ReportResults(
        workers_pb2.ReportResultsRequest(
            results=[
                workers_pb2.JobResult(complete=workers_pb2.CompleteJobRequest(lease_id=lease_id))
            ]
        ),
        timeout=RPC_TIMEOUT,
    )
    assert [s.code for s in answer.statuses] == [0]


def test_assignments_are_pushed_within_the_workers_slots(server: Running) -> None:
    total, slots = 5, 2
    wf = create_workflow(server, [job(f"j{i}") for i in range(total)])
    worker = uid("streamer")
    stream = server.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id=worker, slots=slots, lease_ttl_secs=60),
        timeout=RPC_TIMEOUT * 2,
    )
    held: dict[str, str] = {}  # lease -> job
    received: list[str] = []

    def take() -> None:
        """Blocks for the stream's next message and books its assignments."""
        message = next(stream)
        assert not message.cancelled_lease_ids
        for a in message.assignments:
            assert a.lease.worker_id == worker
            assert a.lease.ttl_secs == 60
            held[a.lease.lease_id] = a.job.job_id
            received.append(a.job.job_id)
        assert len(held) <= slots, f"{len(held)} jobs pushed to {slots} slots"

    try:
        # The worker is idle and connected; starting a run pushes to it.
        run_id = start_run(server, wf)
        while len(held) < slots:
            take()
        running = [
            j for j in get_run(server, run_id).jobs if j.status == jobs_pb2.JOB_STATE_RUNNING
        ]
        assert len(running) == slots
        assert sorted(j.id for j in running) == sorted(held.values())

        # Each report frees one slot, which the next queued job fills.
        while len(received) < total:
            lease_id = next(iter(held))
            _report(server, lease_id)
            del held[lease_id]
            take()
            assert len(held) == slots or len(received) == total
        for lease_id in list(held):
            _report(server, lease_id)
            del held[lease_id]
    finally:
        stream.cancel()

    assert sorted(received) == [f"j{i}" for i in range(total)]
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED
    listed = server.workers.ListWorkers(workers_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT)
    assert worker in {w.worker_id for w in listed.workers}


def test_run_events_are_followed_live_until_the_run_finishes(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    run_id = start_run(server, wf)
    stream = server.runs.StreamRunEvents(
        runs_pb2.StreamRunEventsRequest(run_id=run_id), timeout=RPC_TIMEOUT
    )
    try:
        assert [event_name(next(stream)), event_name(next(stream))] == [
            "RUN_STARTED",
            "JOB_QUEUED",
        ]
        a = must_claim(server)
        complete(server, a.lease.lease_id)
        assert [event_name(next(stream)) for _ in range(3)] == [
            "JOB_STARTED",
            "JOB_SUCCEEDED",
            "JOB_QUEUED",
        ]
        b = must_claim(server)
        complete(server, b.lease.lease_id)
        rest = list(stream)  # ends by itself after RUN_FINISHED
    finally:
        stream.cancel()
    assert [(event_name(e), e.job_id) for e in rest] == [
        ("JOB_STARTED", "b"),
        ("JOB_SUCCEEDED", "b"),
        ("RUN_FINISHED", ""),
    ]


def test_logs_are_followed_live_and_the_stream_ends_with_the_job(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    run_id = start_run(server, wf)
    got = must_claim(server)
    lease_id = got.lease.lease_id
    push_logs(server, lease_id, "one", "two")
    request = logs_pb2.FollowLogsRequest(workflow_id=wf, job_id="a")
    stream = server.logs.FollowLogs(request, timeout=RPC_TIMEOUT)
    try:
        replay = next(stream)
        assert [c.data for c in replay.chunks] == ["one", "two"]
        assert all(c.run_id == run_id and c.attempt == 0 for c in replay.chunks)
        push_logs(server, lease_id, "three", first_sequence=2)
        live = next(stream)
        assert [c.data for c in live.chunks] == ["three"]
        assert live.chunks[0].id > replay.chunks[-1].id
        complete(server, lease_id)
        rest = list(stream)
    finally:
        stream.cancel()
    assert len(rest) == 1
    assert rest[0].job_finished
    assert rest[0].job_state == jobs_pb2.JOB_STATE_SUCCEEDED

    # Resuming after a chunk id replays only what followed it.
    resumed = list(
        server.logs.FollowLogs(
            logs_pb2.FollowLogsRequest(
                workflow_id=wf, job_id="a", run_id=run_id, after_id=replay.chunks[0].id
            ),
            timeout=RPC_TIMEOUT,
        )
    )
    assert [c.data for m in resumed for c in m.chunks] == ["two", "three"]
    assert resumed[-1].job_finished


def test_heartbeats_and_log_uploads_over_one_stream(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    start_run(server, wf)
    got = must_claim(server, ttl=10)
    lease_id = got.lease.lease_id

    answers = list(
        server.workers.StreamHeartbeats(
            iter(
                [
                    workers_pb2.HeartbeatRequest(lease_id=lease_id, lease_ttl_secs=20),
                    workers_pb2.HeartbeatRequest(lease_id="nope"),
                    workers_pb2.HeartbeatRequest(lease_id=lease_id),
                ]
            ),
            timeout=RPC_TIMEOUT,
        )
    )
    assert [(a.lease_id, a.lease_lost) for a in answers] == [
        (lease_id, False),
        ("nope", True),
        (lease_id, False),
    ]
    assert answers[0].expires_at.ToMilliseconds() >= got.lease.granted_at.ToMilliseconds() + 20_000

    def upload(first: int, *lines: str) -> logs_pb2.PushLogsRequest:
        return logs_pb2.PushLogsRequest(
            lease_id=lease_id,
            chunks=[
                logs_pb2.LogChunk(sequence=first + i, data=line, stream=logs_pb2.LOG_STREAM_STDERR)
                for i, line in enumerate(lines)
            ],
        )

    uploaded = server.logs.UploadLogs(
        iter([upload(0, "e0", "e1"), upload(1, "e1 again", "e2")]), timeout=RPC_TIMEOUT
    )
    assert uploaded.accepted == 3  # the repeated sequence 1 is not stored twice
    listed = server.logs.ListLogs(
        logs_pb2.ListLogsRequest(workflow_id=wf, job_id="a"), timeout=RPC_TIMEOUT
    )
    assert [(c.data, c.stream) for c in listed.chunks] == [
        ("e0", logs_pb2.LOG_STREAM_STDERR),
        ("e1", logs_pb2.LOG_STREAM_STDERR),
        ("e2", logs_pb2.LOG_STREAM_STDERR),
    ]


def test_malformed_heartbeat_ends_the_stream_without_losing_the_lease(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    start_run(server, wf)
    lease_id = must_claim(server).lease.lease_id
    stream = server.workers.StreamHeartbeats(
        iter(
            [
                workers_pb2.HeartbeatRequest(lease_id=lease_id),
                workers_pb2.HeartbeatRequest(lease_id=lease_id, lease_ttl_secs=5000),
            ]
        ),
        timeout=RPC_TIMEOUT,
    )
    first = next(stream)
    assert (first.lease_id, first.lease_lost) == (lease_id, False)
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert_status(caught.value, grpc.StatusCode.INVALID_ARGUMENT, "lease_ttl_secs")
    # The lease itself is fine: a bad request is not a lost lease.
    assert not heartbeat(server, lease_id).lease_lost
    complete(server, lease_id)


def test_a_report_does_not_wait_for_a_run_its_refill_would_lock(
    server: Running, database_url: str
) -> None:
    """A report that refills its worker's stream claims jobs of other runs;
    when another transaction holds one of those runs (or the worker's row),
    the report neither waits for it (a cycle of such waits would deadlock)
    nor fails: the refill is undone and the worker gets the job once the run
    is free."""
    if not database_url.startswith("postgresql"):
        pytest.skip("row locks between transactions are PostgreSQL's")

    wf = create_workflow(server, [job("only")])
    worker = uid("refilled")
    stream = server.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id=worker, slots=1, lease_ttl_secs=60),
        timeout=RPC_TIMEOUT * 2,
    )
    holder = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        first = start_run(server, wf)
        (a,) = next(stream).assignments
        assert a.job.run_id == first
        second = start_run(server, wf)  # queued: the one slot is taken
        holder.execute("SELECT id FROM runs WHERE id = %s FOR UPDATE", (second,))
        # The worker's row too, as a claim of its own would hold it.
        holder.execute("SELECT 1 FROM workers WHERE worker_id = %s FOR UPDATE", (worker,))
        # Answers while the run stays locked (a wait would run into the deadline).
        _report(server, a.lease.lease_id)
        assert get_run(server, first).run.state == runs_pb2.RUN_STATE_SUCCEEDED
        holder.rollback()  # the run is free: the worker claims it for itself
        (b,) = next(stream).assignments
        assert b.job.run_id == second
        _report(server, b.lease.lease_id)
    finally:
        holder.close()
        stream.cancel()
