"""Hand-off: jobs that a transaction makes ready are leased, in that same
transaction, to claimers waiting on this replica with free slots.

The waiting claimer here is a stream opened on the running server's own
dispatcher (what an assignment stream opens); runs, completions and claims go
through the server's gRPC API. Hand-off happens before the call that made the
jobs ready returns, so what the stream was handed is read at once, without
waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    claim,
    complete,
    create_workflow,
    get_run,
    job,
    must_claim,
    run_jobs,
    start_run,
    uid,
    wait_run_state,
)

from trellis.server.engine import Claimed, Stream
from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2

ORG = "default"


@contextmanager
def waiting_claimer(
    server: Running, free: int, labels: tuple[str, ...] = (), org: str = ORG
) -> Iterator[Stream]:
    dispatch = server.server.service.dispatch
    with dispatch.open(
        org, uid("waiting"), labels, slots=free, ttl_secs=60, owner=server.subject
    ) as stream:
        yield stream


def taken(server: Running, stream: Stream) -> list[Claimed]:
    return stream.take()


def test_a_new_runs_ready_jobs_are_leased_to_a_waiting_claimer_before_run_returns(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("a"), job("b"), job("c"), job("after", needs=["a"])])
    with waiting_claimer(server, free=2) as sub:
        run_id = start_run(server, wf)
        handed = taken(server, sub)
        assert len(handed) == 2  # its two free slots; the third root stays queued
        assert {c.job["key"] for c in handed} < {"a", "b", "c"}
        states = {k: j.status for k, j in run_jobs(server, run_id).items()}
        for c in handed:
            assert states[c.job["key"]] == jobs_pb2.JOB_STATE_RUNNING
        assert sorted(states.values()).count(jobs_pb2.JOB_STATE_QUEUED) == 1
        assert states["after"] == jobs_pb2.JOB_STATE_PENDING

        # The leases are real ones: the third job goes to an ordinary claim,
        # and completing all three releases the child.
        rest = must_claim(server)
        for c in handed:
            complete(server, c.lease_id)
        complete(server, rest.lease.lease_id)
        final = must_claim(server)
        assert final.job.job_id == "after"
        complete(server, final.lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_a_child_is_handed_off_with_its_parents_outputs_when_the_parent_completes(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("parent"), job("child", needs=["parent"])])
    run_id = start_run(server, wf)
    parent = must_claim(server)
    with waiting_claimer(server, free=1) as sub:
        complete(server, parent.lease.lease_id, {"answer": "42"})
        (child,) = taken(server, sub)
    assert child.job["key"] == "child"
    assert child.upstream_outputs == {"parent": {"answer": "42"}}
    assert run_jobs(server, run_id)["child"].status == jobs_pb2.JOB_STATE_RUNNING
    complete(server, child.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_hand_off_respects_labels_and_organizations(server: Running) -> None:
    wf = create_workflow(server, [job("gpu-job", labels=["gpu"])])
    with (
        waiting_claimer(server, free=5, labels=("linux",)) as cpu,
        waiting_claimer(server, free=5, labels=("gpu",), org="another-org") as elsewhere,
        waiting_claimer(server, free=5, labels=("gpu", "linux")) as gpu,
    ):
        start_run(server, wf)
        assert taken(server, cpu) == []
        assert taken(server, elsewhere) == []
        (handed,) = taken(server, gpu)
    assert handed.job["key"] == "gpu-job"
    complete(server, handed.lease_id)


def test_jobs_handed_off_but_never_taken_are_queued_again_as_they_were(server: Running) -> None:
    wf = create_workflow(server, [job("only", retries=0)])
    with waiting_claimer(server, free=1) as sub:
        run_id = start_run(server, wf)
        (handed,) = taken(server, sub)
    # The claimer left without starting it (what a stream that disconnects
    # does with what it had not sent): the job is queued again, its attempt
    # not spent, and the lease it was given is dead.
    server.server.service.dispatch.hand_back(ORG, [handed])
    assert run_jobs(server, run_id)["only"].status == jobs_pb2.JOB_STATE_QUEUED
    with pytest.raises(grpc.RpcError) as err:
        complete(server, handed.lease_id)
    assert err.value.code() == grpc.StatusCode.ABORTED
    again = must_claim(server)
    assert again.job.job_id == "only"
    assert again.job.attempt == handed.job["attempt"]
    assert again.lease.lease_id != handed.lease_id
    complete(server, again.lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_a_stream_never_holds_more_than_its_slots_while_hand_offs_and_claims_race(
    server: Running,
) -> None:
    slots, runs, width = 3, 40, 2
    wf = create_workflow(server, [job(f"j{i}") for i in range(width)])
    stream = server.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id=uid("streamer"), slots=slots),
        timeout=RPC_TIMEOUT * 4,
    )
    started: list[str] = []
    starter_failed: list[BaseException] = []

    def start_runs() -> None:
        try:
            started.extend(start_run(server, wf) for _ in range(runs // 2))
        except BaseException as exc:  # reported by the main thread
            starter_failed.append(exc)

    starters = [threading.Thread(target=start_runs) for _ in range(2)]
    held: list[str] = []
    received = 0
    try:
        for starter in starters:
            starter.start()
        while received < runs * width:
            message = next(stream)
            held.extend(a.lease.lease_id for a in message.assignments)
            received += len(message.assignments)
            assert len(held) <= slots, f"{len(held)} unfinished jobs pushed to {slots} slots"
            if len(held) == slots:
                # Full: one finishes, which frees exactly one slot.
                complete(server, held.pop(0))
        for lease_id in held:
            complete(server, lease_id)
    finally:
        stream.cancel()
        for starter in starters:
            starter.join(RPC_TIMEOUT)
    assert not starter_failed
    for run_id in started:
        assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert claim(server) is None


def test_a_full_stream_is_neither_pushed_nor_handed_more_than_its_slots(server: Running) -> None:
    slots, width = 2, 6
    wf = create_workflow(server, [job(f"j{i}") for i in range(width)])
    first = start_run(server, wf)  # all queued before the stream connects
    stream = server.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id=uid("streamer"), slots=slots),
        timeout=RPC_TIMEOUT * 4,
    )
    try:
        message = next(stream)
        held = [a.lease.lease_id for a in message.assignments]
        assert len(held) == slots
        # Full: a run started now hands it nothing (hand-off happens before
        # the start returns), and its jobs wait with the first run's rest.
        second = start_run(server, wf)
        queued = jobs_pb2.JOB_STATE_QUEUED
        assert [j.status for j in run_jobs(server, second).values()] == [queued] * width
        states = [j.status for j in run_jobs(server, first).values()]
        assert states.count(queued) == width - slots
        finished = 0
        while finished < 2 * width:
            for lease_id in held:
                complete(server, lease_id)
            finished += len(held)
            if finished == 2 * width:
                break
            message = next(stream)
            held = [a.lease.lease_id for a in message.assignments]
            assert 1 <= len(held) <= slots, f"{len(held)} jobs pushed to {slots} slots"
    finally:
        stream.cancel()
    for run_id in (first, second):
        wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)


def test_hand_offs_go_one_job_each_in_turn_within_the_free_slots(server: Running) -> None:
    wf = create_workflow(server, [job(f"j{i}") for i in range(5)])
    with waiting_claimer(server, free=1) as one, waiting_claimer(server, free=3) as three:
        run_id = start_run(server, wf)
        counts = [len(taken(server, one)), len(taken(server, three))]
    assert counts == [1, 3]  # the fifth job waits for a claim
    states = [j.status for j in run_jobs(server, run_id).values()]
    assert states.count(jobs_pb2.JOB_STATE_QUEUED) == 1


def test_hand_offs_fill_the_handlers_of_a_command_before_claimers_that_run_anything(
    server: Running,
) -> None:
    dispatch = server.server.service.dispatch
    builds = create_workflow(server, [jobs_pb2.Job(id=f"b{i}", command="build") for i in range(3)])
    with (
        waiting_claimer(server, free=3) as anything,
        dispatch.open(
            ORG,
            uid("builder"),
            (),
            slots=2,
            ttl_secs=60,
            owner=server.subject,
            commands=frozenset({"build"}),
        ) as builder,
    ):
        start_run(server, builds)
        assert [len(taken(server, builder)), len(taken(server, anything))] == [2, 1]
