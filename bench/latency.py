"""Enqueue->start latency with idle, connected SDK workers, on SQLite and PostgreSQL.

Two worker processes sit connected and idle on their assignment streams.
Then, one at a time (each run finishes before the next starts), a one-job
workflow is run: measured from just before the client's RunWorkflow call to
the moment the handler starts in a worker (``time.time()`` on both sides;
the worker sends its start time back through a multiprocessing Queue).

    python bench/latency.py [--iterations 300] [--backend both]
"""

from __future__ import annotations

import argparse
import queue
import time
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
    follow_run_to_finish,
    log,
    ms_now,
    noop_workflow,
    percentile,
    print_figures,
    profiled,
    run_workflow,
    server,
    short_id,
    workdir,
)

BENCH = "latency"
DEFAULT_ITERATIONS = 300
WARMUP_ITERATIONS = 20
N_WORKERS = 2
SLOTS = 4
P50_TARGET, P99_TARGET = "<= 3", "<= 10"


def measure(
    backend: Backend,
    *,
    iterations: int,
    workers: int = N_WORKERS,
    profile: Path | None = None,
) -> list[Figure]:
    with (
        workdir() as wd,
        database(backend, wd) as url,
        server(url, wd) as srv,
        Children() as kids,
    ):
        wf_id = f"lat-{short_id()}"
        create_workflow(srv.channel, noop_workflow(1, name="latency"), wf_id)

        worker_ids = [f"lat-w{i}-{short_id()}" for i in range(workers)]
        pool = _sdk_worker.start_pool(
            kids,
            srv,
            [
                _sdk_worker.WorkerConfig(
                    srv.grpc_target, worker_id, SLOTS, srv.token, report_starts=True
                )
                for worker_id in worker_ids
            ],
        )

        log(f"{BENCH}/{backend}: {iterations} sequential one-job runs")
        samples: list[float] = []
        calls: list[float] = []  # the RunWorkflow call itself
        dispatch: list[float] = []  # the job's enqueued_at_ms -> handler start
        pids = {"server": srv.pid()} | {f"worker{i}": p.pid or 0 for i, p in enumerate(kids.procs)}
        spy_dir = profile / f"latency-{backend}" if profile else None
        deadline = time.monotonic() + max(120.0, iterations * 0.5)
        with profiled(pids, spy_dir):
            for i in range(WARMUP_ITERATIONS + iterations):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{BENCH}: only {i} iterations within the time bound")
                t0 = ms_now()
                run = run_workflow(srv.channel, wf_id)
                t1 = ms_now()
                try:
                    started, enqueued = pool.starts.get(timeout=30)
                except queue.Empty:
                    kids.check_alive()
                    raise TimeoutError(f"iteration {i}: the job did not start in 30 s") from None
                if i >= WARMUP_ITERATIONS:
                    samples.append(started - t0)
                    calls.append(t1 - t0)
                    dispatch.append(started - enqueued)
                follow_run_to_finish(srv.channel, run.run_id, timeout=30)
        pool.stop.set()
        for _ in worker_ids:
            pool.results.get(timeout=60)
        kids.join(30)
        if not pool.starts.empty():
            raise AssertionError("a job started more than once")

    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    log(f"{BENCH}/{backend}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(samples):.2f} ms")
    note = f"{workers} idle SDK workers, {iterations} sequential runs"
    return [
        Figure(BENCH, backend, "idle enqueue->start p50", p50, "ms", P50_TARGET, note),
        Figure(BENCH, backend, "idle enqueue->start p99", p99, "ms", P99_TARGET),
        Figure(
            BENCH,
            backend,
            "  of which RunWorkflow call p50",
            percentile(calls, 50),
            "ms",
            note="client call -> reply",
        ),
        Figure(
            BENCH,
            backend,
            "  enqueued_at->handler p50",
            percentile(dispatch, 50),
            "ms",
            note="server enqueue time -> handler start",
        ),
    ]


def run(
    backends: list[Backend],
    *,
    iterations: int = DEFAULT_ITERATIONS,
    workers: int = N_WORKERS,
    profile: Path | None = None,
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(measure(backend, iterations=iterations, workers=workers, profile=profile))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--workers", type=int, default=N_WORKERS, help="idle worker processes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", type=Path, help="record py-spy collapsed stacks here")
    args = parser.parse_args()
    exit_on_sigterm()
    started = time.monotonic()
    figures = run(
        backends_of(args.backend),
        iterations=args.iterations,
        workers=args.workers,
        profile=args.profile,
    )
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
