"""Sustained load on SQLite: the write-ahead log's size beside the throughput.

A client starts runs of a small workflow (a diamond of no-op jobs: one, then
the middle ones side by side, then one), one RunWorkflow call each, keeping a
window of runs unfinished; SDK worker processes drain them. This goes on for
``--seconds`` while the size of the SQLite file's WAL is sampled every 50 ms.
Printed: runs/s and jobs/s over the whole period and per bucket (a minute by
default; from each run's ``finished_at_ms``), so that a decay shows; the
WAL's peak, overall and per bucket; its size a few seconds after the load and
after a clean stop; the database file's size. The reference is SQLite's own
commit rate (one-row INSERT transactions, WAL, ``synchronous=NORMAL``, in this
process on the same disk), measured before and after the load: runs per
thousand raw commits can be compared across days and machines.

    python bench/sustained.py [--seconds 600] [--jobs-per-run 4] [--workers 1]
                              [--slots 64] [--in-flight 64] [--bucket-secs 60] [--json]
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _sdk_worker
from _common import (
    Children,
    Figure,
    create_workflow,
    database,
    exit_on_sigterm,
    iter_runs,
    log,
    ms_now,
    print_figures,
    raw_commit_rate,
    run_workflow,
    server,
    short_id,
    wait_for,
    workdir,
)

BENCH = "sustained"
DEFAULT_SECONDS = 600.0
DEFAULT_JOBS_PER_RUN = 4
DEFAULT_WORKERS = 1
DEFAULT_SLOTS = 64
DEFAULT_IN_FLIGHT = 64
DEFAULT_BUCKET_SECS = 60.0
WARMUP_RUNS = 20
SAMPLE_SECS = 0.05
# How long after the last run the WAL is looked at again.
IDLE_SECS = 3.0
REFERENCE_SECS = 3.0
WAL_TARGET_MIB = "<= 64"
MIB = 1024 * 1024


def diamond(n_jobs: int) -> dict[str, Any]:
    """A workflow body of ``n_jobs`` no-op jobs: a first one, the middle ones
    after it, a last one after all of them."""
    if n_jobs < 3:
        raise SystemExit("--jobs-per-run: at least 3 (first, middle, last)")
    middle = [f"m{i:03d}" for i in range(n_jobs - 2)]
    jobs: list[dict[str, Any]] = [{"id": "first", "command": "noop"}]
    jobs += [{"id": m, "command": "noop", "depends_on": ["first"]} for m in middle]
    jobs.append({"id": "last", "command": "noop", "depends_on": middle})
    return {"name": "sustained", "jobs": jobs}


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class WalSampler:
    """Samples the size of a WAL file on a thread of its own."""

    path: Path
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wal-sampler", daemon=True)

    def start(self) -> WalSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECS):
            self.samples.append((ms_now(), file_size(self.path)))

    def peak(self, start_ms: float = 0.0, end_ms: float = float("inf")) -> int:
        return max((s for t, s in self.samples if start_ms <= t < end_ms), default=0)


@dataclass
class Load:
    """What the load phase measured."""

    t0_ms: float
    t1_ms: float
    started: int
    runs: list[Any]
    handled: list[tuple[str, str, float]]
    wal: WalSampler
    wal_idle: int


def _drive(
    srv: Any,
    kids: Children,
    wf_id: str,
    wal: WalSampler,
    *,
    seconds: float,
    jobs_per_run: int,
    workers: int,
    slots: int,
    in_flight: int,
) -> Load:
    lifetime = seconds + 600.0
    worker_ids = [f"sus-w{i}-{short_id()}" for i in range(workers)]
    pool = _sdk_worker.start_pool(
        kids,
        srv,
        [
            _sdk_worker.WorkerConfig(srv.grpc_target, w, slots, srv.token, lifetime_secs=lifetime)
            for w in worker_ids
        ],
    )

    def finished_runs() -> int:
        return int(pool.done.value) // jobs_per_run

    # Warm-up: connection pools, statement caches, slot threads.
    for _ in range(WARMUP_RUNS):
        run_workflow(srv.channel, wf_id)
    wait_for(
        lambda: pool.done.value >= WARMUP_RUNS * jobs_per_run, timeout=120, what="warm-up runs"
    )
    with pool.done.get_lock():
        pool.done.value = 0

    log(
        f"{BENCH}: {seconds:.0f} s of {jobs_per_run}-job runs, <= {in_flight} in flight, "
        f"{workers} SDK worker(s) x {slots} slots"
    )
    started = 0
    t0 = ms_now()
    deadline = time.monotonic() + seconds
    next_log = time.monotonic() + 30.0
    while (now := time.monotonic()) < deadline:
        if started - finished_runs() < in_flight:
            run_workflow(srv.channel, wf_id)
            started += 1
        else:
            time.sleep(0.001)
        if now >= next_log:
            next_log = now + 30.0
            kids.check_alive()
            log(
                f"{BENCH}: {started} runs started, WAL {file_size(wal.path) / MIB:.1f} MiB "
                f"(peak {wal.peak() / MIB:.1f})"
            )
    t1 = ms_now()
    wait_for(
        lambda: pool.done.value >= started * jobs_per_run,
        timeout=300,
        interval=0.05,
        what=f"the last of {started} runs",
    )
    time.sleep(IDLE_SECS)
    wal_idle = file_size(wal.path)

    pool.stop.set()
    handled: list[tuple[str, str, float]] = []
    for _ in worker_ids:
        handled.extend(pool.results.get(timeout=120)[1])
    kids.join(30)
    runs = list(iter_runs(srv.channel, wf_id))
    # The warm-up runs are not part of the load.
    skip = {
        r.run_id for r in sorted(runs, key=lambda r: r.created_at.ToMilliseconds())[:WARMUP_RUNS]
    }
    handled = [h for h in handled if h[0] not in skip]
    return Load(t0, t1, started, [r for r in runs if r.run_id not in skip], handled, wal, wal_idle)


def _verify(load: Load, jobs_per_run: int) -> None:
    from trellis.v1 import runs_pb2

    problems = []
    if len(load.runs) != load.started:
        problems.append(f"{len(load.runs)} runs listed, {load.started} started")
    states = Counter(runs_pb2.RunState.Name(r.state) for r in load.runs)
    if set(states) != {"RUN_STATE_SUCCEEDED"}:
        problems.append(f"run states {dict(states)}")
    pairs = [(run_id, job_id) for run_id, job_id, _ in load.handled]
    if len(pairs) != load.started * jobs_per_run:
        problems.append(f"{len(pairs)} handler starts for {load.started * jobs_per_run} jobs")
    if len(set(pairs)) != len(pairs):
        problems.append(f"{len(pairs) - len(set(pairs))} jobs ran more than once")
    if problems:
        raise AssertionError(f"{BENCH}: " + "; ".join(problems))


def measure(
    *,
    seconds: float = DEFAULT_SECONDS,
    jobs_per_run: int = DEFAULT_JOBS_PER_RUN,
    workers: int = DEFAULT_WORKERS,
    slots: int = DEFAULT_SLOTS,
    in_flight: int = DEFAULT_IN_FLIGHT,
    bucket_secs: float = DEFAULT_BUCKET_SECS,
) -> list[Figure]:
    with workdir() as wd, database("sqlite", wd) as url:
        db_file = Path(url.removeprefix("sqlite:///"))
        wal = WalSampler(Path(f"{db_file}-wal"))
        ref_before = raw_commit_rate(wd, REFERENCE_SECS)
        log(f"{BENCH}: reference {ref_before:,.0f} raw SQLite commits/s")
        with server(url, wd) as srv, Children() as kids:
            wf_id = f"sus-{short_id()}"
            create_workflow(srv.channel, diamond(jobs_per_run), wf_id)
            wal.start()
            try:
                load = _drive(
                    srv,
                    kids,
                    wf_id,
                    wal,
                    seconds=seconds,
                    jobs_per_run=jobs_per_run,
                    workers=workers,
                    slots=slots,
                    in_flight=in_flight,
                )
            finally:
                wal.stop()
            _verify(load, jobs_per_run)
        wal_stopped = file_size(wal.path)
        db_bytes = file_size(db_file)
        ref_after = raw_commit_rate(wd, REFERENCE_SECS)
        log(f"{BENCH}: reference {ref_after:,.0f} raw SQLite commits/s")
    return _figures(
        load,
        jobs_per_run=jobs_per_run,
        bucket_secs=bucket_secs,
        setting=f"{jobs_per_run}-job diamond runs, <= {in_flight} in flight, "
        f"{workers} SDK worker(s) x {slots} slots, {seconds:.0f} s",
        reference=(ref_before, ref_after),
        wal_stopped=wal_stopped,
        db_bytes=db_bytes,
    )


def _figures(
    load: Load,
    *,
    jobs_per_run: int,
    bucket_secs: float,
    setting: str,
    reference: tuple[float, float],
    wal_stopped: int,
    db_bytes: int,
) -> list[Figure]:
    span_ms = load.t1_ms - load.t0_ms
    ends = (r.finished_at.ToMilliseconds() for r in load.runs)
    finished = [ms for ms in ends if load.t0_ms <= ms < load.t1_ms]
    runs_per_s = len(finished) / (span_ms / 1000.0)

    def fig(name: str, value: float, unit: str, target: str = "", note: str = "") -> Figure:
        return Figure(BENCH, "sqlite", name, value, unit, target, note)

    out = [
        fig("runs/s, whole period", runs_per_s, "runs/s", note=setting),
        fig("jobs/s, whole period", runs_per_s * jobs_per_run, "jobs/s"),
    ]
    bucket_ms = bucket_secs * 1000.0
    rates: list[float] = []
    # A remainder under a tenth of a bucket joins the last one.
    n_buckets = max(1, math.ceil(span_ms / bucket_ms - 0.1))
    for i in range(n_buckets):
        start = load.t0_ms + i * bucket_ms
        end = load.t1_ms if i == n_buckets - 1 else start + bucket_ms
        n = sum(1 for f in finished if start <= f < end)
        rate = n / ((end - start) / 1000.0)
        rates.append(rate)
        a, b = (start - load.t0_ms) / 1000.0, (end - load.t0_ms) / 1000.0
        out.append(
            fig(
                f"  runs/s, {a:.0f}-{b:.0f} s",
                rate,
                "runs/s",
                note=f"{rate * jobs_per_run:,.0f} jobs/s; "
                f"WAL peak {load.wal.peak(start, end) / MIB:.1f} MiB",
            )
        )
    if len(rates) > 1 and rates[0] > 0:
        out.append(fig("  last bucket / first", rates[-1] / rates[0], "ratio"))
    out += [
        fig(
            "WAL peak",
            load.wal.peak(load.t0_ms, load.t1_ms) / MIB,
            "MiB",
            WAL_TARGET_MIB,
            f"sampled every {SAMPLE_SECS * 1000:.0f} ms",
        ),
        fig(f"WAL {IDLE_SECS:.0f} s after the load", load.wal_idle / MIB, "MiB"),
        fig("WAL after a clean stop", wal_stopped / MIB, "MiB"),
        fig("database file", db_bytes / MIB, "MiB"),
    ]
    ref = sum(reference) / 2
    out += [
        fig(
            "SQLite raw commits/s (reference)",
            ref,
            "commits/s",
            note=f"before {reference[0]:,.0f}, after {reference[1]:,.0f}",
        ),
        fig("runs per 1,000 raw commits", runs_per_s / ref * 1000.0, "runs"),
    ]
    return out


def run(*, seconds: float = DEFAULT_SECONDS) -> list[Figure]:
    return measure(seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--jobs-per-run", type=int, default=DEFAULT_JOBS_PER_RUN)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--slots", type=int, default=DEFAULT_SLOTS)
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT)
    parser.add_argument("--bucket-secs", type=float, default=DEFAULT_BUCKET_SECS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()
    started = time.monotonic()
    figures = measure(
        seconds=args.seconds,
        jobs_per_run=args.jobs_per_run,
        workers=args.workers,
        slots=args.slots,
        in_flight=args.in_flight,
        bucket_secs=args.bucket_secs,
    )
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s (load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
