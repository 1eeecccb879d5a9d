"""Sends job results in batches with ReportResults."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from ._backoff import Backoff
from ._channel import Connection
from ._errors import rpc_code, rpc_details
from ._logs import NUL, NUL_STANDIN, LogShipper
from ._pb import workers_pb2

_log = logging.getLogger("trellis.worker_sdk")

_ABORTED = grpc.StatusCode.ABORTED.value[0]
_OK = grpc.StatusCode.OK.value[0]
_STOP = object()


def complete_result(lease_id: str, outputs: Mapping[str, str]) -> workers_pb2.JobResult:
    """A successful attempt's result, or a failure when an output holds NUL,
    which the server cannot store (a value is never changed behind the job's back)."""
    for name, value in outputs.items():
        if NUL in value or NUL in name:
            error = f"output {name.replace(NUL, NUL_STANDIN)!r} holds a NUL character"
            return fail_result(lease_id, error, False)
    return workers_pb2.JobResult(
        complete=workers_pb2.CompleteJobRequest(lease_id=lease_id, outputs=outputs)
    )


def fail_result(lease_id: str, error: str, retryable: bool) -> workers_pb2.JobResult:
    """A failed attempt's result; NUL in the error (a last line of stderr,
    say) is shown as U+FFFD."""
    return workers_pb2.JobResult(
        fail=workers_pb2.FailJobRequest(
            lease_id=lease_id, error=error.replace(NUL, NUL_STANDIN), retryable=retryable
        )
    )


class _LogsNotFlushed(Exception):
    """A job's logs could not be pushed yet; its result must wait for them."""


class Reporter:
    """A thread that reports finished jobs.

    It takes whatever is queued when it wakes and sends it as one request, so
    while one request is in flight the next batch builds up by itself: no
    timer, no added latency when the load is light. Each result names its
    lease, so resending a batch after a transport error is safe; a result the
    server already has answers ABORTED, which counts as done.
    """

    def __init__(
        self,
        conn: Connection,
        logs: LogShipper,
        on_done: Callable[[list[str]], None],
        *,
        max_batch: int = 500,
        rpc_timeout: float = 30.0,
    ) -> None:
        self._conn = conn
        self._logs = logs
        self._on_done = on_done
        self._max_batch = max_batch
        self._rpc_timeout = rpc_timeout
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._deadline = float("inf")
        # Falls back to CompleteJob/FailJob against a server without ReportResults.
        self._unary = False
        self._thread = threading.Thread(target=self._run, name="trellis-reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, lease_id: str, result: workers_pb2.JobResult) -> None:
        """Queues a ``JobResult`` for ``lease_id``; logs are flushed before it is sent."""
        self._queue.put((lease_id, result))

    def close(self, timeout: float) -> None:
        """Sends what is queued, retrying for at most ``timeout`` seconds, then stops."""
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                self._send(batch)
            except Exception:  # the thread must outlive any single bad batch
                _log.exception("reporting %d job results failed", len(batch))

    def _send(self, batch: list[tuple[str, workers_pb2.JobResult]]) -> None:
        lease_ids = [lease_id for lease_id, _ in batch]
        backoff = Backoff(base=0.05, cap=5.0)
        one_by_one = False
        while True:
            try:
                if not self._logs.flush(lease_ids):
                    raise _LogsNotFlushed
                if self._unary or one_by_one:
                    self._send_unary(batch)
                else:
                    self._send_batch(batch)
                self._on_done(lease_ids)
                return
            except grpc.RpcError as err:
                code = rpc_code(err)
                if code is grpc.StatusCode.UNIMPLEMENTED and not self._unary:
                    _log.info("server lacks ReportResults; reporting one result per call")
                    self._unary = True
                    continue
                if code is grpc.StatusCode.INVALID_ARGUMENT:
                    if not self._unary and len(batch) > 1:
                        # One bad result refuses the whole request: the
                        # others still count, so send them one at a time.
                        _log.warning("server refused a batch of results: %s", rpc_details(err))
                        one_by_one = True
                        continue
                    _log.error("server rejected %d job results: %s", len(batch), rpc_details(err))
                    self._on_done(lease_ids)
                    return
                _log.warning(
                    "reporting %d job results failed (%s: %s); retrying",
                    len(batch),
                    code.name,
                    rpc_details(err),
                )
            except _LogsNotFlushed:
                _log.warning("pushing logs before %d job results failed; retrying", len(batch))
            delay = backoff.next_delay()
            if self._closing.is_set():
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    _log.error("gave up reporting %d job results at shutdown", len(batch))
                    return
                time.sleep(min(delay, remaining))
            else:
                self._closing.wait(delay)

    def _send_batch(self, batch: list[tuple[str, workers_pb2.JobResult]]) -> None:
        request = workers_pb2.ReportResultsRequest(results=[result for _, result in batch])
        response = self._conn.workers.ReportResults(
            request, timeout=self._rpc_timeout, metadata=self._conn.metadata
        )
        for (lease_id, _), status in zip(batch, response.statuses, strict=False):
            if status.code not in (_OK, _ABORTED):
                # Not worth a retry: the server judged this result and said no.
                _log.warning(
                    "result for lease %s refused (code %d): %s",
                    lease_id,
                    status.code,
                    status.message,
                )

    def _send_unary(self, batch: list[tuple[str, workers_pb2.JobResult]]) -> None:
        for lease_id, result in batch:
            try:
                if result.HasField("complete"):
                    self._conn.workers.CompleteJob(
                        result.complete, timeout=self._rpc_timeout, metadata=self._conn.metadata
                    )
                else:
                    self._conn.workers.FailJob(
                        result.fail, timeout=self._rpc_timeout, metadata=self._conn.metadata
                    )
            except grpc.RpcError as err:
                code = rpc_code(err)
                if code is grpc.StatusCode.ABORTED:
                    continue
                if code in (
                    grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    grpc.StatusCode.INVALID_ARGUMENT,
                ):
                    _log.warning("result for lease %s refused: %s", lease_id, rpc_details(err))
                    continue
                raise
