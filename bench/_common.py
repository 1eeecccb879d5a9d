"""Shared plumbing of the benchmarks: databases, the server subprocess and worker
processes; the report (figures, percentiles, the machine) is in ``_report``,
whose names this module re-exports.

Everything runs on loopback in one process tree: the orchestrator (the
process that imports this) spawns the server and the workers as children and
kills them all at the end, even on error.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing
import multiprocessing.context
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
from _report import (
    PG_ADMIN_URL,
    Figure,
    OtherLoad,
    fmt_value,
    machine_info,
    percentile,
    print_figures,
    render_machine,
    render_table,
)

Backend = Literal["sqlite", "postgres"]
BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres")
LOOPBACK = "127.0.0.1"
ADMIN_USERNAME = "bench-admin"
ADMIN_PASSWORD = f"Bench-{uuid.uuid4().hex}"

# Worker processes are spawned (never forked): the orchestrator holds gRPC
# channels, and gRPC's core does not survive a fork.
MP: multiprocessing.context.SpawnContext = multiprocessing.get_context("spawn")


def backends_of(choice: str) -> list[Backend]:
    """``sqlite``, ``postgres`` or ``both`` as a list of backends."""
    if choice == "both":
        return list(BACKENDS)
    if choice not in BACKENDS:
        raise SystemExit(f"unknown backend {choice!r}: sqlite, postgres or both")
    return [choice]


def exit_on_sigterm() -> None:
    """Turns SIGTERM into SystemExit, so that the ``finally`` blocks stop the
    server and the workers (SIGINT already raises KeyboardInterrupt)."""

    def _raise(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- databases


def _pg_admin() -> Any:
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def database(backend: Backend, workdir: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL database
    created for the occasion and dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"trellis_bench_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        # For experiments: per-database settings, e.g.
        # TRELLIS_BENCH_PG_SET="plan_cache_mode=force_custom_plan".
        for item in filter(None, os.environ.get("TRELLIS_BENCH_PG_SET", "").split(",")):
            key, _, value = item.partition("=")
            admin.execute(f'ALTER DATABASE "{name}" SET {key.strip()} = {value.strip()}')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trellis-bench-") as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _trellis_command() -> list[str]:
    # For experiments: another way to start the same server (e.g. a wrapper
    # that changes an interpreter setting first); it gets "serve" appended.
    override = os.environ.get("TRELLIS_BENCH_SERVER_CMD")
    if override:
        return shlex.split(override)
    script = Path(sys.executable).with_name("trellis")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "trellis.server.cli"]


@dataclass
class ServerProc:
    """``trellis serve`` in its own process group."""

    proc: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log_path: Path
    # Unauthenticated until ``sign_in``; then it carries the admin's token.
    channel: grpc.Channel = field(init=False)
    token: str = ""

    def __post_init__(self) -> None:
        self._raw = grpc.insecure_channel(self.grpc_target)
        self.channel = self._raw

    def sign_in(self) -> None:
        """Signs in as the administrator; every later call carries the token."""
        from trellis.v1 import auth_pb2, auth_pb2_grpc
        from trellis.worker_sdk import authorized_channel

        answer = stub(auth_pb2_grpc.AuthServiceStub, self._raw).Login(
            auth_pb2.LoginRequest(username=ADMIN_USERNAME, password=ADMIN_PASSWORD), timeout=30
        )
        self.token = answer.token
        self.channel = authorized_channel(self._raw, self.token)

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                # The REST port is bound after the gRPC server starts.
                if resp.status == health_pb2.HealthCheckResponse.SERVING and self._rest_ready():
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {timeout} s:\n{self.tail()}")
            time.sleep(0.05)

    def _rest_ready(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self.rest_port, timeout=2.0)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self, grace: float = 10.0) -> None:
        self._raw.close()
        _kill_group(self.proc, grace)


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    # Anything left in the group (the server has no children of its own, but
    # be thorough) goes too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5.0)


@contextlib.contextmanager
def server(
    database_url: str, workdir: Path, *, extra_env: dict[str, str] | None = None
) -> Iterator[ServerProc]:
    """Starts ``trellis serve`` on free loopback ports and waits for its health check."""
    grpc_port, rest_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url,
            "PORT": str(rest_port),
            "GRPC_PORT": str(grpc_port),
            "HOST": LOOPBACK,
            "WORKFLOWS_DIR": "",
            "TRELLIS_ADMIN_USERNAME": ADMIN_USERNAME,
            "TRELLIS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            # The benchmark's client starts hundreds of runs a minute, far
            # beyond what the general and batch limits let one user do (as a
            # producer of runs as tasks would); the workers' own budget
            # (TRELLIS_RATE_LIMIT_WORKER) stays at its default.
            "TRELLIS_RATE_LIMIT_GENERAL": "100000000/min",
            "TRELLIS_RATE_LIMIT_BATCH": "100000000/min",
        }
    )
    env.pop("REAP_INTERVAL_SECS", None)  # the default
    env.update(extra_env or {})
    log_path = workdir / f"server-{grpc_port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [*_trellis_command(), "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=workdir,
        )
    srv = ServerProc(proc, grpc_port, rest_port, log_path)
    try:
        srv.wait_ready()
        srv.sign_in()
        yield srv
    finally:
        srv.stop()


# --------------------------------------------------------------------------- children


class Children:
    """Worker processes of one benchmark; all of them are ended on exit."""

    def __init__(self) -> None:
        self.procs: list[multiprocessing.process.BaseProcess] = []

    def start(self, target: Callable[..., None], *args: Any, name: str) -> None:
        proc = MP.Process(target=target, args=args, name=name, daemon=True)
        proc.start()
        self.procs.append(proc)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))

    def check_alive(self) -> None:
        for p in self.procs:
            if not p.is_alive():
                raise RuntimeError(f"worker process {p.name} exited with {p.exitcode}")

    def kill_all(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 5.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(2.0)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.02, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- gRPC helpers


def stub(factory: Any, channel: grpc.Channel) -> Any:
    """A generated stub (the generated modules carry no type information)."""
    return factory(channel)


def noop_workflow(n: int, *, name: str, command: str = "noop") -> dict[str, Any]:
    """A workflow body of ``n`` independent jobs running ``command``."""
    return {"name": name, "jobs": [{"id": f"j{i:05d}", "command": command} for i in range(n)]}


def create_workflow(channel: grpc.Channel, body: dict[str, Any], workflow_id: str) -> None:
    from google.protobuf import json_format

    from trellis.v1 import workflows_pb2, workflows_pb2_grpc

    wf = json_format.ParseDict({**body, "id": workflow_id}, workflows_pb2.Workflow())
    stub(workflows_pb2_grpc.WorkflowServiceStub, channel).CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(workflow=wf), timeout=120.0
    )


def run_workflow(channel: grpc.Channel, workflow_id: str) -> Any:
    from trellis.v1 import workflows_pb2, workflows_pb2_grpc

    return stub(workflows_pb2_grpc.WorkflowServiceStub, channel).RunWorkflow(
        workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id), timeout=120.0
    )


def iter_runs(channel: grpc.Channel, workflow_id: str) -> Iterator[Any]:
    """The runs of a workflow (without their jobs), a thousand per ListRuns
    page: far cheaper than GetRun here."""
    from trellis.v1 import runs_pb2, runs_pb2_grpc

    runs = stub(runs_pb2_grpc.RunServiceStub, channel)
    token = ""
    while True:
        resp = runs.ListRuns(
            runs_pb2.ListRunsRequest(workflow_id=workflow_id, page_size=1000, page_token=token),
            timeout=30.0,
        )
        yield from resp.runs
        token = resp.next_page_token
        if not token:
            return


def run_state(channel: grpc.Channel, workflow_id: str, run_id: str) -> Any:
    """The run (without its jobs)."""
    for run in iter_runs(channel, workflow_id):
        if run.run_id == run_id:
            return run
    raise LookupError(f"run {run_id} not listed")


def wait_run_finished(
    channel: grpc.Channel, workflow_id: str, run_id: str, *, timeout: float, interval: float = 0.05
) -> Any:
    """Polls the run at a low rate until it is terminal; returns it."""
    from trellis.v1 import runs_pb2

    deadline = time.monotonic() + timeout
    while True:
        run = run_state(channel, workflow_id, run_id)
        if run.state != runs_pb2.RUN_STATE_RUNNING:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still running after {timeout} s")
        time.sleep(interval)


def follow_run_to_finish(channel: grpc.Channel, run_id: str, *, timeout: float) -> None:
    """Follows the run's events until RUN_FINISHED, which must say
    "succeeded" (pushed by the server, so that a caller can go on as soon as
    the run is over)."""
    from trellis.v1 import runs_pb2, runs_pb2_grpc

    runs = stub(runs_pb2_grpc.RunServiceStub, channel)
    for event in runs.StreamRunEvents(
        runs_pb2.StreamRunEventsRequest(run_id=run_id), timeout=timeout
    ):
        if event.type == runs_pb2.RUN_EVENT_TYPE_RUN_FINISHED:
            if event.message != "succeeded":
                raise AssertionError(f"run {run_id} finished {event.message!r}")
            return
    raise AssertionError(f"run {run_id}: event stream ended before RUN_FINISHED")


def verify_run(
    channel: grpc.Channel, run_id: str, n_jobs: int, *, handled: Sequence[str] | None = None
) -> None:
    """Every job succeeded on its first attempt, and (when the workers' list of
    handled job ids is given) each was handled exactly once."""
    from trellis.v1 import jobs_pb2, runs_pb2, runs_pb2_grpc

    detail = stub(runs_pb2_grpc.RunServiceStub, channel).GetRun(
        runs_pb2.GetRunRequest(run_id=run_id), timeout=60.0
    )
    problems = []
    if detail.run.state != runs_pb2.RUN_STATE_SUCCEEDED:
        problems.append(f"run state {runs_pb2.RunState.Name(detail.run.state)}")
    if len(detail.jobs) != n_jobs:
        problems.append(f"{len(detail.jobs)} jobs, expected {n_jobs}")
    bad = [j.id for j in detail.jobs if j.status != jobs_pb2.JOB_STATE_SUCCEEDED or j.attempt]
    if bad:
        problems.append(f"{len(bad)} jobs not succeeded on their first attempt, e.g. {bad[:3]}")
    if handled is not None:
        if len(handled) != n_jobs:
            problems.append(f"handlers ran {len(handled)} times for {n_jobs} jobs")
        if len(set(handled)) != len(handled):
            problems.append(f"{len(handled) - len(set(handled))} jobs ran more than once")
        if set(handled) != {j.id for j in detail.jobs}:
            problems.append("the jobs handled are not the jobs of the run")
    if problems:
        raise AssertionError(f"run {run_id}: " + "; ".join(problems))


def list_workers(channel: grpc.Channel) -> dict[str, int]:
    """worker id -> WorkerStatus."""
    from trellis.v1 import workers_pb2, workers_pb2_grpc

    resp = stub(workers_pb2_grpc.WorkerServiceStub, channel).ListWorkers(
        workers_pb2.ListWorkersRequest(), timeout=10.0
    )
    return {w.worker_id: w.status for w in resp.workers}


def wait_workers_idle(channel: grpc.Channel, worker_ids: Sequence[str], timeout: float) -> None:
    from trellis.v1 import workers_pb2

    def idle() -> bool:
        found = list_workers(channel)
        return all(found.get(w) == workers_pb2.WORKER_STATUS_IDLE for w in worker_ids)

    wait_for(idle, timeout=timeout, interval=0.05, what=f"workers {list(worker_ids)} idle")


@contextlib.contextmanager
def profiled(targets: dict[str, int], out_dir: Path | None, *, rate: int = 200) -> Iterator[None]:
    """Records each process of ``targets`` (name -> pid) with py-spy while the
    block runs, as collapsed stacks in ``out_dir/<name>.txt`` (one py-spy per
    process: a single ``--subprocesses`` recorder cannot keep up with hundreds
    of threads)."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    procs = []
    for name, pid in targets.items():
        cmd = [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            # Only the thread holding the GIL: where the (GIL-bound) CPU goes.
            "--gil",
            "--threads",
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out_dir / f"{name}.txt"),
            "--duration",
            "600",
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # let them attach
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def ms_now() -> float:
    return time.time() * 1000.0


def short_id() -> str:
    return uuid.uuid4().hex[:8]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def json_dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False)


__all__ = [
    "PG_ADMIN_URL",
    "Figure",
    "OtherLoad",
    "fmt_value",
    "machine_info",
    "percentile",
    "print_figures",
    "render_machine",
    "render_table",
]


def raw_commit_rate(directory: Path, seconds: float) -> float:
    """SQLite's own rate of one-row write transactions, configured as the
    server's connections are (WAL, synchronous=NORMAL), on a fresh file."""
    path = directory / f"reference-{short_id()}.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        body = "x" * 200
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (body,))
            conn.execute("COMMIT")
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
