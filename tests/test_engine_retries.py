"""Retries with each backoff kind, exhausted retries, expired leases without
retries, and per-attempt timeouts; all over real gRPC."""

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
        failed_at = retrying.time_ms
        if delay:
            assert answer.delayed_until_ms == failed_at + delay * 1000
        else:
            assert answer.delayed_until_ms == 0

        # Not claimable before the delay: whatever a claim gets, it was never
        # granted before `delayed_until_ms` (an immediate claim usually gets
        # nothing; one that waits gets the job once the delay is over).
        early = claim(server)
        got = early or must_claim(server, wait=10)
        assert got.job.job_id == "flaky"
        assert got.job.attempt == attempt + 1
        assert got.lease.granted_at_ms >= answer.delayed_until_ms
        assert got.job.delayed_until_ms == answer.delayed_until_ms
        if delay:
            assert early is None or early.lease.granted_at_ms >= failed_at + delay * 1000
        else:
            assert early is not None, "a retry without backoff is claimable at once"

    # Out of retries: the next failure is final, retryable or not.
    answer = fail(server, got.lease.lease_id, "still flaky", retryable=True)
    assert not answer.will_retry
    assert answer.delayed_until_ms == 0
    detail = get_run(server, run_id)
    assert detail.run.state == runs_pb2.RUN_STATE_FAILED
    assert detail.jobs[0].status == jobs_pb2.JOB_STATE_FAILED
    assert detail.jobs[0].attempt == retries
    assert detail.jobs[0].output == "still flaky"
    names = [(event_name(e), e.attempt) for e in run_events(server, run_id)]
    assert names[-2:] == [("JOB_FAILED", retries), ("RUN_FINISHED", 0)]
    assert [n for n, _ in names].count("JOB_RETRYING") == retries
    assert claim(server) is None


def test_expired_lease_without_retries_fails_the_job_and_ends_the_run(server: Running) -> None:
    wf = create_workflow(server, [job("once"), job("after", needs=["once"])])
    run_id = start_run(server, wf)
    got = must_claim(server, ttl=1)
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    states = {j.id: j for j in detail.jobs}
    assert states["once"].status == jobs_pb2.JOB_STATE_FAILED
    assert "lease expired" in states["once"].output
    assert states["after"].status == jobs_pb2.JOB_STATE_SKIPPED
    names = [(event_name(e), e.job_id) for e in run_events(server, run_id)]
    assert names[-3:] == [("JOB_FAILED", "once"), ("JOB_SKIPPED", "after"), ("RUN_FINISHED", "")]
    assert_status(
        rpc_error(
            server.workers.CompleteJob, workers_pb2.CompleteJobRequest(lease_id=got.lease.lease_id)
        ),
        grpc.StatusCode.ABORTED,
    )


def test_timeout_caps_the_lease_and_the_reaper_fails_the_attempt(server: Running) -> None:
    wf = create_workflow(server, [job("slow", timeout_secs=1)])
    run_id = start_run(server, wf)
    got = must_claim(server, ttl=30)
    deadline = got.lease.granted_at_ms + 1000
    assert got.job.timeout_secs == 1
    # The lease never outlives the attempt's time limit, however long its TTL.
    assert got.lease.expires_at_ms == deadline

    def keeps_heartbeating() -> bool:
        """One heartbeat; True once the server refuses it (the attempt is over)."""
        try:
            answer = heartbeat(server, got.lease.lease_id, ttl=60)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            assert exc.code() == grpc.StatusCode.ABORTED, exc.details()
            return True
        assert answer.expires_at_ms <= deadline
        assert not answer.cancelled
        return False

    wait_until(keeps_heartbeating)
    detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
    assert detail.jobs[0].status == jobs_pb2.JOB_STATE_FAILED
    assert "timed out" in detail.jobs[0].output
    failed = [e for e in run_events(server, run_id) if event_name(e) == "JOB_FAILED"]
    assert len(failed) == 1
    assert "timed out" in failed[0].message
