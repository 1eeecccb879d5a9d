"""End-to-end throughput over gRPC with SDK workers, on SQLite and PostgreSQL.

A workflow of N independent no-op jobs; two worker processes built on
``trellis.worker_sdk.Worker`` (a "noop" handler that returns None), connected
and idle before the run starts. Measured from just before RunWorkflow (run
creation included) to the run's ``finished_at_ms`` (the commit of the last
completion). Each handler also records its job's enqueue->start latency: the
assignment's ``enqueued_at_ms`` to the worker's wall clock as the handler
starts.

    python bench/throughput.py [--jobs 5000] [--backend both] [--slots 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import _sdk_worker
from _common import (
    Backend,
    Children,
    Figure,
    backends_of,
    create_workflow,
    database,
    exit_on_sigterm,
    log,
    ms_now,
    noop_workflow,
    percentile,
    print_figures,
    profiled,
    run_workflow,
    server,
    short_id,
    verify_run,
    wait_run_finished,
    wait_workers_idle,
    workdir,
)

BENCH = "throughput"
DEFAULT_JOBS = 5000
# The fastest of a sweep of 64/128/256 on the reference machine: the server
# claims up to the free slots in one transaction, so bigger batches amortize
# its per-transaction cost (512 is faster still).
DEFAULT_SLOTS = 256
DEFAULT_REPEATS = 3
N_WORKERS = 2
WARMUP_JOBS = 200
TARGETS: dict[Backend, str] = {"sqlite": ">= 2500", "postgres": ">= 1500"}


@dataclass
class _Run:
    rate: float
    elapsed_s: float
    latencies: list[float]


def measure(
    backend: Backend,
    *,
    jobs: int,
    slots: int,
    repeats: int = DEFAULT_REPEATS,
    profile: Path | None = None,
) -> list[Figure]:
    """Fresh database and server; warm-up; then ``repeats`` runs of N jobs
    (the median run is reported)."""
    with (
        workdir() as wd,
        database(backend, wd) as url,
        server(url, wd) as srv,
        Children() as kids,
    ):
        wf_id, warm_id = f"tp-{short_id()}", f"warm-{short_id()}"
        create_workflow(srv.channel, noop_workflow(jobs, name="throughput"), wf_id)
        create_workflow(
            srv.channel, noop_workflow(WARMUP_JOBS, name="warm-up", command="warm"), warm_id
        )

        worker_ids = [f"tp-w{i}-{short_id()}" for i in range(N_WORKERS)]
        pool = _sdk_worker.start_pool(
            kids,
            srv,
            [
                _sdk_worker.WorkerConfig(srv.grpc_target, worker_id, slots, srv.token, expect=jobs)
                for worker_id in worker_ids
            ],
        )

        # Warm-up: connection pools, statement caches, slot threads.
        warm = run_workflow(srv.channel, warm_id)
        wait_run_finished(srv.channel, warm_id, warm.run_id, timeout=60)

        log(f"{BENCH}/{backend}: {repeats} x {jobs} jobs, {N_WORKERS} workers x {slots} slots")
        pids = {"server": srv.pid()} | {f"worker{i}": p.pid or 0 for i, p in enumerate(kids.procs)}
        spy_dir = profile / f"throughput-{backend}-{slots}" if profile else None
        timed: list[tuple[str, float, int]] = []  # run id, t0 (epoch ms), finished_at_ms
        with profiled(pids, spy_dir):
            for _ in range(repeats):
                wait_workers_idle(srv.channel, worker_ids, timeout=30)
                with pool.done.get_lock():
                    pool.done.value = 0
                pool.all_done.clear()
                t0 = ms_now()
                run = run_workflow(srv.channel, wf_id)
                budget = max(60.0, jobs / 100.0)
                if not pool.all_done.wait(budget):
                    kids.check_alive()
                    raise TimeoutError(
                        f"{pool.done.value} of {jobs} jobs ran within {budget:.0f} s"
                    )
                finished = wait_run_finished(
                    srv.channel, wf_id, run.run_id, timeout=30, interval=0.02
                )
                timed.append((run.run_id, t0, finished.finished_at.ToMilliseconds()))

        pool.stop.set()
        handled: list[tuple[str, str, float]] = []
        for _ in worker_ids:
            handled.extend(pool.results.get(timeout=60)[1])
        kids.join(30)
        runs: list[_Run] = []
        for run_id, t0, finished_at_ms in timed:
            mine = [h for h in handled if h[0] == run_id]
            verify_run(srv.channel, run_id, jobs, handled=[job for _, job, _ in mine])
            elapsed_s = (finished_at_ms - t0) / 1000.0
            runs.append(_Run(jobs / elapsed_s, elapsed_s, [lat for _, _, lat in mine]))
            log(f"{BENCH}/{backend}: {jobs / elapsed_s:,.0f} jobs/s ({elapsed_s:.2f} s)")

    median = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    setting = f"{N_WORKERS} SDK workers x {slots} slots, N={jobs}"
    if repeats > 1:
        in_order = ", ".join(f"{r.rate:,.0f}" for r in runs)
        setting += f"; median of {repeats} runs in a row: {in_order}"
    return [
        Figure(BENCH, backend, "gRPC end-to-end", median.rate, "jobs/s", TARGETS[backend], setting),
        Figure(
            BENCH,
            backend,
            "enqueue->start p50 (under load)",
            percentile(median.latencies, 50),
            "ms",
            note="enqueued_at_ms -> handler; all N enqueued at once",
        ),
        Figure(
            BENCH,
            backend,
            "enqueue->start p99 (under load)",
            percentile(median.latencies, 99),
            "ms",
        ),
    ]


def run(
    backends: list[Backend],
    *,
    jobs: int = DEFAULT_JOBS,
    slots: int = DEFAULT_SLOTS,
    repeats: int = DEFAULT_REPEATS,
    profile: Path | None = None,
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(measure(backend, jobs=jobs, slots=slots, repeats=repeats, profile=profile))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument(
        "--slots", type=int, nargs="+", default=[DEFAULT_SLOTS], help="one or more (a sweep)"
    )
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", type=Path, help="record py-spy collapsed stacks here")
    args = parser.parse_args()
    exit_on_sigterm()
    figures: list[Figure] = []
    started = time.monotonic()
    for slots in args.slots:
        figures.extend(
            run(
                backends_of(args.backend),
                jobs=args.jobs,
                slots=slots,
                repeats=args.repeats,
                profile=args.profile,
            )
        )
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
