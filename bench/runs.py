"""Runs as tasks: many one-job runs started and drained, on SQLite and PostgreSQL.

The workload of a task queue: N units of work, each one run of a one-job
workflow (a no-op handler), drained by one SDK worker process with 64 slots.
Each repeat measures, on one server:

- single: N ``RunWorkflow`` calls in a row from one client thread, no
  worker connected, so that enqueueing is measured alone; then the worker
  starts and drains them. The reference: a bare gRPC unary echo server (a
  generic handler, bytes in and out, in a child process like the server)
  called as many times from the same thread over the same kind of channel
  (no options, the same token-sending interceptor), with the serialized
  RunWorkflow request as its payload, in slices of 250 calls alternating
  with those of RunWorkflow, so that both get the same share of a machine
  that others may be using; and the database's own durable one-row commits
  in a row (a sequential start is one call and one commit);
- bulk: the same N with ``BatchRunWorkflows`` of 100 requests each, then
  drained by a fresh worker (n/a when the server answers UNIMPLEMENTED);
- parallel: the same N ``RunWorkflow`` calls from 8 client threads at once
  (the concurrent starts that share transactions), then drained and checked;
- idle: with a worker connected and idle, sequential ``RunWorkflow`` calls,
  each waiting for its run to finish; enqueue->start from just before the
  call to the handler's start, as ``latency.py`` measures it.

Drain is timed from the moment the worker's assignment stream is open (the
SDK's "connected" log line, relayed to the orchestrator) to the last run's
``finished_at``; the worker process's start-up is not part of it. Requests
are built before the clock starts, for echo and Trellis alike. Every run is
checked to have succeeded, and its job to have been handled exactly once.
With ``--inputs`` the workflow declares two inputs and every run gives them
(each answer must echo them back); without, it declares none.

    python bench/runs.py [--runs 5000] [--backend both] [--repeats 2]
                         [--inputs] [--json] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing.queues
import queue
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import _sdk_worker
import grpc
from _common import (
    LOOPBACK,
    MP,
    Backend,
    Children,
    Figure,
    ServerProc,
    backends_of,
    create_workflow,
    database,
    exit_on_sigterm,
    follow_run_to_finish,
    iter_runs,
    log,
    ms_now,
    percentile,
    print_figures,
    profiled,
    raw_commit_rate,
    server,
    short_id,
    stub,
    workdir,
)

BENCH = "runs"
DEFAULT_RUNS = 5000
DEFAULT_REPEATS = 2
SLOTS = 64
BATCH = 100
# The concurrent starts of the parallel phase: client threads on one channel.
CLIENT_THREADS = 8
IDLE_ITERATIONS = 300
IDLE_WARMUP = 20
# Warm-up before the first repeat (connection pools, statement caches): runs
# started one call each and one batch, cancelled before any worker connects.
WARMUP_RUNS = 50
ECHO_WARMUP = 200
# RunWorkflow calls and echo calls alternate in slices of this many, so that
# both get the same share of a machine that others may be using meanwhile.
ECHO_SLICE = 250
CALL_TIMEOUT = 120.0
ECHO_SERVICE, ECHO_METHOD = "trellis.bench.Echo", "Echo"


@dataclass(frozen=True)
class Targets:
    single_pct_of_echo: str
    bulk: str
    drain: str
    idle_p50: str
    idle_p99: str


TARGETS: dict[Backend, Targets] = {
    "sqlite": Targets(">= 70", ">= 10000", ">= 9000", "<= 2", "<= 10"),
    "postgres": Targets(">= 50", ">= 5000", ">= 6000", "<= 3", "<= 10"),
}


# --------------------------------------------------------------------------- echo


def _echo_server(ports: multiprocessing.queues.Queue[int], lifetime_secs: float) -> None:
    """A bare gRPC server: one generic unary method answering its request's
    bytes, no interceptors. Lives until killed (or ``lifetime_secs``)."""
    from concurrent import futures

    def echo(request: bytes, _context: grpc.ServicerContext) -> bytes:
        return request

    # No (de)serializers: the handler sees and answers raw bytes.
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {ECHO_METHOD: grpc.unary_unary_rpc_method_handler(echo)}
    )
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    srv.add_generic_rpc_handlers((handler,))
    port = srv.add_insecure_port(f"{LOOPBACK}:0")
    srv.start()
    ports.put(port)
    srv.wait_for_termination(lifetime_secs)


def start_echo(kids: Children, lifetime_secs: float) -> str:
    """Starts the echo server as a child of ``kids``; its target."""
    ports: multiprocessing.queues.Queue[int] = MP.Queue()
    kids.start(_echo_server, ports, lifetime_secs, name=f"echo-{short_id()}")
    try:
        return f"{LOOPBACK}:{ports.get(timeout=60)}"
    except queue.Empty:
        kids.check_alive()
        raise TimeoutError("the echo server did not start within 60 s") from None


class EchoClient:
    """Sequential echo calls from one client, over a channel like the
    benchmark's own: no options, and the same interceptor sending the token,
    so that the client's side of a call costs the same."""

    def __init__(self, target: str, token: str, payload: bytes) -> None:
        from trellis.worker_sdk import authorized_channel

        self._raw = grpc.insecure_channel(target)
        self._call = authorized_channel(self._raw, token).unary_unary(
            f"/{ECHO_SERVICE}/{ECHO_METHOD}"
        )
        self._payload = payload
        self.timed(ECHO_WARMUP)

    def timed(self, calls: int) -> float:
        """Seconds that ``calls`` calls in a row took."""
        call, payload = self._call, self._payload
        t0 = time.perf_counter()
        for _ in range(calls):
            call(payload, timeout=CALL_TIMEOUT)
        return time.perf_counter() - t0

    def close(self) -> None:
        self._raw.close()


