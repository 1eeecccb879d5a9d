"""A worker process built on the SDK (``trellis.worker_sdk.Worker``), for the
gRPC benchmarks. Started with the ``spawn`` method by the orchestrator."""

from __future__ import annotations

import logging
import multiprocessing.queues
import multiprocessing.synchronize
import threading
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

# The longest a worker process lives, whatever happens to its orchestrator
# (unless its config says otherwise).
MAX_LIFETIME_SECS = 600.0


@dataclass(frozen=True)
class WorkerConfig:
    target: str
    worker_id: str
    slots: int
    # A bearer token with the jobs:work scope.
    token: str
    # Handler starts of "noop" jobs (counted in ``done``, which the
    # orchestrator resets between runs) after which ``all_done`` is set.
    expect: int = 0
    # Send each handler start time (epoch ms) and the job's enqueued_at_ms on
    # the ``starts`` queue.
    report_starts: bool = False
    lifetime_secs: float = MAX_LIFETIME_SECS


class _Connected(logging.Handler):
    """Sets an event when the SDK logs that its assignment stream is open."""

    def __init__(self, event: multiprocessing.synchronize.Event) -> None:
        super().__init__(logging.INFO)
        self._event = event

    def emit(self, record: logging.LogRecord) -> None:
        if "connected to" in record.getMessage():
            self._event.set()


def main(
    cfg: WorkerConfig,
    done: Synchronized[int],
    all_done: multiprocessing.synchronize.Event,
    connected: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    starts: multiprocessing.queues.Queue[tuple[float, int]],
    results: multiprocessing.queues.Queue[tuple[str, list[tuple[str, str, float]]]],
) -> None:
    from trellis.worker_sdk import JobContext, Worker

    sdk_log = logging.getLogger("trellis.worker_sdk")
    sdk_log.setLevel(logging.INFO)
    sdk_log.addHandler(_Connected(connected))
    sdk_log.propagate = False
    warn = logging.StreamHandler()
    warn.setLevel(logging.WARNING)
    sdk_log.addHandler(warn)

    # (run id, job id, enqueue->start ms) of every "noop" job handled
    handled: list[tuple[str, str, float]] = []
    lock = threading.Lock()
    worker = Worker(cfg.target, worker_id=cfg.worker_id, slots=cfg.slots, token=cfg.token)

    @worker.handler("noop")
    def noop(ctx: JobContext) -> None:
        now_ms = time.time() * 1000.0
        enqueued: int = ctx.enqueued_at_ms
        if cfg.report_starts:
            starts.put((now_ms, enqueued))
            return None
        with lock:
            handled.append((ctx.run_id, ctx.job_id, now_ms - enqueued))
        with done.get_lock():
            done.value += 1
            if cfg.expect and done.value >= cfg.expect:
                all_done.set()
        return None

    @worker.handler("warm")
    def warm(_ctx: JobContext) -> None:
        return None

    worker.start()
    try:
        stop.wait(cfg.lifetime_secs)
    finally:
        worker.stop(drain=True, timeout=10.0)
        with lock:
            payload = (cfg.worker_id, list(handled))
        results.put(payload)


@dataclass
class Pool:
    """SDK worker processes started together, with what they share."""

    worker_ids: list[str]
    done: Synchronized[int]
    all_done: multiprocessing.synchronize.Event
    stop: multiprocessing.synchronize.Event
    starts: multiprocessing.queues.Queue[tuple[float, int]]
    results: multiprocessing.queues.Queue[tuple[str, list[tuple[str, str, float]]]]


def start_pool(kids: Any, srv: Any, configs: list[WorkerConfig], *, wait_idle: bool = True) -> Pool:
    """Starts one process per config under ``kids`` and returns once every
    worker's assignment stream is open and (with ``wait_idle``) the server
    lists it as idle; without, as soon as the streams are open, for workers
    that find jobs queued and are busy at once."""
    from _common import MP, wait_workers_idle

    pool = Pool(
        worker_ids=[cfg.worker_id for cfg in configs],
        done=MP.Value("q", 0),
        all_done=MP.Event(),
        stop=MP.Event(),
        starts=MP.Queue(),
        results=MP.Queue(),
    )
    connected = [MP.Event() for _ in configs]
    for cfg, event in zip(configs, connected, strict=True):
        kids.start(
            main,
            cfg,
            pool.done,
            pool.all_done,
            event,
            pool.stop,
            pool.starts,
            pool.results,
            name=cfg.worker_id,
        )
    for event in connected:
        if not event.wait(60):
            kids.check_alive()
            raise TimeoutError("a worker did not connect within 60 s")
    if wait_idle:
        wait_workers_idle(srv.channel, pool.worker_ids, timeout=30)
    return pool
