"""Leases end when they expire, not at the reaper's next interval: the reaper
sleeps until the earliest lease expiry, and a lease granted or shortened
meanwhile wakes it sooner. Measured on the server's own timestamps; the
reap interval is left at its default (5 s), which would be late."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import Running, wait_until
from engine_helpers import (
    complete,
    create_workflow,
    event_name,
    get_run,
    heartbeat,
    job,
    must_claim,
    run_events,
    start_run,
    wait_job_state,
    wait_run_state,
)
from sdk_helpers import started_worker

from trellis.server.config import Config
from trellis.v1 import jobs_pb2, runs_pb2
from trellis.worker_sdk import JobContext, Worker

# How long after its expiry a lease may still be active.
PROMPT_MS = 1000


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False, reap_interval_secs=Config.reap_interval_secs)


def test_a_timeout_is_enforced_within_a_second_of_its_value(server: Running) -> None:
    assert server.config.reap_interval_secs == 5.0
    hang = jobs_pb2.Job(id="hang", command="hang", timeout_secs=1)
    wf = create_workflow(server, [hang])
    stopped = threading.Event()
    worker = Worker(server.grpc_target, lease_ttl_secs=30)

    @worker.handler("hang")
    def never_returns(ctx: JobContext) -> dict[str, str]:
        ctx.cancelled.wait(60.0)  # until the worker learns the job is over
        stopped.set()
        return {}

    with started_worker(worker):
        run_id = start_run(server, wf)
        detail = wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)
        wait_until(stopped.is_set)

    (failed,) = detail.jobs
    assert failed.output == "timed out after 1 s"
    (attempt,) = failed.attempts
    assert attempt.outcome == jobs_pb2.ATTEMPT_OUTCOME_TIMED_OUT
    events = {event_name(e): e.occurred_at.ToMilliseconds() for e in run_events(server, run_id)}
    assert events["JOB_STARTED"] == attempt.started_at.ToMilliseconds()
    assert events["JOB_FAILED"] == attempt.ended_at.ToMilliseconds()
    took = attempt.ended_at.ToMilliseconds() - attempt.started_at.ToMilliseconds()
    assert 1000 <= took <= 1000 + PROMPT_MS, took


def test_a_lease_shortened_by_a_heartbeat_is_ended_when_it_expires(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    run_id = start_run(server, wf)
    got = must_claim(server, ttl=30)
    # The reaper sleeps toward this lease's 30 s expiry (or its interval);
    # a heartbeat asking for 1 s brings the expiry forward.
    shortened = heartbeat(server, got.lease.lease_id, ttl=1)
    assert shortened.expires_at.ToMilliseconds() < got.lease.expires_at.ToMilliseconds()
    wait_job_state(server, run_id, "a", jobs_pb2.JOB_STATE_QUEUED)
    (lost,) = get_run(server, run_id).jobs[0].attempts
    assert lost.outcome == jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST
    late = lost.ended_at.ToMilliseconds() - shortened.expires_at.ToMilliseconds()
    assert 0 <= late <= PROMPT_MS, late


def test_replicas_that_all_reap_end_each_lease_once(
    start_server: Callable[..., Running],
) -> None:
    first = start_server(rest_enabled=False, reap_interval_secs=Config.reap_interval_secs)
    second = start_server(rest_enabled=False, reap_interval_secs=Config.reap_interval_secs)
    total = 20
    wf = create_workflow(first, [job(f"j{i:02d}") for i in range(total)])
    run_id = start_run(first, wf)
    # Claimed on both replicas, so that both reapers wake for the expiries.
    for i in range(total):
        must_claim(first if i % 2 else second, f"w{i}", ttl=1)

    def all_requeued() -> runs_pb2.RunDetail | None:
        detail = get_run(second, run_id)
        queued = all(j.status == jobs_pb2.JOB_STATE_QUEUED for j in detail.jobs)
        return detail if queued else None

    detail: runs_pb2.RunDetail = wait_until(all_requeued)
    # On a slow machine a job re-queued before the last claims may be claimed
    # (and lost) again: each lease still ends once, as one lost attempt.
    tries = {j.id: j.attempt for j in detail.jobs}
    for j in detail.jobs:
        assert j.attempt >= 1, j
        assert [a.outcome for a in j.attempts] == [jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST] * j.attempt
    # Finished, the run's events can be read whole: one retry per lost lease.
    for _ in range(total):
        complete(first, must_claim(first, "finisher").lease.lease_id)
    wait_run_state(first, run_id, runs_pb2.RUN_STATE_SUCCEEDED)
    retrying = Counter(
        e.job_id for e in run_events(first, run_id) if event_name(e) == "JOB_RETRYING"
    )
    assert retrying == tries
