"""Buffers job log lines per lease and ships them with PushLogs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from ._backoff import Backoff
from ._channel import TRANSIENT_CODES, Connection
from ._context import JobContext, LogStreamName, StopReason
from ._errors import rpc_code, rpc_details
from ._pb import logs_pb2
from ._redact import Redactor

# The server refuses text holding NUL (no database stores it in text), and one
# such string refuses the whole request it is in.
NUL = "\x00"
NUL_STANDIN = "\ufffd"

_log = logging.getLogger("trellis.worker_sdk")

_STREAMS: dict[str, logs_pb2.LogStream] = {
    "stdout": logs_pb2.LOG_STREAM_STDOUT,
    "stderr": logs_pb2.LOG_STREAM_STDERR,
}
# (stream, sequence, data, timestamp_ms) of one buffered chunk.
_Chunk = tuple[logs_pb2.LogStream, int, str, int]
# One PushLogs request stays well below gRPC's default 4 MiB message limit.
_MAX_REQUEST_CHARS = 1 << 20


class _LeaseLog:
    """Unsent chunks of one lease and its per-stream sequence counters."""

    __slots__ = ("chunks", "ctx", "dropped", "held", "pending", "push_lock", "sequences")

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        # Oldest first.
        self.chunks: list[_Chunk] = []
        self.pending = 0
        self.sequences = {"stdout": 0, "stderr": 0}
        self.dropped = 0
        # Per stream, an end of the last write that may be the start of a
        # secret: kept until the next write (or the job's end) decides.
        self.held: dict[LogStreamName, str] = {"stdout": "", "stderr": ""}
        # At most one push per lease in flight keeps put-backs in order.
        self.push_lock = threading.Lock()

    def take(self, limit: int) -> list[_Chunk]:
        size = 0
        n = 0
        for chunk in self.chunks:
            if n and size + len(chunk[2]) > limit:
                break
            size += len(chunk[2])
            n += 1
        taken = self.chunks[:n]
        del self.chunks[:n]
        self.pending -= size
        return taken

    def put_back(self, chunks: list[_Chunk]) -> None:
        self.chunks[:0] = chunks
        self.pending += sum(len(c[2]) for c in chunks)


class LogShipper:
    """Per-lease log buffers, flushed every ``interval`` seconds, as soon as a
    lease holds ``flush_chars`` of text, and on demand before results.

    Sequences are assigned when a line is logged, so a push retried after a
    transport error carries the same (stream, sequence) pairs and the server
    drops the duplicates. The ``redactor``'s secrets are masked as lines are
    logged, also when one is written in two pieces.
    """

    def __init__(
        self,
        conn: Connection,
        *,
        interval: float = 0.2,
        flush_chars: int = 64 * 1024,
        max_buffer_chars: int = 8 << 20,
        rpc_timeout: float = 30.0,
        redactor: Redactor | None = None,
    ) -> None:
        self._conn = conn
        self._redactor = redactor or Redactor()
        self._interval = interval
        self._flush_chars = flush_chars
        self._max_buffer = max_buffer_chars
        self._rpc_timeout = rpc_timeout
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._buffers: dict[str, _LeaseLog] = {}
        self._dirty: set[str] = set()
        self._urgent = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="trellis-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stops the periodic flusher (results flush their own logs first)."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def append(self, ctx: JobContext, stream: LogStreamName, data: str) -> None:
        """Buffers ``data`` as one chunk (split when larger than a flush)."""
        if ctx.stop_reason is StopReason.LEASE_LOST:
            return  # the server would refuse it; keep no buffer for a dead lease
        now_ms = time.time_ns() // 1_000_000
        # Programs print NUL (binary output); the server stores no NUL in text.
        data = data.replace(NUL, NUL_STANDIN)
        with self._cv:
            buf = self._buffers.get(ctx.lease_id)
            if buf is None:
                buf = self._buffers[ctx.lease_id] = _LeaseLog(ctx)
            if self._redactor:
                data, buf.held[stream] = self._redactor.split(buf.held[stream] + data)
                if not data:
                    return
            for start in range(0, max(len(data), 1), self._flush_chars):
                piece = data[start : start + self._flush_chars]
                if buf.pending + len(piece) > self._max_buffer:
                    # The server is unreachable and the job keeps talking:
                    # bound memory, and say so in the log once it drains.
                    buf.dropped += len(piece)
                    continue
                if buf.dropped:
                    marker = f"[trellis: {buf.dropped} characters of log dropped]\n"
                    self._add(buf, stream, marker, now_ms)
                    buf.dropped = 0
                self._add(buf, stream, piece, now_ms)
            wake = not self._dirty
            self._dirty.add(ctx.lease_id)
            if buf.pending >= self._flush_chars and not self._urgent:
                self._urgent = wake = True
            if wake:
                self._cv.notify()

    @staticmethod
    def _add(buf: _LeaseLog, stream: LogStreamName, data: str, now_ms: int) -> None:
        seq = buf.sequences[stream]
        buf.sequences[stream] = seq + 1
        buf.chunks.append((_STREAMS[stream], seq, data, now_ms))
        buf.pending += len(data)

    def discard(self, lease_id: str) -> None:
        """Forgets a lease whose job is over (its result was accepted or it was lost)."""
        if lease_id not in self._buffers:
            return  # the common case, a job that logged nothing: no lock taken
        with self._lock:
            self._buffers.pop(lease_id, None)
            self._dirty.discard(lease_id)

    def flush(self, lease_ids: Iterable[str]) -> bool:
        """Pushes everything buffered for these leases; waits for in-flight pushes.

        Returns False when a transient error left lines unsent (the caller retries).
        """
        ids = [lid for lid in lease_ids if lid in self._buffers]
        self._release_held(ids)
        while ids:
            ok, leftover = self._push(ids, blocking=True)
            if not ok:
                return False
            ids = leftover
        return True

    def _release_held(self, lease_ids: list[str]) -> None:
        # The job is over: nothing will complete what it held back.
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            for lid in lease_ids:
                buf = self._buffers.get(lid)
                if buf is None:
                    continue
                for stream, text in buf.held.items():
                    if text:
                        self._add(buf, stream, text, now_ms)
                        buf.held[stream] = ""

    def _push(self, lease_ids: list[str], *, blocking: bool) -> tuple[bool, list[str]]:
        """One round of pushes, concurrent across leases.

        Returns (no transient failure, leases that still hold lines).
        """
        inflight: list[tuple[str, _LeaseLog, list[_Chunk], grpc.Future[Any]]] = []
        skipped: list[str] = []
        for lid in lease_ids:
            buf = self._buffers.get(lid)
            if buf is None:
                continue
            # Only the reporter blocks here, and only it ever holds several
            # push locks while waiting: no lock-order deadlock with the flusher.
            if not buf.push_lock.acquire(blocking=blocking):
                skipped.append(lid)
                continue
            with self._lock:
                batch = buf.take(_MAX_REQUEST_CHARS)
            if not batch:
                buf.push_lock.release()
                continue
            ctx = buf.ctx
            request = logs_pb2.PushLogsRequest(
                lease_id=lid,
                chunks=[
                    logs_pb2.LogChunk(
                        workflow_id=ctx.workflow_id,
                        job_id=ctx.job_id,
                        sequence=seq,
                        data=data,
                        timestamp=Timestamp(seconds=ts // 1000, nanos=ts % 1000 * 1_000_000),
                        stream=kind,
                    )
                    for kind, seq, data, ts in batch
                ],
            )
            try:
                future = self._conn.logs.PushLogs.future(
                    request, timeout=self._rpc_timeout, metadata=self._conn.metadata
                )
            except BaseException:
                buf.push_lock.release()
                raise
            inflight.append((lid, buf, batch, future))

        ok = True
        leftover = list(skipped)
        for lid, buf, batch, pending in inflight:
            try:
                pending.result()
            except grpc.RpcError as err:
                code = rpc_code(err)
                if code in TRANSIENT_CODES:
                    ok = False
                    with self._lock:
                        buf.put_back(batch)
                else:
                    # ABORTED: the lease is spent, so are its logs. Anything
                    # else will not improve by sending the same lines again.
                    if code is not grpc.StatusCode.ABORTED:
                        _log.warning("dropping logs of lease %s: %s", lid, rpc_details(err))
                    self.discard(lid)
            finally:
                buf.push_lock.release()
            if buf.chunks and self._buffers.get(lid) is buf:
                leftover.append(lid)
        return ok, leftover

    def _run(self) -> None:
        backoff = Backoff(base=self._interval, cap=5.0)
        while True:
            with self._cv:
                while not self._dirty and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return
                if not self._urgent:
                    # Gather what the job logs in the next moments into one push.
                    self._cv.wait(self._interval)
                    if self._closing:
                        return
                ids = list(self._dirty)
                self._dirty.clear()
                self._urgent = False
            try:
                ok, leftover = self._push(ids, blocking=False)
            except Exception:  # never let the flusher die: results depend on it
                _log.exception("log flush failed")
                ok, leftover = False, ids
            if leftover:
                with self._cv:
                    self._dirty.update(lid for lid in leftover if lid in self._buffers)
            if ok:
                backoff.reset()
            else:
                with self._cv:
                    if not self._closing:
                        self._cv.wait(backoff.next_delay())
