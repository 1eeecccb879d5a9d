"""Claims and reports of concurrent callers run in shared transactions
(``server/_group_commit``): one statement draws the jobs of many claimers, one
judgement covers the reports of many principals, and each caller still gets
exactly its own answer."""

from __future__ import annotations

from conftest import Running, race
from engine_helpers import (
    complete,
    create_workflow,
    job,
    must_claim,
    run_events,
    run_jobs,
    start_run,
    uid,
    wait_run_state,
)

# Grouped claims need a deterministic interleaving of claimers that only the
# scheduler's grouped-claim API gives; concurrent RPCs would group by chance.
from trellis.server.engine import _machine as sched
from trellis.v1 import jobs_pb2, runs_pb2

ORG = "default"


def ask(
    worker: str, *labels: str, max_jobs: int = 5, owner: str = "", org: str = ORG
) -> sched.ClaimAsk:
    return sched.ClaimAsk(org, worker, tuple(labels), 60, max_jobs, owner or worker)


def claim_together(server: Running, asks: list[sched.ClaimAsk]) -> list[list[sched.Claimed]]:
    db = server.server.db
    with db.write() as conn:
        granted, _ = sched.claim(conn, is_pg=db.is_postgres, asks=asks, now=db.now_ms(conn))
    return granted


def report_together(
    server: Running, reports: list[tuple[str, sched.Result]]
) -> list[sched.Verdict]:
    db = server.server.db
    with db.write() as conn:
        verdicts, _ = sched.report_results(
            conn, is_pg=db.is_postgres, org=ORG, reports=reports, now=db.now_ms(conn)
        )
    return verdicts


def test_claims_drawn_together_keep_to_labels_limits_and_organizations(server: Running) -> None:
    wf = create_workflow(
        server,
        [job("p1"), job("p2"), job("p3"), job("l1", labels=["linux"]), job("l2", labels=["linux"])],
    )
    run_id = start_run(server, wf)
    plain, linux, small, elsewhere = claim_together(
        server,
        [
            ask("plain"),
            ask("linux", "linux"),
            ask("small", max_jobs=1),
            ask("elsewhere", "linux", org="another-org"),
        ],
    )
    # The plain claimer draws first (oldest jobs) and may not take labelled
    # ones; the linux claimer takes the rest: both kinds.
    assert [c.job["key"] for c in plain] == ["p1", "p2", "p3"]
    assert sorted(c.job["key"] for c in linux) == ["l1", "l2"]
    assert small == [] and elsewhere == []
    leases = [c.lease_id for c in plain + linux]
    assert len(set(leases)) == 5
    jobs = run_jobs(server, run_id)
    assert {k: j.status for k, j in jobs.items()} == dict.fromkeys(jobs, jobs_pb2.JOB_STATE_RUNNING)
    verdicts = report_together(
        server,
        [("plain", sched.Result(c.lease_id, ok=True)) for c in plain]
        + [("linux", sched.Result(c.lease_id, ok=True)) for c in linux],
    )
    assert [v.error for v in verdicts] == [None] * 5
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)
    started = [
        e for e in run_events(server, run_id) if e.type == runs_pb2.RUN_EVENT_TYPE_JOB_STARTED
    ]
    assert sorted(e.job_id for e in started) == ["l1", "l2", "p1", "p2", "p3"]


def test_reports_judged_together_are_judged_per_reporter(server: Running) -> None:
    wf = create_workflow(server, [job("a"), job("b"), job("c")])
    run_id = start_run(server, wf)
    alice, bob = claim_together(
        server, [ask("w-alice", max_jobs=2, owner="alice"), ask("w-bob", max_jobs=1, owner="bob")]
    )
    (a1, a2), (b1,) = alice, bob
    verdicts = report_together(
        server,
        [
            ("alice", sched.Result(a1.lease_id, ok=True)),
            ("alice", sched.Result(b1.lease_id, ok=True)),  # bob's lease: unknown to alice
            ("bob", sched.Result(b1.lease_id, ok=True)),
            ("bob", sched.Result(b1.lease_id, ok=True)),  # the second report of one lease
            ("alice", sched.Result(a2.lease_id, ok=False, error="boom")),
        ],
    )
    assert [v.error for v in verdicts] == [
        None,
        f"unknown lease {b1.lease_id!r}",
        None,
        "a result was already reported under this lease",
        None,
    ]
    states = {k: j.status for k, j in run_jobs(server, run_id).items()}
    assert states[a1.job["key"]] == states[b1.job["key"]] == jobs_pb2.JOB_STATE_SUCCEEDED
    assert states[a2.job["key"]] == jobs_pb2.JOB_STATE_FAILED
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_FAILED)


def test_concurrent_claimers_with_different_labels_each_get_only_what_they_may_run(
    server: Running,
) -> None:
    # Enough plain jobs for plain callers even when gpu callers take plain ones.
    jobs = [job(f"p{i}") for i in range(32)] + [job(f"g{i}", labels=["gpu"]) for i in range(32)]
    run_id = start_run(server, create_workflow(server, jobs))
    # 16 callers at once: plain ones and gpu ones, grouped as they arrive.
    labels: list[tuple[str, ...]] = [("gpu",) if i % 2 else () for i in range(16)]
    got = race(16, lambda i: [must_claim(server, uid("w"), labels[i]) for _ in range(2)])
    seen: list[str] = []
    for i, assignments in enumerate(got):
        for a in assignments:
            seen.append(a.job.job_id)
            if not labels[i]:
                assert a.job.job_id.startswith("p"), (labels[i], a.job.job_id)
            complete(server, a.lease.lease_id)
    assert len(seen) == len(set(seen)) == 32
    for _ in range(32):
        complete(server, must_claim(server, uid("w"), ("gpu",)).lease.lease_id)
    wait_run_state(server, run_id, runs_pb2.RUN_STATE_SUCCEEDED)
