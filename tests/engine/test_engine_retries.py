"""Retries with each backoff kind, exhausted retries, lost leases (which spend
no retry, up to a bound), and per-attempt timeouts (which do); all over real
gRPC."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import Running, wait_until
from engine_helpers import (
    assert_status,
    claim,
    create_workflow,
    event_name,
    exponential,
    fail,
    find_event,
    fixed,
    get_run,
    heartbeat,
    job,
    must_claim,
    no_delay,
    rpc_error,
    run_events,
    start_run,
    wait_job_state,
    wait_run_state,
)

from trellis.v1 import jobs_pb2, runs_pb2, workers_pb2


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


# (backoff, expected delay in seconds after attempt 0, 1, 2, ...)
BACKOFFS = {
    "none": (no_delay(), [0, 0]),
    "fixed": (fixed(1), [1, 1]),
    # min(base * 2^attempt, max): 1, 2, then capped at 2.
    "exponential": (exponential(1, 2), [1, 2, 2]),
}


@pytest.mark.parametrize("kind", list(BACKOFFS))
def test_retryable_failures_wait_out_the_backoff(server: Running, kind: str) -> None:
    backoff, delays = BACKOFFS[kind]
    retries = len(delays)
    wf = create_workflow(server, [job("flaky", retries=retries, backoff=backoff)])
    run_id = start_run(server, wf)

    got = must_claim(server)
    for attempt, delay in enumerate(delays):
        assert got.job.attempt == attempt
        assert got.job.retry_policy.max_retries == retries
        assert got.job.retry_policy.backoff == backoff
        answer = fail(server, got.lease.lease_id, f"flake {attempt}", retryable=True)
        assert answer.will_retry
        # The failure's time on the server's clock is that of its event.
        retrying = find_event(
            server, run_id, lambda e, n=attempt: event_name(e) == "JOB_RETRYING" and e.attempt == n
        )
        assert retrying.message == f"flake {attempt}"
        failed_at = retrying.occurred_at.ToMilliseconds()
        if delay:
            assert answer.delayed_until.ToMilliseconds() == failed_at + delay * 1000
        else:
            assert not answer.HasField("delayed_until")

        # Not claimable before the delay: whatever a claim gets, it was never
        # granted before `delayed_until` (an immediate claim usually gets
        # nothing; one that waits gets the job once the delay is over).
        early = claim(server)
        got = early or must_claim(server, wait=10)
        assert got.job.job_id == "flaky"
        assert got.job.attempt == attempt + 1
        assert got.lease.granted_at.ToMilliseconds() >= answer.delayed_until.ToMilliseconds()
        assert got.job.delayed_until.ToMilliseconds() == answer.delayed_until.ToMilliseconds()
        if delay:
            assert (
                early is None or early.lease.granted_at.ToMilliseconds() >= failed_at + delay * 1000
            )
        else:
            assert early is not None, "a retry without backoff is claimable at once"

    # Out of retries: the next failure is final, retryable or not.
    answer = fail(server, got.lease.lease_id, "still flaky", retryable=True)
    assert not answer.will_retry
    assert not answer.HasField("delayed_until")
    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    assert detail.jobs[0].status == jobs_pb2.JOB_STATE_FAILED
    assert detail.jobs[0].attempt == retries
    assert detail.jobs[0].output == "still flaky"
    names = [(event_name(e), e.attempt) for e in run_events(server, run_id)]
    assert names[-2:] == [("JOB_FAILED", retries), ("RUN_FINISHED", 0)]
    assert [n for n, _ in names].count("JOB_RETRYING") == retries
    assert claim(server) is None


def _outcomes(job: jobs_pb2.Job) -> list[tuple[int, int]]:
    return [(a.attempt, a.outcome) for a in job.attempts]


def test_a_lost_lease_is_queued_again_without_spending_a_retry(server: Running) -> None:
    # One retry, with a backoff that grows with each retry spent: 1 s after
    # the first, 2 s after the second.
    wf = create_workflow(server, [job("a", retries=1, backoff=exponential(1, 8))])
    run_id = start_run(server, wf)
    lost = must_claim(server, "dead", ttl=1)

    # The worker never heartbeats: its lease is lost, and the job is queued
    # again at once (no backoff) with its retry still to spend.
    requeued = wait_job_state(server, run_id, "a", jobs_pb2.JOB_STATE_QUEUED)
    assert requeued.attempt == 1
    assert not requeued.HasField("delayed_until")
    assert requeued.output == "lease expired: the worker stopped heartbeating"
    second = must_claim(server, "alive")
    assert second.job.attempt == 1
    answer = fail(server, second.lease.lease_id, "flake", retryable=True)
    assert answer.will_retry, "the lost lease spent no retry"
    retrying = find_event(
        server, run_id, lambda e: event_name(e) == "JOB_RETRYING" and e.attempt == 1
    )
    # The backoff of the first retry spent (attempt 1 is only the first failure).
    assert answer.delayed_until.ToMilliseconds() == retrying.occurred_at.ToMilliseconds() + 1000
    third = must_claim(server, "alive", wait=10)
    assert third.job.attempt == 2
    answer = fail(server, third.lease.lease_id, "still flaky", retryable=True)
    assert not answer.will_retry

    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    (a,) = detail.jobs
    assert (a.attempt, a.output) == (2, "still flaky")
    assert [(x.lease_id, x.worker_id, x.outcome, x.error) for x in a.attempts] == [
        (
            lost.lease.lease_id,
            "dead",
            jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST,
            "lease expired: the worker stopped heartbeating",
        ),
        (second.lease.lease_id, "alive", jobs_pb2.ATTEMPT_OUTCOME_FAILED, "flake"),
        (third.lease.lease_id, "alive", jobs_pb2.ATTEMPT_OUTCOME_FAILED, "still flaky"),
    ]
    assert [x.attempt for x in a.attempts] == [0, 1, 2]
    for x in a.attempts:
        assert 0 < x.started_at.ToMilliseconds() <= x.ended_at.ToMilliseconds()
    assert a.attempts[0].started_at.ToMilliseconds() == lost.lease.granted_at.ToMilliseconds()
    assert a.attempts[0].ended_at.ToMilliseconds() >= lost.lease.expires_at.ToMilliseconds()


def test_a_job_fails_once_its_lease_is_lost_more_often_than_allowed(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(rest_enabled=False, max_lost_leases=1)
    wf = create_workflow(server, [job("once", retries=2), job("after", needs=["once"])])
    run_id = start_run(server, wf)
    first = must_claim(server, ttl=1)
    wait_job_state(server, run_id, "once", jobs_pb2.JOB_STATE_QUEUED)
    second = must_claim(server, ttl=1)
    assert second.job.attempt == 1

    # The second lost lease is one more than allowed: the job fails (its
    # own retries are not used for lost leases) and the run ends.
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    states = {j.id: j for j in detail.jobs}
    error = (
        "lease expired: the worker stopped heartbeating; the job's lease was lost 2 times, "
        "and a job is queued again after at most 1"
    )
    assert states["once"].status == jobs_pb2.JOB_STATE_FAILED
    assert states["once"].output == error
    assert _outcomes(states["once"]) == [
        (0, jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST),
        (1, jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST),
    ]
    assert states["once"].attempts[1].error == error
    assert states["after"].status == jobs_pb2.JOB_STATE_SKIPPED
    assert list(states["after"].attempts) == []
    names = [(event_name(e), e.job_id, e.message) for e in run_events(server, run_id)]
    assert names[-3:] == [
        ("JOB_FAILED", "once", error),
        ("JOB_SKIPPED", "after", ""),
        ("RUN_FINISHED", "", "failed"),
    ]
    for got in (first, second):
        assert_status(
            rpc_error(
                server.workers.CompleteJob,
                workers_pb2.CompleteJobRequest(lease_id=got.lease.lease_id),
            ),
            grpc.StatusCode.ABORTED,
        )


def test_no_lost_lease_is_queued_again_when_none_is_allowed(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(rest_enabled=False, max_lost_leases=0)
    wf = create_workflow(server, [job("once", retries=1)])
    run_id = start_run(server, wf)
    must_claim(server, ttl=1)
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    assert detail.jobs[0].output == (
        "lease expired: the worker stopped heartbeating; the job's lease was lost 1 time, "
        "and lost leases are not queued again"
    )
    assert _outcomes(detail.jobs[0]) == [(0, jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST)]


def test_a_timeout_spends_a_retry_and_is_no_lost_lease(
    start_server: Callable[..., Running],
) -> None:
    # No lost lease is allowed here: a timeout must not count as one.
    server = start_server(rest_enabled=False, max_lost_leases=0)
    wf = create_workflow(server, [job("slow", retries=1, timeout_secs=1)])
    run_id = start_run(server, wf)
    first = must_claim(server, ttl=30)
    requeued = wait_job_state(server, run_id, "slow", jobs_pb2.JOB_STATE_QUEUED)
    assert (requeued.attempt, requeued.output) == (1, "timed out after 1 s")
    second = must_claim(server, ttl=30)
    assert second.job.attempt == 1
    # The retry is spent: the second timeout fails the job.
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    (slow,) = detail.jobs
    assert slow.output == "timed out after 1 s"
    assert [(a.lease_id, a.outcome, a.error) for a in slow.attempts] == [
        (first.lease.lease_id, jobs_pb2.ATTEMPT_OUTCOME_TIMED_OUT, "timed out after 1 s"),
        (second.lease.lease_id, jobs_pb2.ATTEMPT_OUTCOME_TIMED_OUT, "timed out after 1 s"),
    ]
    names = [(event_name(e), e.attempt) for e in run_events(server, run_id)]
    assert ("JOB_RETRYING", 0) in names and names[-2] == ("JOB_FAILED", 1)
    # Its lease says why it is spent.
    assert_status(
        rpc_error(
            server.workers.Heartbeat, workers_pb2.HeartbeatRequest(lease_id=second.lease.lease_id)
        ),
        grpc.StatusCode.ABORTED,
        "timeout",
    )


def test_timeout_caps_the_lease_and_the_reaper_fails_the_attempt(server: Running) -> None:
    wf = create_workflow(server, [job("slow", timeout_secs=1)])
    run_id = start_run(server, wf)
    got = must_claim(server, ttl=30)
    deadline = got.lease.granted_at.ToMilliseconds() + 1000
    assert got.job.timeout_secs == 1
    # The lease never outlives the attempt's time limit, however long its TTL.
    assert got.lease.expires_at.ToMilliseconds() == deadline

    def keeps_heartbeating() -> bool:
        """One heartbeat; True once the server refuses it (the attempt is over)."""
        try:
            answer = heartbeat(server, got.lease.lease_id, ttl=60)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            assert exc.code() == grpc.StatusCode.ABORTED, exc.details()
            return True
        assert answer.expires_at.ToMilliseconds() <= deadline
        assert not answer.cancelled
        return False

    wait_until(keeps_heartbeating)
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    assert detail.jobs[0].status == jobs_pb2.JOB_STATE_FAILED
    assert "timed out" in detail.jobs[0].output
    failed = [e for e in run_events(server, run_id) if event_name(e) == "JOB_FAILED"]
    assert len(failed) == 1
    assert "timed out" in failed[0].message
