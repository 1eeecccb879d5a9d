"""Leases are fencing tokens: only the active, unexpired lease of a job may
change it, once. Checked over real gRPC, also under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
import pytest
from conftest import Running, wait_until
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    claim,
    complete,
    create_workflow,
    event_name,
    fail,
    get_run,
    heartbeat,
    job,
    job_state,
    list_logs,
    must_claim,
    push_logs,
    race,
    rpc_error,
    run_events,
    run_jobs,
    server_now_ms,
    start_run,
    uid,
    wait_job_state,
    wait_run_state,
)

from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2

ABORTED = grpc.StatusCode.ABORTED


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def _complete_request(lease_id: str) -> workers_pb2.CompleteJobRequest:
    return workers_pb2.CompleteJobRequest(lease_id=lease_id, outputs={"late": "yes"})


def test_expired_lease_is_requeued_and_only_the_fresh_lease_counts(server: Running) -> None:
    wf = create_workflow(server, [job("a", retries=2)])
    run_id = start_run(server, wf)
    old = must_claim(server, "w1", ttl=1)
    assert old.job.attempt == 0
    assert old.lease.ttl_secs == 1
    assert old.lease.expires_at.ToMilliseconds() == old.lease.granted_at.ToMilliseconds() + 1000

    # The reaper (every 0.2 s in tests) turns the expired lease into a retry.
    requeued = wait_until(
        lambda: (j := run_jobs(server, run_id)["a"]).status == jobs_pb2.JOB_STATE_QUEUED and j
    )
    assert requeued.attempt == 1
    assert "lease expired" in requeued.output

    new = must_claim(server, "w2", ttl=30)
    assert new.lease.lease_id != old.lease.lease_id
    assert new.job.attempt == old.job.attempt + 1
    assert new.lease.run_id == run_id

    stale = old.lease.lease_id
    assert_status(
        rpc_error(server.workers.CompleteJob, _complete_request(stale)), ABORTED, "expired"
    )
    assert_status(
        rpc_error(server.workers.FailJob, workers_pb2.FailJobRequest(lease_id=stale, error="x")),
        ABORTED,
    )
    assert_status(
        rpc_error(server.workers.Heartbeat, workers_pb2.HeartbeatRequest(lease_id=stale)), ABORTED
    )
    assert_status(
        rpc_error(
            server.logs.PushLogs,
            logs_pb2.PushLogsRequest(lease_id=stale, chunks=[logs_pb2.LogChunk(data="late")]),
        ),
        ABORTED,
    )
    # None of that touched the job, which the fresh lease still holds.
    assert job_state(server, run_id, "a") == jobs_pb2.JOB_STATE_RUNNING
    assert list(list_logs(server, wf, "a").chunks) == []

    complete(server, new.lease.lease_id, {"by": "w2"})
    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    assert dict(detail.jobs[0].outputs) == {"by": "w2"}
    names = [(event_name(e), e.attempt) for e in run_events(server, run_id) if e.job_id == "a"]
    assert names == [
        ("JOB_QUEUED", 0),
        ("JOB_STARTED", 0),
        ("JOB_RETRYING", 0),
        ("JOB_STARTED", 1),
        ("JOB_SUCCEEDED", 1),
    ]


def test_heartbeat_extends_the_lease_and_honours_the_requested_ttl(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    start_run(server, wf)
    got = must_claim(server, ttl=5)
    lease = got.lease

    longer = heartbeat(server, lease.lease_id, ttl=60)
    assert longer.lease_id == lease.lease_id
    assert not longer.cancelled and not longer.lease_lost
    assert longer.expires_at.ToMilliseconds() >= lease.granted_at.ToMilliseconds() + 60_000
    assert longer.expires_at.ToMilliseconds() > lease.expires_at.ToMilliseconds()

    # Without a TTL the lease keeps the one it was last given.
    again = heartbeat(server, lease.lease_id)
    assert again.expires_at.ToMilliseconds() >= longer.expires_at.ToMilliseconds()

    for bad in (3601, 100_000):
        error = rpc_error(
            server.workers.Heartbeat,
            workers_pb2.HeartbeatRequest(lease_id=lease.lease_id, lease_ttl_secs=bad),
        )
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "lease_ttl_secs")
    complete(server, lease.lease_id)
    # A finished lease cannot be extended.
    assert_status(
        rpc_error(server.workers.Heartbeat, workers_pb2.HeartbeatRequest(lease_id=lease.lease_id)),
        ABORTED,
        "completed",
    )


def test_lease_past_expiry_is_stale_before_the_reaper_runs(
    start_server: Callable[..., Running],
) -> None:
    # api_only: this replica runs no reaper, so the lease stays "active" in the
    # database after its expiry; the expiry time alone must fence it.
    replica = start_server(rest_enabled=False, api_only=True)
    wf = create_workflow(replica, [job("a")])
    run_id = start_run(replica, wf)
    got = must_claim(replica, ttl=1)
    lease_id = got.lease.lease_id
    wait_until(lambda: server_now_ms(replica) > got.lease.expires_at.ToMilliseconds())

    assert_status(
        rpc_error(replica.workers.Heartbeat, workers_pb2.HeartbeatRequest(lease_id=lease_id)),
        ABORTED,
        "expired",
    )
    assert_status(rpc_error(replica.workers.CompleteJob, _complete_request(lease_id)), ABORTED)
    assert_status(
        rpc_error(
            replica.logs.PushLogs,
            logs_pb2.PushLogsRequest(lease_id=lease_id, chunks=[logs_pb2.LogChunk(data="x")]),
        ),
        ABORTED,
    )
    assert job_state(replica, run_id, "a") == jobs_pb2.JOB_STATE_RUNNING
    assert claim(replica, "other") is None

    # A replica with a reaper on the same database ends the lost lease: the
    # job is queued again (a lost lease spends none of its retries, of which
    # it has none), and a worker of the first replica finishes the run.
    reaper = start_server(rest_enabled=False)
    requeued = wait_job_state(reaper, run_id, "a", jobs_pb2.JOB_STATE_QUEUED)
    assert requeued.attempt == 1 and "lease expired" in requeued.output
    again = must_claim(replica, "other")
    assert again.job.attempt == 1
    complete(replica, again.lease.lease_id)
    detail = wait_run_state(reaper, run_id, runs_pb2.RUN_STATE_SUCCEEDED)
    outcomes = [(a.lease_id, a.outcome) for a in detail.jobs[0].attempts]
    assert outcomes == [
        (lease_id, jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST),
        (again.lease.lease_id, jobs_pb2.ATTEMPT_OUTCOME_SUCCEEDED),
    ]
    assert event_name(run_events(reaper, run_id)[-1]) == "RUN_FINISHED"


def test_unknown_lease_is_aborted_everywhere(server: Running) -> None:
    unknown = "0" * 32
    calls = [
        (server.workers.Heartbeat, workers_pb2.HeartbeatRequest(lease_id=unknown)),
        (server.workers.CompleteJob, workers_pb2.CompleteJobRequest(lease_id=unknown)),
        (server.workers.FailJob, workers_pb2.FailJobRequest(lease_id=unknown, error="x")),
        (
            server.logs.PushLogs,
            logs_pb2.PushLogsRequest(lease_id=unknown, chunks=[logs_pb2.LogChunk(data="x")]),
        ),
    ]
    for call, request in calls:
        assert_status(rpc_error(call, request), ABORTED, "unknown lease")

    batch = server.workers.ReportResults(
        workers_pb2.ReportResultsRequest(
            results=[
                workers_pb2.JobResult(complete=workers_pb2.CompleteJobRequest(lease_id=unknown))
            ]
        ),
        timeout=RPC_TIMEOUT,
    )
    assert [(s.lease_id, s.code) for s in batch.statuses] == [(unknown, ABORTED.value[0])]

    answers = list(
        server.workers.StreamHeartbeats(
            iter([workers_pb2.HeartbeatRequest(lease_id=unknown)]), timeout=RPC_TIMEOUT
        )
    )
    assert [(a.lease_id, a.lease_lost) for a in answers] == [(unknown, True)]


def test_logs_need_a_live_lease(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b")])
    run_id = start_run(server, wf)
    a = must_claim(server)
    b = must_claim(server)
    push_logs(server, a.lease.lease_id, "a says hi")
    complete(server, a.lease.lease_id)
    fail(server, b.lease.lease_id, "no")
    for lease_id, state in ((a.lease.lease_id, "completed"), (b.lease.lease_id, "failure")):
        error = rpc_error(
            server.logs.PushLogs,
            logs_pb2.PushLogsRequest(lease_id=lease_id, chunks=[logs_pb2.LogChunk(data="late")]),
        )
        assert_status(error, ABORTED, state)
    assert [c.data for c in list_logs(server, wf, "a", run_id).chunks] == ["a says hi"]
    assert list(list_logs(server, wf, "b", run_id).chunks) == []


def test_concurrent_completions_of_one_lease_apply_once(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b", needs=["a"])])
    for _ in range(3):
        run_id = start_run(server, wf)
        got = must_claim(server)
        threads = 8
        codes = dict(
            enumerate(
                race(
                    [
                        lambda i=i, lid=got.lease.lease_id: complete(
                            server, lid, {"winner": str(i)}
                        )
                        for i in range(threads)
                    ]
                )
            )
        )
        assert len(codes) == threads
        winners = [i for i, code in codes.items() if code == grpc.StatusCode.OK]
        assert len(winners) == 1, codes
        assert all(code in (grpc.StatusCode.OK, ABORTED) for code in codes.values()), codes

        jobs = run_jobs(server, run_id)
        assert jobs["a"].status == jobs_pb2.JOB_STATE_SUCCEEDED
        assert dict(jobs["a"].outputs) == {"winner": str(winners[0])}
        assert jobs["b"].status == jobs_pb2.JOB_STATE_QUEUED
        b = must_claim(server)
        complete(server, b.lease.lease_id)
        names = [(event_name(e), e.job_id) for e in run_events(server, run_id)]
        assert names.count(("JOB_SUCCEEDED", "a")) == 1
        assert names.count(("JOB_QUEUED", "b")) == 1
        assert names.count(("RUN_FINISHED", "")) == 1
        assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED


def test_report_results_judges_each_result_alone(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b"), job("c", needs=["a"])])
    run_id = start_run(server, wf)
    a = must_claim(server)
    b = must_claim(server)
    assert (a.job.job_id, b.job.job_id) == ("a", "b")

    def done(lease_id: str, value: str) -> workers_pb2.JobResult:
        return workers_pb2.JobResult(
            complete=workers_pb2.CompleteJobRequest(lease_id=lease_id, outputs={"v": value})
        )

    batch = server.workers.ReportResults(
        workers_pb2.ReportResultsRequest(
            results=[
                done(a.lease.lease_id, "first"),
                done(a.lease.lease_id, "second"),
                workers_pb2.JobResult(
                    fail=workers_pb2.FailJobRequest(lease_id=b.lease.lease_id, error="bad")
                ),
                done("f" * 32, "nobody"),
            ]
        ),
        timeout=RPC_TIMEOUT,
    )
    statuses = [(s.lease_id, s.code) for s in batch.statuses]
    assert statuses == [
        (a.lease.lease_id, 0),
        (a.lease.lease_id, ABORTED.value[0]),
        (b.lease.lease_id, 0),
        ("f" * 32, ABORTED.value[0]),
    ]
    assert "already" in batch.statuses[1].message
    assert "unknown lease" in batch.statuses[3].message

    jobs = run_jobs(server, run_id)
    assert dict(jobs["a"].outputs) == {"v": "first"}
    assert jobs["b"].status == jobs_pb2.JOB_STATE_FAILED
    assert jobs["c"].status == jobs_pb2.JOB_STATE_QUEUED
    # Reporting the same lease again in a later batch is refused as well.
    again = server.workers.ReportResults(
        workers_pb2.ReportResultsRequest(results=[done(a.lease.lease_id, "third")]),
        timeout=RPC_TIMEOUT,
    )
    assert again.statuses[0].code == ABORTED.value[0]
    assert dict(run_jobs(server, run_id)["a"].outputs) == {"v": "first"}

    c = must_claim(server)
    complete(server, c.lease.lease_id)
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_FAILED
    names = [(event_name(e), e.job_id) for e in run_events(server, run_id)]
    assert names.count(("JOB_SUCCEEDED", "a")) == 1
    assert names.count(("JOB_FAILED", "b")) == 1


def test_many_claimers_share_a_thousand_jobs_without_overlap(server: Running) -> None:
    total, threads, batch = 1000, 8, 25
    wf = create_workflow(server, [job(f"j{i:04d}") for i in range(total)])
    run_id = start_run(server, wf)
    claimed: list[tuple[str, str, str]] = []  # (job, lease, worker)
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(worker: str) -> None:
        try:
            barrier.wait(timeout=RPC_TIMEOUT)
            while True:
                got = server.workers.ClaimJobs(
                    workers_pb2.ClaimJobsRequest(worker_id=worker, max_jobs=batch),
                    timeout=RPC_TIMEOUT,
                ).assignments
                if not got:
                    return
                assert len(got) <= batch
                with lock:
                    claimed.extend((a.job.job_id, a.lease.lease_id, worker) for a in got)
                report = server.workers.ReportResults(
                    workers_pb2.ReportResultsRequest(
                        results=[
                            workers_pb2.JobResult(
                                complete=workers_pb2.CompleteJobRequest(
                                    lease_id=a.lease.lease_id, outputs={"by": worker}
                                )
                            )
                            for a in got
                        ]
                    ),
                    timeout=RPC_TIMEOUT,
                )
                assert [s.code for s in report.statuses] == [0] * len(got)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    # A follower reads the run's events live while the claimers work; it must
    # see exactly what a later full replay sees (no event skipped or reordered).
    live: list[runs_pb2.RunEvent] = []
    follower = threading.Thread(target=lambda: live.extend(run_events(server, run_id)))
    follower.start()
    pool = [threading.Thread(target=work, args=(uid("claimer"),)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    follower.join(timeout=RPC_TIMEOUT)
    assert not errors, errors[0]
    assert not any(t.is_alive() for t in pool)

    job_ids = [j for j, _, _ in claimed]
    assert len(job_ids) == total, "every job claimed exactly once"
    assert set(job_ids) == {f"j{i:04d}" for i in range(total)}
    assert len({lease for _, lease, _ in claimed}) == total
    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_SUCCEEDED
    by_worker = {j: w for j, _, w in claimed}
    for j in detail.jobs:
        assert j.status == jobs_pb2.JOB_STATE_SUCCEEDED
        assert dict(j.outputs) == {"by": by_worker[j.id]}
    replay = run_events(server, run_id)
    assert live == replay
    names = [event_name(e) for e in replay]
    assert names.count("JOB_SUCCEEDED") == total
    assert len({e.job_id for e in replay if event_name(e) == "JOB_SUCCEEDED"}) == total
    assert names[-1] == "RUN_FINISHED"