# --------------------------------------------------------------------------- workload


def workflow_body(*, inputs: bool, command: str = "noop") -> dict[str, Any]:
    """One job running ``command``; with ``inputs``, two declared inputs."""
    body: dict[str, Any] = {"name": "runs", "jobs": [{"id": "j00000", "command": command}]}
    if inputs:
        body["inputs"] = {
            "item": {"type": "INPUT_TYPE_NUMBER", "required": True, "description": "unit number"},
            "label": {"type": "INPUT_TYPE_STRING", "default": "unit"},
        }
    return body


def input_values(i: int) -> dict[str, Any]:
    return {"item": i, "label": f"unit-{i}"}


def requests_for(workflow_id: str, n: int, *, inputs: bool) -> list[Any]:
    from trellis.v1 import workflows_pb2

    out = []
    for i in range(n):
        req = workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id)
        if inputs:
            req.inputs.update(input_values(i))
        out.append(req)
    return out


def check_inputs(answers: Sequence[Any], *, inputs: bool) -> None:
    """Each run answered carries the inputs it was started with."""
    if not inputs:
        return
    from google.protobuf import json_format

    for i, run in enumerate(answers):
        got = json_format.MessageToDict(run.inputs)
        if got != input_values(i):
            raise AssertionError(
                f"run {run.run_id} answered inputs {got}, sent {input_values(i)} "
                "(does this server take run inputs?)"
            )


def commit_rate(backend: Backend, url: str, directory: Path, seconds: float = 2.0) -> float:
    """The database's own rate of one-row write transactions, durable as the
    server's are: on SQLite a fresh file in WAL mode with synchronous=NORMAL,
    on PostgreSQL a table of the benchmark's database (dropped afterwards)."""
    if backend == "sqlite":
        return raw_commit_rate(directory, seconds)
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    table = f"bench_commits_{short_id()}"
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)")
        conn.commit()
        try:
            body = "x" * 200
            n = 0
            t0 = time.perf_counter()
            while time.perf_counter() < t0 + seconds:
                conn.execute(f"INSERT INTO {table} (body) VALUES (%s)", (body,))
                conn.commit()
                n += 1
            return n / (time.perf_counter() - t0)
        finally:
            conn.execute(f"DROP TABLE {table}")
            conn.commit()


def _batch_unimplemented(exc: grpc.RpcError) -> bool:
    # What grpc raises for a call is also a grpc.Call, which the type omits.
    return bool(cast(Any, exc).code() == grpc.StatusCode.UNIMPLEMENTED)


