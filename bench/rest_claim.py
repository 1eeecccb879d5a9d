"""The REST claim loop, on SQLite and PostgreSQL.

Two worker processes with a few threads each; every thread is a REST worker
of its own (its own worker id) on one keep-alive HTTP connection
(``http.client``), looping until the queue is empty:

- ``single``: POST /api/jobs/claim, then POST /api/jobs/{lease}/complete;
- ``batch``: POST /api/jobs/claim-batch (max_jobs 50), then one
  POST /api/jobs/results completing them all.

The run of N no-op jobs is created first; measured from the moment the
threads are released to the run's ``finished_at_ms`` (the commit of the last
completion).

    python bench/rest_claim.py [--jobs 5000] [--backend both] [--threads 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing.queues
import multiprocessing.synchronize
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from _common import (
    LOOPBACK,
    MP,
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
    print_figures,
    profiled,
    run_workflow,
    server,
    short_id,
    verify_run,
    wait_run_finished,
    workdir,
)

BENCH = "rest"
DEFAULT_JOBS = 5000
N_PROCS = 2
DEFAULT_THREADS = 4
BATCH = 50
TARGET = ">= 600"
# The single-job loop is slow (two requests per job): it is measured for at
# most this long, the jobs left are then drained untimed with claim-batch (so
# that every job is still checked to have run exactly once).
DEFAULT_CAP_SECS = 20.0
Mode = Literal["single", "batch"]
MAX_LIFETIME_SECS = 300.0


@dataclass
class ThreadResult:
    handled: list[str] = field(default_factory=list)
    requests: int = 0
    error: str = ""
    # When the loop ended (epoch ms).
    last_ms: float = 0.0


class _Http:
    """One keep-alive connection; JSON in, JSON out."""

    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
        self.conn.connect()
        self.requests = 0
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    def post(self, path: str, body: Any) -> Any:
        self.conn.request("POST", path, body=json.dumps(body), headers=self.headers)
        resp = self.conn.getresponse()
        data = resp.read()
        self.requests += 1
        if resp.status != 200:
            raise RuntimeError(f"POST {path}: {resp.status} {data[:300]!r}")
        return json.loads(data)


def _loop(http_: _Http, worker_id: str, mode: Mode, max_requests: int, cap: float) -> ThreadResult:
    """Claims and completes until the queue is empty or ``cap`` (monotonic) passes."""
    out = ThreadResult()
    try:
        while http_.requests < max_requests and time.monotonic() < cap:
            if mode == "single":
                got = http_.post("/api/jobs/claim", {"worker_id": worker_id})
                if got is None:
                    break
                http_.post(f"/api/jobs/{got['lease']['lease_id']}/complete", {})
                out.handled.append(got["job"]["job_id"])
                continue
            batch = http_.post("/api/jobs/claim-batch", {"worker_id": worker_id, "max_jobs": BATCH})
            assignments = batch.get("assignments") or []
            if not assignments:
                break
            results = [{"complete": {"lease_id": a["lease"]["lease_id"]}} for a in assignments]
            answer = http_.post("/api/jobs/results", {"results": results})
            refused = [s for s in answer["statuses"] if s.get("code", 0) != 0]
            if refused:
                raise RuntimeError(f"results refused: {refused[:3]}")
            out.handled.extend(a["job"]["job_id"] for a in assignments)
    except Exception as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    out.requests = http_.requests
    out.last_ms = time.time() * 1000.0
    return out


def worker_main(
    port: int,
    token: str,
    prefix: str,
    threads: int,
    mode: Mode,
    max_requests: int,
    cap_secs: float,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue[list[tuple[list[str], int, str, float]]],
) -> None:
    """A REST worker process: ``threads`` claim loops, released together by ``go``."""
    conns = [_Http(port, token) for _ in range(threads)]
    outs: list[ThreadResult] = [ThreadResult() for _ in range(threads)]

    def run(i: int) -> None:
        go.wait(MAX_LIFETIME_SECS)
        cap = time.monotonic() + min(cap_secs, MAX_LIFETIME_SECS)
        outs[i] = _loop(conns[i], f"{prefix}-t{i}", mode, max_requests, cap)

    pool = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    ready.set()
    for t in pool:
        t.join(MAX_LIFETIME_SECS * 2)
    for c in conns:
        c.conn.close()
    # Plain tuples: the class would not unpickle under another __main__.
    results.put([(o.handled, o.requests, o.error, o.last_ms) for o in outs])


def _drain(port: int, token: str, worker_id: str, max_rounds: int) -> list[str]:
    """Claims and completes what is left, in batches (untimed)."""
    http_ = _Http(port, token)
    try:
        out = _loop(http_, worker_id, "batch", 2 * max_rounds, time.monotonic() + 120.0)
    finally:
        http_.conn.close()
    if out.error:
        raise RuntimeError(f"draining the rest failed: {out.error}")
    return out.handled


def _variant(
    srv: Any,
    backend: Backend,
    mode: Mode,
    *,
    jobs: int,
    threads: int,
    cap_secs: float,
    profile: Path | None,
) -> Figure:
    wf_id = f"rest-{mode}-{short_id()}"
    create_workflow(srv.channel, noop_workflow(jobs, name=f"rest {mode}"), wf_id)
    run = run_workflow(srv.channel, wf_id)
    with Children() as kids:
        readies = [MP.Event() for _ in range(N_PROCS)]
        go = MP.Event()
        results: multiprocessing.queues.Queue[list[tuple[list[str], int, str, float]]] = MP.Queue()
        # Every job needs at most two requests; the rest is slack for the
        # final empty claims.
        max_requests = 2 * jobs + 10
        for i in range(N_PROCS):
            kids.start(
                worker_main,
                srv.rest_port,
                srv.token,
                f"rest-{mode}-p{i}-{short_id()}",
                threads,
                mode,
                max_requests,
                cap_secs,
                readies[i],
                go,
                results,
                name=f"rest-{mode}-{i}",
            )
        for ev in readies:
            if not ev.wait(60):
                kids.check_alive()
                raise TimeoutError("a REST worker process did not start within 60 s")
        log(f"{BENCH}/{backend}/{mode}: {jobs} jobs, {N_PROCS} processes x {threads} threads")
        pids = {"server": srv.pid()} | {f"worker{i}": p.pid or 0 for i, p in enumerate(kids.procs)}
        spy_dir = profile / f"rest-{backend}-{mode}" if profile else None
        with profiled(pids, spy_dir):
            t0 = ms_now()
            go.set()
            outs: list[ThreadResult] = []
            for _ in range(N_PROCS):
                outs.extend(ThreadResult(*o) for o in results.get(timeout=MAX_LIFETIME_SECS))
        kids.join(30)
    errors = [o.error for o in outs if o.error]
    if errors:
        raise RuntimeError(f"{BENCH}/{backend}/{mode}: {len(errors)} threads failed: {errors[:3]}")
    handled = [job for o in outs for job in o.handled]
    measured = len(handled)
    requests = sum(o.requests for o in outs)
    capped = measured < jobs
    if capped:
        # The loops stopped at the cap; their last completions end the window.
        elapsed_s = (max(o.last_ms for o in outs) - t0) / 1000.0
        handled += _drain(srv.rest_port, srv.token, f"rest-drain-{short_id()}", jobs)
    finished = wait_run_finished(srv.channel, wf_id, run.run_id, timeout=30)
    verify_run(srv.channel, run.run_id, jobs, handled=handled)
    if not capped:
        elapsed_s = (finished.finished_at.ToMilliseconds() - t0) / 1000.0
    rate = measured / elapsed_s
    log(
        f"{BENCH}/{backend}/{mode}: {rate:,.0f} jobs/s ({measured} jobs in {elapsed_s:.2f} s, "
        f"{requests} requests)"
    )
    if mode == "single":
        name, note = "claim + complete", f"{N_PROCS} procs x {threads} threads, keep-alive"
    else:
        name, note = f"claim-batch({BATCH}) + results", f"{requests / elapsed_s:,.0f} requests/s"
    if capped:
        note += f"; capped at {cap_secs:.0f} s: {measured:,} of {jobs:,} jobs (rest drained)"
    return Figure(BENCH, backend, name, rate, "jobs/s", TARGET, note)


def measure(
    backend: Backend,
    *,
    jobs: int,
    threads: int,
    modes: tuple[Mode, ...] = ("single", "batch"),
    cap_secs: float = DEFAULT_CAP_SECS,
    profile: Path | None = None,
) -> list[Figure]:
    with workdir() as wd, database(backend, wd) as url, server(url, wd) as srv:
        return [
            _variant(
                srv,
                backend,
                mode,
                jobs=jobs,
                threads=threads,
                cap_secs=cap_secs,
                profile=profile,
            )
            for mode in modes
        ]


def run(
    backends: list[Backend],
    *,
    jobs: int = DEFAULT_JOBS,
    threads: int = DEFAULT_THREADS,
    modes: tuple[Mode, ...] = ("single", "batch"),
    cap_secs: float = DEFAULT_CAP_SECS,
    profile: Path | None = None,
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(
            measure(
                backend,
                jobs=jobs,
                threads=threads,
                modes=modes,
                cap_secs=cap_secs,
                profile=profile,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="per process")
    parser.add_argument("--mode", default="both", choices=["single", "batch", "both"])
    parser.add_argument(
        "--cap-secs", type=float, default=DEFAULT_CAP_SECS, help="time cap of one loop"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", type=Path, help="record py-spy collapsed stacks here")
    args = parser.parse_args()
    exit_on_sigterm()
    started = time.monotonic()
    modes: tuple[Mode, ...] = ("single", "batch") if args.mode == "both" else (args.mode,)
    figures = run(
        backends_of(args.backend),
        jobs=args.jobs,
        threads=args.threads,
        modes=modes,
        cap_secs=args.cap_secs,
        profile=args.profile,
    )
    print_figures(figures, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
