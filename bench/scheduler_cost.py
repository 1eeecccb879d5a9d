"""Per-job scheduler cost by DAG size and shape, on SQLite and PostgreSQL.

Drives the service layer in-process (no RPC, no worker): create a run, then
repeatedly ``Service.claim(max_jobs=500)`` and ``Service.report`` (success)
until every job is done. Timed from the run's creation to the last report;
printed as microseconds per job for DAGs of 100 and 10,000 jobs:

- ``chain``: each job needs the previous one (one claim + report per job);
- ``fan-out``: one root, N-2 children of the root, one join needing them all.

The figure that matters is the ratio 10,000 : 100 of the per-job cost (a
scheduler without per-job rescans of the DAG keeps it near 1).

    python bench/scheduler_cost.py [--backend both] [--sizes 100 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from _common import (
    Backend,
    Figure,
    backends_of,
    database,
    exit_on_sigterm,
    log,
    print_figures,
    short_id,
    workdir,
)

BENCH = "scheduler"
ORG = "default"
WORKER = "bench-scheduler"
SIZES = (100, 10_000)
# Small DAGs are measured a few times (median): one drive is over in ~1 s.
SMALL_REPEATS = 5
RATIO_TARGET = "<= 1.3"
# A bound on one drive (it is also bounded by its job count). A chain costs
# two transactions per job: a 10,000-job chain would take minutes, so past
# this it is cut short and its per-job cost extrapolated from the rounds done
# (the note says so, with the drift of the round time from start to end).
MAX_DRIVE_SECS = 45.0
Shape = Literal["chain", "fan-out"]
SHAPES: tuple[Shape, ...] = ("chain", "fan-out")


def chain(n: int) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [{"id": "j00000", "command": "noop"}]
    jobs += [
        {"id": f"j{i:05d}", "command": "noop", "depends_on": [f"j{i - 1:05d}"]} for i in range(1, n)
    ]
    return {"name": f"chain-{n}", "jobs": jobs}


def fan_out(n: int) -> dict[str, Any]:
    leaves = [f"j{i:05d}" for i in range(1, n - 1)]
    jobs: list[dict[str, Any]] = [{"id": "root", "command": "noop"}]
    jobs += [{"id": leaf, "command": "noop", "depends_on": ["root"]} for leaf in leaves]
    jobs.append({"id": "join", "command": "noop", "depends_on": leaves})
    return {"name": f"fan-out-{n}", "jobs": jobs}


BUILDERS: dict[Shape, Callable[[int], dict[str, Any]]] = {"chain": chain, "fan-out": fan_out}


@dataclass
class Drive:
    jobs: int
    create_s: float
    # Seconds of each claim + report round, and the jobs it finished.
    rounds: list[tuple[float, int]]

    @property
    def done(self) -> int:
        return sum(n for _, n in self.rounds)

    @property
    def finished(self) -> bool:
        return self.done == self.jobs

    @property
    def seconds(self) -> float:
        return self.create_s + sum(t for t, _ in self.rounds)

    @property
    def us_per_job(self) -> float:
        """Per job, create-run included; for a drive cut short by its time
        cap, the rounds' cost per job so far stands in for the rest."""
        rounds_s = sum(t for t, _ in self.rounds)
        return (self.create_s + rounds_s * self.jobs / max(1, self.done)) * 1e6 / self.jobs

    def drift(self) -> float:
        """Mean round time of the last tenth of the rounds over the first tenth."""
        k = max(1, len(self.rounds) // 10)
        first = statistics.fmean(t for t, _ in self.rounds[:k])
        last = statistics.fmean(t for t, _ in self.rounds[-k:])
        return last / first


def drive(service: Any, body: dict[str, Any], n: int, *, max_secs: float = MAX_DRIVE_SECS) -> Drive:
    """Runs one workflow through claim/report until it is finished, or until
    ``max_secs`` have passed (then the run is cancelled)."""
    from google.protobuf import json_format

    from trellis.server.core.principal import Principal, PrincipalKind
    from trellis.server.engine import Result, RunRequest
    from trellis.v1 import runs_pb2, workflows_pb2

    caller = Principal(ORG, f"machine:{WORKER}", PrincipalKind.MACHINE, frozenset())
    wf_id = f"sched-{short_id()}"
    workflow = json_format.ParseDict({**body, "id": wf_id}, workflows_pb2.Workflow())
    service.create_workflow(caller, workflows_pb2.CreateWorkflowRequest(workflow=workflow))

    clock = time.perf_counter
    started = clock()
    run = service.run_workflow(caller, RunRequest(wf_id))
    result = Drive(n, clock() - started, [])
    deadline = started + max_secs
    done = 0
    # A DAG of n jobs needs at most n rounds.
    for _ in range(n):
        t = clock()
        got = service.claim(caller, WORKER, [], max_jobs=500)
        if not got:
            raise AssertionError(f"{wf_id}: nothing to claim after {done} of {n} jobs")
        verdicts = service.report(caller, [Result(a.lease.lease_id, ok=True) for a in got])
        result.rounds.append((clock() - t, len(got)))
        refused = [v for v in verdicts if v.error]
        if refused:
            raise AssertionError(f"{wf_id}: completions refused: {refused[:3]}")
        done += len(got)
        if done >= n or clock() > deadline:
            break

    if not result.finished:
        service.cancel_run(caller, run.run_id)
        return result
    listed = service.list_runs(caller, workflow_id=wf_id).runs
    if not listed or listed[0].state != runs_pb2.RUN_STATE_SUCCEEDED:
        raise AssertionError(f"{wf_id}: all {n} jobs done but the run is {listed[:1]}")
    return result


def measure(
    backend: Backend,
    *,
    sizes: tuple[int, ...] = SIZES,
    shapes: tuple[Shape, ...] = SHAPES,
    max_secs: float = MAX_DRIVE_SECS,
) -> list[Figure]:
    from trellis.server.core.db import connect, upgrade_schema
    from trellis.server.engine import Notifier, Service

    figures: list[Figure] = []
    with workdir() as wd, database(backend, wd) as url:
        db = connect(url)
        notifier = Notifier()
        try:
            upgrade_schema(db)
            service = Service(db, notifier)
            service.start()
            # Warm-up: statement caches, connection pool.
            for shape in shapes:
                drive(service, BUILDERS[shape](50), 50, max_secs=max_secs)
            for shape in shapes:
                per_job: dict[int, float] = {}
                for n in sizes:
                    repeats = SMALL_REPEATS if n <= 1000 else 1
                    drives = [
                        drive(service, BUILDERS[shape](n), n, max_secs=max_secs)
                        for _ in range(repeats)
                    ]
                    per_job[n] = statistics.median(d.us_per_job for d in drives)
                    d = drives[0]
                    note = f"{len(d.rounds)} claim+report rounds"
                    if repeats > 1:
                        note += f", median of {repeats}"
                    if not d.finished:
                        note = (
                            f"capped at {max_secs:.0f} s: {d.done:,} of {n:,} jobs, rest "
                            f"extrapolated; round time drift x{d.drift():.2f}"
                        )
                    elif shape == "chain" and len(d.rounds) >= 1000:
                        note += f"; round time drift x{d.drift():.2f}"
                    log(
                        f"{BENCH}/{backend}: {shape} {n}: {per_job[n]:,.0f} us/job "
                        f"({d.seconds:.2f} s, create-run {d.create_s:.2f} s, "
                        f"{d.done} of {n} jobs in {len(d.rounds)} rounds)"
                    )
                    figures.append(
                        Figure(BENCH, backend, f"{shape} {n:,}", per_job[n], "us/job", note=note)
                    )
                small, large = min(sizes), max(sizes)
                if small != large:
                    figures.append(
                        Figure(
                            BENCH,
                            backend,
                            f"{shape} ratio {large:,}:{small}",
                            per_job[large] / per_job[small],
                            "x",
                            RATIO_TARGET,
                            "per-job cost, large DAG / small DAG",
                        )
                    )
        finally:
            notifier.close()
            db.dispose()
    return figures


def run(
    backends: list[Backend],
    *,
    sizes: tuple[int, ...] = SIZES,
    shapes: tuple[Shape, ...] = SHAPES,
    max_secs: float = MAX_DRIVE_SECS,
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(measure(backend, sizes=sizes, shapes=shapes, max_secs=max_secs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--shape", default="both", choices=["chain", "fan-out", "both"])
    parser.add_argument(
        "--max-secs",
        type=float,
        default=MAX_DRIVE_SECS,
        help="cap on one drive (a longer one is extrapolated); e.g. 900 for full chains",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    shapes: tuple[Shape, ...] = SHAPES if args.shape == "both" else (args.shape,)
    started = time.monotonic()
    figures = run(
        backends_of(args.backend), sizes=tuple(args.sizes), shapes=shapes, max_secs=args.max_secs
    )
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