# --------------------------------------------------------------------------- phases


@dataclass
class Drained:
    rate: float
    elapsed_s: float


@dataclass
class Repeat:
    """What one repeat measured (None: the phase could not run)."""

    echo: float
    commit: float
    single: float
    single_drain: Drained
    bulk: float | None
    bulk_drain: Drained | None
    parallel: float
    idle_starts: list[float]
    idle_calls: list[float]
    checked: int


@dataclass
class Bench:
    """One backend's server, its workflows' stub and the settings."""

    srv: ServerProc
    kids: Children
    backend: Backend
    url: str
    workdir: Path
    n: int
    inputs: bool
    profile: Path | None
    workflows: Any = field(init=False)

    def __post_init__(self) -> None:
        from trellis.v1 import workflows_pb2_grpc

        # One stub for the whole benchmark: building one per call would add
        # client work that the echo reference does not do.
        self.workflows = stub(workflows_pb2_grpc.WorkflowServiceStub, self.srv.channel)

    def new_workflow(self, prefix: str, *, command: str = "noop") -> str:
        wf_id = f"{prefix}-{short_id()}"
        try:
            create_workflow(
                self.srv.channel, workflow_body(inputs=self.inputs, command=command), wf_id
            )
        except grpc.RpcError as exc:
            if not self.inputs:
                raise
            raise RuntimeError(
                f"the server refused a workflow with inputs (does it take run inputs?): {exc}"
            ) from None
        return wf_id

    def spy(self, targets: dict[str, int], name: str) -> contextlib.AbstractContextManager[None]:
        return profiled(targets, self.profile / name if self.profile else None)


def warm_up(b: Bench) -> bool:
    """Exercises both ways of starting runs, then cancels the runs (no worker
    is connected, so none of them started). Whether the server has
    BatchRunWorkflows."""
    from trellis.v1 import runs_pb2, runs_pb2_grpc, workflows_pb2

    wf_id = b.new_workflow("warm", command="warm")
    run_ids = [
        b.workflows.RunWorkflow(req, timeout=CALL_TIMEOUT).run_id
        for req in requests_for(wf_id, WARMUP_RUNS, inputs=b.inputs)
    ]
    batch = workflows_pb2.BatchRunWorkflowsRequest(
        requests=requests_for(wf_id, BATCH, inputs=b.inputs)
    )
    has_batch = True
    try:
        answer = b.workflows.BatchRunWorkflows(batch, timeout=CALL_TIMEOUT)
        run_ids.extend(r.run_id for r in answer.runs)
    except grpc.RpcError as exc:
        if not _batch_unimplemented(exc):
            raise
        has_batch = False
    runs = stub(runs_pb2_grpc.RunServiceStub, b.srv.channel)
    for run_id in run_ids:
        runs.CancelRun(runs_pb2.CancelRunRequest(run_id=run_id), timeout=CALL_TIMEOUT)
    return has_batch


def enqueue_single(b: Bench, wf_id: str, echo: EchoClient) -> tuple[float, float, list[str]]:
    """N RunWorkflow calls in a row, in slices alternating with as many echo
    calls; RunWorkflow runs/s, echo calls/s and the run ids."""
    requests = requests_for(wf_id, b.n, inputs=b.inputs)
    call = b.workflows.RunWorkflow
    answers: list[Any] = []
    run_s = echo_s = 0.0
    for i in range(0, b.n, ECHO_SLICE):
        chunk = requests[i : i + ECHO_SLICE]
        echo_s += echo.timed(len(chunk))
        t0 = time.perf_counter()
        answers.extend(call(req, timeout=CALL_TIMEOUT) for req in chunk)
        run_s += time.perf_counter() - t0
    check_inputs(answers, inputs=b.inputs)
    return b.n / run_s, b.n / echo_s, [a.run_id for a in answers]


