"""The worker's assignment stream: registers, streams, and reconnects with backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from ._backoff import Backoff
from ._channel import Connection
from ._errors import TrellisError, rpc_code, rpc_details, wrap_rpc_error
from ._pb import workers_pb2

_log = logging.getLogger("trellis.worker_sdk")

# A stream that stayed up this long proves the server is healthy again.
_HEALTHY_AFTER = 10.0

# Answers after which reconnecting is pointless.
_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})

Requests = tuple[workers_pb2.RegisterWorkerRequest, workers_pb2.StreamAssignmentsRequest]


class AssignmentStream:
    """Keeps a StreamAssignments call open until ``stopping`` is set.

    ``requests`` is asked anew for each connection (handlers registered in
    the meantime count from then); each response goes to ``on_response``.
    A server that refuses the worker's credentials goes to ``on_refused``
    and ends the loop; any other failure is retried forever with backoff.
    ``lock`` is the worker's: it orders opening a call against stopping.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        worker_id: str,
        target: str,
        lock: threading.Lock,
        stopping: threading.Event,
        requests: Callable[[], Requests],
        on_response: Callable[[workers_pb2.StreamAssignmentsResponse], None],
        on_refused: Callable[[TrellisError], None],
    ) -> None:
        self._conn = conn
        self._worker_id = worker_id
        self._target = target
        self._lock = lock
        self._stopping = stopping
        self._requests = requests
        self._on_response = on_response
        self._on_refused = on_refused
        self._call: grpc.Call | None = None  # the open call, if any

    def cancel(self) -> None:
        """Cancels the open call; with ``stopping`` set, no other is opened."""
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def run(self) -> None:
        conn = self._conn
        backoff = Backoff(base=0.1, cap=10.0)
        failures = 0
        while not self._stopping.is_set():
            opened = time.monotonic()
            registration, request = self._requests()
            try:
                conn.workers.RegisterWorker(registration, timeout=10.0, metadata=conn.metadata)
                call = conn.workers.StreamAssignments(request, metadata=conn.metadata)
                with self._lock:
                    if self._stopping.is_set():
                        call.cancel()
                        break
                    self._call = call
                _log.info("worker %s connected to %s", self._worker_id, self._target)
                failures = 0
                for response in call:
                    backoff.reset()
                    self._on_response(response)
                _log.info("assignment stream ended by the server; reconnecting")
            except grpc.RpcError as err:
                if self._stopping.is_set():
                    break
                if rpc_code(err) in _REFUSED:
                    # Retrying cannot mend a missing, revoked or too narrow
                    # credential: stop, and let run() say why.
                    _log.error(
                        "the server refused this worker (%s: %s); stopping",
                        rpc_code(err).name,
                        rpc_details(err),
                    )
                    self._on_refused(wrap_rpc_error(err))
                    break
                failures += 1
                # Say it once, then now and then: a worker waiting for its
                # server should not flood the log.
                _log.log(
                    logging.WARNING if failures % 10 == 1 else logging.DEBUG,
                    "cannot stream assignments from %s (%s: %s); retrying",
                    self._target,
                    rpc_code(err).name,
                    rpc_details(err),
                )
            except Exception:
                if self._stopping.is_set():
                    break
                _log.exception("assignment stream failed")
            finally:
                with self._lock:
                    self._call = None
            if time.monotonic() - opened >= _HEALTHY_AFTER:
                backoff.reset()
            self._stopping.wait(backoff.next_delay())
