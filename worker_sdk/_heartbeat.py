"""Keeps one StreamHeartbeats call open and feeds it the heartbeats that are due."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ._backoff import Backoff
from ._channel import TRANSIENT_CODES, Connection
from ._errors import rpc_code, rpc_details
from ._pb import workers_pb2

_log = logging.getLogger("trellis.worker_sdk")

_END = object()
# A stream that stayed up this long proves the server is back: start the
# backoff over even if no lease needed a heartbeat meanwhile.
_HEALTHY_AFTER = 10.0


class Heartbeater:
    """Sends heartbeats over a long-lived bidi stream and hands each answer to
    ``on_answer`` (a ``HeartbeatResponse``).

    The stream is reopened with backoff whenever it fails. Heartbeats sent
    while it is down are dropped: the next tick sends fresh ones. Against a
    server without StreamHeartbeats it falls back to unary Heartbeat calls.
    """

    def __init__(
        self,
        conn: Connection,
        on_answer: Callable[[workers_pb2.HeartbeatResponse], None],
        *,
        rpc_timeout: float = 10.0,
    ) -> None:
        self._conn = conn
        self._on_answer = on_answer
        self._rpc_timeout = rpc_timeout
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._requests: queue.SimpleQueue[Any] | None = None
        self._call: grpc.Call | None = None
        self._unary = False
        self._thread = threading.Thread(target=self._run, name="trellis-heartbeats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, requests: list[workers_pb2.HeartbeatRequest]) -> None:
        """Queues ``HeartbeatRequest`` messages on the open stream (if any)."""
        with self._lock:
            target = self._requests
        if target is None:
            return
        for request in requests:
            target.put(request)

    def close(self, timeout: float = 5.0) -> None:
        """Ends the stream and stops the thread."""
        self._closing.set()
        with self._lock:
            if self._requests is not None:
                self._requests.put(_END)
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = Backoff(base=0.1, cap=10.0)
        failures = 0
        while not self._closing.is_set():
            if self._unary:
                self._run_unary()
                return
            requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
            opened = time.monotonic()
            try:
                call = self._conn.workers.StreamHeartbeats(
                    _drain(requests), metadata=self._conn.metadata
                )
                with self._lock:
                    self._requests, self._call = requests, call
                if self._closing.is_set():
                    call.cancel()
                for answer in call:
                    backoff.reset()
                    failures = 0
                    self._on_answer(answer)
            except grpc.RpcError as err:
                if self._closing.is_set():
                    return
                code = rpc_code(err)
                if code is grpc.StatusCode.UNIMPLEMENTED:
                    _log.info("server lacks StreamHeartbeats; using unary heartbeats")
                    self._unary = True
                    continue
                failures += 1
                _log.log(
                    logging.WARNING if failures % 10 == 1 else logging.DEBUG,
                    "heartbeat stream failed (%s: %s); reopening",
                    code.name,
                    rpc_details(err),
                )
            except Exception:
                _log.exception("heartbeat stream failed")
            finally:
                with self._lock:
                    self._requests = self._call = None
                requests.put(_END)
            if time.monotonic() - opened >= _HEALTHY_AFTER:
                backoff.reset()
                failures = 0
            self._closing.wait(backoff.next_delay())

    def _run_unary(self) -> None:
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            self._requests = requests
        for request in _drain(requests):
            try:
                answer = self._conn.workers.Heartbeat(
                    request, timeout=self._rpc_timeout, metadata=self._conn.metadata
                )
            except grpc.RpcError as err:
                code = rpc_code(err)
                if code in TRANSIENT_CODES:
                    continue  # the next tick tries again
                # ABORTED (or NOT_FOUND): the unary form of `lease_lost`.
                answer = workers_pb2.HeartbeatResponse(lease_id=request.lease_id, lease_lost=True)
            self._on_answer(answer)


def _drain(requests: queue.SimpleQueue[Any]) -> Iterator[Any]:
    """The request side of a stream: whatever is queued, until the end marker."""
    while True:
        item = requests.get()
        if item is _END:
            return
        yield item