def enqueue_parallel(b: Bench, wf_id: str) -> tuple[float, list[str]]:
    """N RunWorkflow calls from ``CLIENT_THREADS`` threads at once (the
    concurrent starts that share transactions); runs/s and the run ids."""
    requests = requests_for(wf_id, b.n, inputs=b.inputs)
    call = b.workflows.RunWorkflow
    share = [requests[i::CLIENT_THREADS] for i in range(CLIENT_THREADS)]
    answers: list[list[Any]] = [[] for _ in share]
    barrier = threading.Barrier(CLIENT_THREADS + 1)

    def client(i: int) -> None:
        barrier.wait()
        answers[i].extend(call(req, timeout=CALL_TIMEOUT) for req in share[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENT_THREADS)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    runs = [run for mine in answers for run in mine]
    if len(runs) != b.n:
        raise AssertionError(f"{len(runs)} of {b.n} concurrent starts answered")
    check_inputs(runs, inputs=b.inputs)
    return b.n / elapsed, [r.run_id for r in runs]


def enqueue_bulk(b: Bench, wf_id: str) -> tuple[float, list[str]]:
    """N runs in BatchRunWorkflows calls of ``BATCH``; runs/s and the run ids."""
    from trellis.v1 import workflows_pb2

    requests = requests_for(wf_id, b.n, inputs=b.inputs)
    batches = [
        workflows_pb2.BatchRunWorkflowsRequest(requests=requests[i : i + BATCH])
        for i in range(0, b.n, BATCH)
    ]
    call = b.workflows.BatchRunWorkflows
    t0 = time.perf_counter()
    answers = [call(batch, timeout=CALL_TIMEOUT) for batch in batches]
    elapsed = time.perf_counter() - t0
    runs = [run for answer in answers for run in answer.runs]
    if len(runs) != b.n:
        raise AssertionError(f"BatchRunWorkflows answered {len(runs)} runs for {b.n} requests")
    check_inputs(runs, inputs=b.inputs)
    return b.n / elapsed, [r.run_id for r in runs]


def _finished(b: Bench, wf_id: str, timeout: float) -> list[Any]:
    """The workflow's runs once all N are terminal."""
    from trellis.v1 import runs_pb2

    deadline = time.monotonic() + timeout
    while True:
        runs = list(iter_runs(b.srv.channel, wf_id))
        if len(runs) >= b.n and all(r.state != runs_pb2.RUN_STATE_RUNNING for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise TimeoutError(f"{wf_id}: runs not finished {timeout} s after their jobs ran")
        time.sleep(0.02)


def _stop(b: Bench, pool: _sdk_worker.Pool) -> list[tuple[str, str, float]]:
    """Stops the pool's (one) worker; the jobs it handled. Its process has
    exited on return, so that the next phase enqueues with no worker."""
    pool.stop.set()
    handled = pool.results.get(timeout=60)[1]
    for proc in b.kids.procs:
        if proc.name in pool.worker_ids:
            proc.join(30)
    return handled


def verify(phase: str, run_ids: Sequence[str], runs: Sequence[Any], handled: Sequence[Any]) -> None:
    """Every run listed and succeeded; each run's job handled exactly once."""
    from trellis.v1 import runs_pb2

    problems = []
    expected = set(run_ids)
    if len(expected) != len(run_ids):
        problems.append(f"{len(run_ids) - len(expected)} run ids answered twice")
    listed = {r.run_id for r in runs}
    if listed != expected:
        problems.append(f"{len(listed)} runs listed, {len(expected)} started")
    states = Counter(runs_pb2.RunState.Name(r.state) for r in runs)
    if set(states) != {"RUN_STATE_SUCCEEDED"}:
        problems.append(f"run states {dict(states)}")
    per_run = Counter(run_id for run_id, _job, _lat in handled)
    twice = sum(1 for c in per_run.values() if c > 1)
    if twice:
        problems.append(f"{twice} jobs ran more than once")
    if set(per_run) != expected:
        missing = len(expected - set(per_run))
        problems.append(f"{missing} runs' jobs never handled, {len(set(per_run) - expected)} alien")
    if problems:
        raise AssertionError(f"{BENCH}/{phase}: " + "; ".join(problems))


def drain(b: Bench, phase: str, wf_id: str, run_ids: Sequence[str]) -> Drained:
    """Starts one worker on the queued runs; runs/s from its stream opening
    to the last run's finished_at."""
    worker_id = f"runs-{phase}-{short_id()}"
    cfg = _sdk_worker.WorkerConfig(b.srv.grpc_target, worker_id, SLOTS, b.srv.token, expect=b.n)
    pool = _sdk_worker.start_pool(b.kids, b.srv, [cfg], wait_idle=False)
    t0 = ms_now()
    budget = max(60.0, b.n / 100.0)
    if not pool.all_done.wait(budget):
        b.kids.check_alive()
        raise TimeoutError(f"{phase}: {pool.done.value} of {b.n} jobs ran in {budget:.0f} s")
    runs = _finished(b, wf_id, timeout=60)
    handled = _stop(b, pool)
    verify(phase, run_ids, runs, handled)
    last = max(r.finished_at.ToMilliseconds() for r in runs)
    elapsed_s = (last - t0) / 1000.0
    return Drained(b.n / elapsed_s, elapsed_s)


def idle(b: Bench, r: int, wf_id: str) -> tuple[list[float], list[float]]:
    """Sequential runs with one idle connected worker: (call -> handler
    start, call -> reply) in ms, warm-up left out."""
    worker_id = f"runs-idle-{short_id()}"
    cfg = _sdk_worker.WorkerConfig(
        b.srv.grpc_target, worker_id, SLOTS, b.srv.token, report_starts=True
    )
    pool = _sdk_worker.start_pool(b.kids, b.srv, [cfg])
    worker_pid = next(p.pid for p in b.kids.procs if p.name == worker_id) or 0
    with b.spy({"server": b.srv.pid(), "worker": worker_pid}, f"idle-{r}"):
        starts, calls = _idle_loop(b, pool, wf_id)
    _stop(b, pool)
    if not pool.starts.empty():
        raise AssertionError(f"{BENCH}/idle: a job started more than once")
    return starts, calls


def _idle_loop(b: Bench, pool: _sdk_worker.Pool, wf_id: str) -> tuple[list[float], list[float]]:
    requests = requests_for(wf_id, IDLE_WARMUP + IDLE_ITERATIONS, inputs=b.inputs)
    call = b.workflows.RunWorkflow
    starts: list[float] = []
    calls: list[float] = []
    deadline = time.monotonic() + max(120.0, len(requests) * 0.5)
    for i, req in enumerate(requests):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{BENCH}/idle: only {i} iterations within the time bound")
        t0 = ms_now()
        run = call(req, timeout=CALL_TIMEOUT)
        t1 = ms_now()
        try:
            started, _enqueued = pool.starts.get(timeout=30)
        except queue.Empty:
            b.kids.check_alive()
            raise TimeoutError(f"idle iteration {i}: the job did not start in 30 s") from None
        if i >= IDLE_WARMUP:
            starts.append(started - t0)
            calls.append(t1 - t0)
        follow_run_to_finish(b.srv.channel, run.run_id, timeout=30)
    return starts, calls


def one_repeat(b: Bench, r: int, echo_target: str, has_batch: bool) -> Repeat:
    def server_spy(phase: str) -> contextlib.AbstractContextManager[None]:
        return b.spy({"server": b.srv.pid()}, f"{phase}-{r}")

    wf_single = b.new_workflow("single")
    # The echo's payload: a request of the single phase, as the server gets it.
    payload = requests_for(wf_single, 1, inputs=b.inputs)[0].SerializeToString()
    echo_client = EchoClient(echo_target, b.srv.token, payload)
    try:
        with server_spy("single-enqueue"):
            single, echo, ids = enqueue_single(b, wf_single, echo_client)
    finally:
        echo_client.close()
    commit = commit_rate(b.backend, b.url, b.workdir)
    log(
        f"{BENCH}: single enqueue {single:,.0f} runs/s, echo {echo:,.0f} calls/s, "
        f"database {commit:,.0f} commits/s"
    )
    with server_spy("single-drain"):
        single_drain = drain(b, "single", wf_single, ids)
    log(f"{BENCH}: single drain {single_drain.rate:,.0f} runs/s")
    checked = len(ids)

    bulk: float | None = None
    bulk_drain: Drained | None = None
    if has_batch:
        wf_bulk = b.new_workflow("bulk")
        with server_spy("bulk-enqueue"):
            bulk, ids = enqueue_bulk(b, wf_bulk)
        log(f"{BENCH}: bulk enqueue {bulk:,.0f} runs/s")
        with server_spy("bulk-drain"):
            bulk_drain = drain(b, "bulk", wf_bulk, ids)
        log(f"{BENCH}: bulk drain {bulk_drain.rate:,.0f} runs/s")
        checked += len(ids)

    wf_parallel = b.new_workflow("parallel")
    with server_spy("parallel-enqueue"):
        parallel, ids = enqueue_parallel(b, wf_parallel)
    log(f"{BENCH}: {CLIENT_THREADS} clients at once: {parallel:,.0f} runs/s")
    drain(b, "parallel", wf_parallel, ids)  # and checked, like the others
    checked += len(ids)

    wf_idle = b.new_workflow("idle")
    starts, calls = idle(b, r, wf_idle)
    log(
        f"{BENCH}: idle enqueue->start p50 {percentile(starts, 50):.2f} ms, "
        f"p99 {percentile(starts, 99):.2f} ms"
    )
    checked += IDLE_WARMUP + IDLE_ITERATIONS
    return Repeat(
        echo, commit, single, single_drain, bulk, bulk_drain, parallel, starts, calls, checked
    )


# --------------------------------------------------------------------------- figures


def _spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    if len(values) == 1:
        return ""
    return f"median of {len(values)}: " + ", ".join(fmt.format(v) for v in values)


def figures(backend: Backend, reps: Sequence[Repeat], *, n: int, inputs: bool) -> list[Figure]:
    t = TARGETS[backend]

    def fig(name: str, value: float | None, unit: str, target: str = "", note: str = "") -> Figure:
        return Figure(BENCH, backend, name, value, unit, target, note)

    echo = [r.echo for r in reps]
    commit = [r.commit for r in reps]
    single = [r.single for r in reps]
    pct = [100.0 * r.single / r.echo for r in reps]
    # A start is a call and a durable commit, one after the other.
    ceiling = [1.0 / (1.0 / r.echo + 1.0 / r.commit) for r in reps]
    pct_ceiling = [100.0 * r.single / c for r, c in zip(reps, ceiling, strict=True)]
    single_drain = [r.single_drain.rate for r in reps]
    p50 = [percentile(r.idle_starts, 50) for r in reps]
    p99 = [percentile(r.idle_starts, 99) for r in reps]
    call50 = [percentile(r.idle_calls, 50) for r in reps]
    shape = f"N={n} one-job runs{', 2 inputs each' if inputs else ''}"
    out = [
        fig(
            "gRPC unary echo (reference)",
            statistics.median(echo),
            "calls/s",
            note="; ".join(
                filter(None, ["bare server, same client, alternating with single", _spread(echo)])
            ),
        ),
        fig(
            "single: RunWorkflow enqueue",
            statistics.median(single),
            "runs/s",
            note="; ".join(filter(None, [f"{shape}, one call each, no worker", _spread(single)])),
        ),
        fig(
            "  as % of echo",
            statistics.median(pct),
            "%",
            t.single_pct_of_echo,
            _spread(pct, "{:.0f}"),
        ),
        fig(
            "database one-row commits (reference)",
            statistics.median(commit),
            "commits/s",
            note="; ".join(
                filter(
                    None,
                    [
                        "INSERT + COMMIT in a row, durable as the server's (after single)",
                        _spread(commit),
                    ],
                )
            ),
        ),
        fig(
            "  as % of echo + commit",
            statistics.median(pct_ceiling),
            "%",
            note="; ".join(
                filter(
                    None,
                    [
                        f"ceiling {statistics.median(ceiling):,.0f}/s: one call, then one commit",
                        _spread(pct_ceiling, "{:.0f}"),
                    ],
                )
            ),
        ),
        fig(
            "single: drain",
            statistics.median(single_drain),
            "runs/s",
            t.drain,
            "; ".join(
                filter(
                    None,
                    [
                        f"1 SDK worker x {SLOTS} slots, stream open -> last finished_at",
                        _spread(single_drain),
                    ],
                )
            ),
        ),
    ]
    bulk_ok = [r for r in reps if r.bulk is not None and r.bulk_drain is not None]
    if bulk_ok:
        bulk = [r.bulk or 0.0 for r in bulk_ok]
        bulk_drain = [r.bulk_drain.rate if r.bulk_drain else 0.0 for r in bulk_ok]
        out += [
            fig(
                f"bulk: BatchRunWorkflows({BATCH}) enqueue",
                statistics.median(bulk),
                "runs/s",
                t.bulk,
                _spread(bulk),
            ),
            fig(
                "bulk: drain", statistics.median(bulk_drain), "runs/s", t.drain, _spread(bulk_drain)
            ),
        ]
    else:
        why = "the server answers BatchRunWorkflows with UNIMPLEMENTED"
        out += [
            fig(f"bulk: BatchRunWorkflows({BATCH}) enqueue", None, "runs/s", t.bulk, why),
            fig("bulk: drain", None, "runs/s", t.drain),
        ]
    parallel = [r.parallel for r in reps]
    out += [
        fig(
            f"parallel: RunWorkflow from {CLIENT_THREADS} clients",
            statistics.median(parallel),
            "runs/s",
            note="; ".join(
                filter(
                    None,
                    [
                        f"{shape}, one call each from {CLIENT_THREADS} threads at once, no worker",
                        _spread(parallel),
                    ],
                )
            ),
        ),
        fig(
            "idle enqueue->start p50",
            statistics.median(p50),
            "ms",
            t.idle_p50,
            "; ".join(
                filter(
                    None,
                    [f"1 idle SDK worker, {IDLE_ITERATIONS} runs in a row", _spread(p50, "{:.2f}")],
                )
            ),
        ),
        fig(
            "idle enqueue->start p99",
            statistics.median(p99),
            "ms",
            t.idle_p99,
            _spread(p99, "{:.2f}"),
        ),
        fig(
            "  of which RunWorkflow call p50",
            statistics.median(call50),
            "ms",
            note=_spread(call50, "{:.2f}"),
        ),
        fig(
            "runs checked",
            float(sum(r.checked for r in reps)),
            "runs",
            note="each succeeded, its job handled exactly once",
        ),
    ]
    return out


# --------------------------------------------------------------------------- driver


def measure(
    backend: Backend,
    *,
    n: int = DEFAULT_RUNS,
    repeats: int = DEFAULT_REPEATS,
    inputs: bool = False,
    profile: Path | None = None,
) -> list[Figure]:
    lifetime = 600.0 + repeats * n / 50.0
    with (
        workdir() as wd,
        database(backend, wd) as url,
        server(url, wd) as srv,
        Children() as kids,
        Children() as echo_kids,
    ):
        spy_dir = profile / f"runs-{backend}" if profile else None
        b = Bench(srv, kids, backend, url, wd, n, inputs, spy_dir)
        echo_target = start_echo(echo_kids, lifetime)
        has_batch = warm_up(b)
        if not has_batch:
            log(f"{BENCH}/{backend}: BatchRunWorkflows is UNIMPLEMENTED here; bulk is n/a")
        reps = []
        for r in range(repeats):
            log(f"{BENCH}/{backend}: repeat {r + 1} of {repeats}, N={n}")
            reps.append(one_repeat(b, r, echo_target, has_batch))
    return figures(backend, reps, n=n, inputs=inputs)


def run(
    backends: list[Backend],
    *,
    n: int = DEFAULT_RUNS,
    repeats: int = DEFAULT_REPEATS,
    inputs: bool = False,
    profile: Path | None = None,
) -> list[Figure]:
    out: list[Figure] = []
    for backend in backends:
        out.extend(measure(backend, n=n, repeats=repeats, inputs=inputs, profile=profile))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="N runs per phase")
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--inputs", action="store_true", help="runs with two inputs each")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", type=Path, help="record py-spy collapsed stacks here")
    args = parser.parse_args()
    if args.runs < BATCH or args.runs % BATCH:
        parser.error(f"--runs: a positive multiple of {BATCH}")
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
    exit_on_sigterm()
    started = time.monotonic()
    figures_ = run(
        backends_of(args.backend),
        n=args.runs,
        repeats=args.repeats,
        inputs=args.inputs,
        profile=args.profile,
    )
    print_figures(figures_, as_json=args.json)
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
