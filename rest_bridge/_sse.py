"""Server-Sent Events for live job logs, over the ``LogService/FollowLogs`` stream.

Each stream holds a server worker thread for its whole life, so the number of
streams is capped (``max_sse_streams``) below the server's thread count: streams
must never starve ordinary requests. The gRPC stream is read by a helper thread
into a queue, so that the response thread can send keep-alive comments while no
log arrives, and notice a client that went away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import flask
import grpc

from trellis.v1 import jobs_pb2, logs_pb2

from ._codec import enum_codec, render_message
from ._errors import error_response, rpc_error_response
from ._metadata import InvalidHeaderError, forwarded_metadata
from ._surface import Surface, surface_of

_log = logging.getLogger(__name__)

FOLLOW_LOGS = "/trellis.v1.LogService/FollowLogs"

# How long the first answer is awaited before the response starts: long enough for
# the server to reject an unknown job (a proper 404), short enough not to stall a
# client watching a job that has not logged yet. Deliberately independent of the
# keep-alive interval: a short keep-alive once cut this window below the server's
# lookup time, and unknown jobs then answered 200 with an `error` event.
_START_WAIT_SECS = 2.0
_QUEUE_SIZE = 64
_JOIN_SECS = 5.0

_KEEP_ALIVE = b": keep-alive\n\n"
_MAX_EVENT_ID = 2**63  # event ids are int64

_JOB_STATES = enum_codec(jobs_pb2.JobState.DESCRIPTOR)


@dataclass(frozen=True, slots=True)
class _Item:
    """What the pump thread hands over: a message, the end, or an error."""

    response: logs_pb2.FollowLogsResponse | None = None
    error: grpc.RpcError | None = None


_END = _Item()


class _StreamPump:
    """Reads one gRPC stream on a helper thread into a bounded queue."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=_QUEUE_SIZE)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trellis-sse-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._call:
                if not self._put(_Item(response=response)):
                    return
            self._put(_END)
        except grpc.RpcError as error:
            self._put(_Item(error=error))
        except Exception:  # the pump must always report, or the reader would wait forever
            _log.exception("log stream reader failed")
            self._put(_END)

    def _put(self, item: _Item) -> bool:
        # Bounded so that a slow client pushes back on the server through gRPC flow
        # control; polled so that the thread exits once the reader has gone.
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> _Item | None:
        """The next item, or None when none arrived within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Cancels the call and waits for the helper thread; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._call.cancel()
        # Wake a reader waiting for the next item, so a shutdown ends it at once.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_END)
        self._thread.join(_JOIN_SECS)


class LogStreams:
    """Serves the SSE log route and keeps count of the open streams."""

    def __init__(self, channel: grpc.Channel, *, keepalive_secs: float, max_streams: int) -> None:
        self._follow = channel.unary_stream(
            FOLLOW_LOGS,
            request_serializer=logs_pb2.FollowLogsRequest.SerializeToString,
            response_deserializer=logs_pb2.FollowLogsResponse.FromString,
        )
        #: The conventions of LogService, which the stream's answers follow too.
        self.surface = surface_of(logs_pb2.DESCRIPTOR.services_by_name["LogService"])
        self._style = self.surface.error_style
        self._keepalive = keepalive_secs
        self._max_streams = max_streams
        self._slots = threading.BoundedSemaphore(max_streams)
        self._open: set[_StreamPump] = set()
        self._lock = threading.Lock()

    @property
    def max_streams(self) -> int:
        """How many streams may be open at once."""
        return self._max_streams

    def close_all(self) -> None:
        """Ends every open stream (on server shutdown)."""
        with self._lock:
            pumps = list(self._open)
        for pump in pumps:
            pump.close()

    def view(self, wf_id: str, job_id: str) -> flask.Response:
        """``GET /api/workflows/<wf_id>/jobs/<job_id>/logs/stream``."""
        request = flask.request
        resume = request.headers.get("Last-Event-ID") or request.args.get("last_event_id", "")
        try:
            after_id = int(resume) if resume else 0
            if not 0 <= after_id < _MAX_EVENT_ID:
                raise ValueError
        except ValueError:
            return error_response(
                400, f"Last-Event-ID: expected an event id, got {resume!r}", style=self._style
            )
        try:
            metadata = forwarded_metadata(request)
        except InvalidHeaderError as error:
            return error_response(400, str(error), style=self._style)
        if not self._slots.acquire(blocking=False):
            return error_response(
                503, f"too many log streams open (limit {self._max_streams})", style=self._style
            )
        try:
            call = self._follow(
                logs_pb2.FollowLogsRequest(
                    workflow_id=wf_id,
                    job_id=job_id,
                    run_id=request.args.get("run_id", ""),
                    after_id=after_id,
                ),
                metadata=metadata,
            )
            pump = _StreamPump(call)
        except BaseException:
            self._slots.release()
            raise
        return self._respond(pump)

    def _respond(self, pump: _StreamPump) -> flask.Response:
        with self._lock:
            self._open.add(pump)

        def release() -> None:
            # Called from the generator's end and from the response's close, whichever
            # comes first (a generator that never started runs no `finally`).
            pump.close()
            with self._lock:
                if pump not in self._open:
                    return
                self._open.discard(pump)
            self._slots.release()

        first = pump.get(_START_WAIT_SECS)
        if first is not None and first.error is not None:
            release()
            return rpc_error_response(first.error, style=self._style)

        def events() -> Iterator[bytes]:
            try:
                item = first
                while True:
                    if item is None:
                        yield _KEEP_ALIVE
                    elif item.response is not None:
                        yield from _frames(item.response, self.surface)
                        if item.response.job_finished:
                            return
                    else:
                        if item.error is not None:
                            yield _error_frame(item.error, self._style)
                        return
                    item = pump.get(self._keepalive)
            finally:
                release()

        # content_type, not mimetype: Werkzeug would append a charset to text/*.
        response = flask.Response(events(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.call_on_close(release)
        return response


def _frames(response: logs_pb2.FollowLogsResponse, surface: Surface) -> Iterator[bytes]:
    for chunk in response.chunks:
        rendered = render_message(chunk, json_names=surface.json_names, times=surface.times)
        data = json.dumps(rendered, separators=(",", ":"), ensure_ascii=False)
        yield f"id: {chunk.id}\nevent: log\ndata: {data}\n\n".encode()
    if response.job_finished:
        status = _JOB_STATES.render(response.job_state)
        data = json.dumps({"status": status}, separators=(",", ":"))
        yield f"event: end\ndata: {data}\n\n".encode()


def _error_frame(error: grpc.RpcError, style: int) -> bytes:
    """An ``error`` event for a stream that failed after it had started."""
    answer = rpc_error_response(error, style=style)
    return b"event: error\ndata: " + answer.get_data() + b"\n\n"
