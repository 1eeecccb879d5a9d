"""WebSocket ``GET /ws``: the organization's events, pushed live from the event log.

The handshake is a request like any other: the bridge asks the server first
(``EventService/ListEvents`` for one event, with the caller's credentials and the
socket's cursor and filter), so that a refused credential, a missing scope, a rate
limit or a bad cursor is an HTTP error with a JSON body, before any upgrade. Then
it opens ``EventService/StreamEvents`` and waits for the stream's headers (sent
once the stream knows where it starts, so that nothing committed after the
``101`` is missed, even with ``cursor=now``), takes its connection out of the
WSGI server (see ``_ws_socket``) and answers ``101``; from there the ``websockets`` library speaks
the protocol (framing, pings, the closing handshake) on threads of the socket's
own, so an open socket holds none of the server's request threads.

Per socket, a pump thread reads ``EventService/StreamEvents`` into a bounded
queue and a sender thread writes each event as one text message. While the queue
is full the pump waits (gRPC flow control holds the server's stream back), so a
replay burst is no fault; a queue that stays full for ``send_timeout_secs`` is a
client reading slower than events come: its stream is cancelled and the socket
closed with 1008 (policy violation). It reconnects with the cursor of the last
event it got and misses nothing. A client that stops reading altogether is
dropped when a send has not gone through within ``send_timeout_secs``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import flask
import grpc
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import DATA_OPCODES, CloseCode, Frame
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, OPEN, Event
from websockets.server import ServerProtocol
from websockets.sync.connection import Connection

from trellis.v1 import events_pb2

from ._errors import error_response, rpc_error_response
from ._json_values import CodecError
from ._metadata import InvalidHeaderError, forwarded_metadata
from ._surface import Surface, surface_of
from ._ws_events import event_text, parse_types
from ._ws_socket import DETACH_KEY, DetachSocket

_log = logging.getLogger(__name__)

LIST_EVENTS = "/trellis.v1.EventService/ListEvents"
STREAM_EVENTS = "/trellis.v1.EventService/StreamEvents"

# Clients have nothing to say on this socket; their messages are read and dropped,
# and one larger than this closes it (1009).
_MAX_CLIENT_MESSAGE = 64 * 1024
# A close reason is at most 123 bytes (RFC 6455 section 5.5).
_MAX_REASON_BYTES = 123
_JOIN_SECS = 5.0
# Events written to the socket together at most (what has queued meanwhile).
_SEND_BATCH = 64


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """How the bridge runs its WebSockets."""

    #: Seconds between pings; a pong missing ``ping_timeout_secs`` after a ping
    #: closes the socket (1011).
    ping_interval_secs: float = 20.0
    ping_timeout_secs: float = 20.0
    #: Open sockets per organization at most, on this bridge; 0: no limit.
    max_per_org: int = 32
    #: Events waiting to be sent at most. A queue that stays full for
    #: ``send_timeout_secs`` (a client reading slower than events come) closes
    #: the socket (1008).
    queue_events: int = 256
    #: The longest one message may take to go out (a client that stopped reading),
    #: and the longest the queue may stay full.
    send_timeout_secs: float = 10.0
    #: How long the closing handshake may take.
    close_timeout_secs: float = 5.0
    #: The deadline of the ListEvents call that admits a socket.
    call_timeout_secs: float = 30.0

    def __post_init__(self) -> None:
        if self.queue_events < 1:
            raise ValueError("queue_events must be at least 1")
        if self.max_per_org < 0:
            raise ValueError("max_per_org must not be negative")


@dataclass(frozen=True, slots=True)
class _Item:
    """What the pump hands over: an event, a wake-up (neither), or the stream's end."""

    event: events_pb2.Event | None = None
    error: grpc.RpcError | None = None
    end: bool = False


_WAKE = _Item()
_END = _Item(end=True)


class _Pump:
    """Reads one StreamEvents call on a thread of its own into a bounded queue."""

    def __init__(self, call: Any, size: int, grace_secs: float) -> None:
        self._call = call
        self._grace = grace_secs
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=size)
        #: Set when the queue was full: the call is cancelled, the socket must close.
        self.overflowed = threading.Event()
        #: Set once the server has sent the stream's headers (or ended it).
        self.opened = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trellis-ws-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # Returns once the stream is open, or has failed (then iterating raises).
            self._call.initial_metadata()
            self.opened.set()
            for event in self._call:
                if not self._put(_Item(event=event)):
                    if not self._closed.is_set():
                        self.overflowed.set()
                        self._call.cancel()
                        self.wake()
                    return
            self._finish(_END)
        except grpc.RpcError as error:
            self._finish(_END if self._closed.is_set() else _Item(error=error, end=True))
        except Exception:  # the pump must always report, or the sender would wait forever
            _log.exception("event stream reader failed")
            self._finish(_END)

    def _put(self, item: _Item) -> bool:
        # A full queue waits for the sender (the gRPC stream pushes back on the
        # server meanwhile): a replay burst is no slow client. One that stays full
        # for the grace period is; so is a socket that has closed.
        deadline = time.monotonic() + self._grace
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                return True
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
        return False

    def _finish(self, item: _Item) -> None:
        self.opened.set()
        # Behind every event still queued; polled, so the thread ends with the socket.
        while not self._closed.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(item, timeout=0.5)
                return

    def get(self, timeout: float) -> _Item:
        """The next item; :data:`_WAKE` after ``timeout`` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return _WAKE

    def take(self, timeout: float, limit: int) -> tuple[list[str], _Item | None]:
        """The texts of the events queued now, at most ``limit`` (waiting up to
        ``timeout`` seconds for the first), and the end when it came."""
        texts: list[str] = []
        item = self.get(timeout)
        while True:
            if item.end:
                return texts, item
            if item.event is not None:
                texts.append(event_text(item.event))
                if len(texts) >= limit:
                    return texts, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return texts, None

    def wake(self) -> None:
        """Wakes a sender waiting in :meth:`get` (it then looks at its flags)."""
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_WAKE)

    def close(self) -> None:
        """Cancels the call and waits for the thread; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._call.cancel()
        self._thread.join(_JOIN_SECS)


class _Connection(Connection):
    """The library's connection, for a socket that only pushes: it drops what the
    client sends (so that unread messages neither pile up nor stop it reading pongs
    and closes) and says when the socket has closed."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: ServerProtocol,
        on_closed: Callable[[], None],
        settings: WebSocketSettings,
    ) -> None:
        # Before the base class starts the thread that calls it.
        self._on_closed = on_closed
        super().__init__(
            sock,
            protocol,
            ping_interval=settings.ping_interval_secs,
            ping_timeout=settings.ping_timeout_secs,
            close_timeout=settings.close_timeout_secs,
            max_queue=1,
        )

    def send_texts(self, texts: list[str]) -> None:
        """Sends each text as one message; those queued together go out in one write."""
        with self.send_context():
            for text in texts:
                self.protocol.send_text(text.encode())

    def send_data(self) -> None:
        # The base class writes each frame by itself: a syscall per event.
        pending = self.protocol.data_to_send()
        if len(pending) > 1 and all(pending):
            pending = [b"".join(pending)]
        for data in pending:
            if data:
                if self.close_deadline is not None:
                    self.socket.settimeout(self.close_deadline.timeout())
                self.socket.sendall(data)
            else:
                with contextlib.suppress(OSError):
                    self.socket.shutdown(socket.SHUT_WR)

    def recv_events(self) -> None:
        try:
            super().recv_events()
        finally:
            self._on_closed()

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES:
            return
        super().process_event(event)


def _close_for(error: grpc.RpcError | None) -> tuple[int, str]:
    """The close code and reason for a stream that ended (with ``error``, or without)."""
    if error is None:
        return CloseCode.GOING_AWAY, "the event stream ended"
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    reason = str(details or code or "the event stream failed")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return CloseCode.POLICY_VIOLATION, reason
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return CloseCode.TRY_AGAIN_LATER, reason
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return CloseCode.GOING_AWAY, reason
    return CloseCode.INTERNAL_ERROR, reason


def _short(reason: str) -> str:
    data = reason.encode()
    if len(data) <= _MAX_REASON_BYTES:
        return reason
    return data[: _MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


class _Session:
    """One open socket: sends what its pump reads until either end closes."""

    def __init__(
        self,
        owner: WebSockets,
        key: str,
        pump: _Pump,
        sock: socket.socket,
        protocol: ServerProtocol,
    ) -> None:
        self._owner = owner
        self.key = key
        self._pump = pump
        self._settings = owner.settings
        self._stopping = threading.Event()
        self.connection = _Connection(sock, protocol, pump.wake, owner.settings)
        self.connection.start_keepalive()
        self.thread = threading.Thread(target=self._run, name="trellis-ws", daemon=True)

    def stop(self) -> None:
        """Asks the socket to close with 1001 (the server is going away)."""
        self._stopping.set()
        self._pump.wake()

    def _run(self) -> None:
        code: int = CloseCode.NORMAL_CLOSURE
        reason = ""
        connection = self.connection
        # Idle waits are bounded only so that a missed wake-up cannot strand the thread.
        idle = max(self._settings.ping_interval_secs, 1.0)
        try:
            while True:
                if self._stopping.is_set():
                    code, reason = CloseCode.GOING_AWAY, "the server is shutting down"
                    break
                if self._pump.overflowed.is_set():
                    code = CloseCode.POLICY_VIOLATION
                    reason = (
                        f"too slow: {self._settings.queue_events} events waited to be sent; "
                        "reconnect with the last cursor"
                    )
                    break
                if connection.state is not OPEN:
                    break
                texts, end = self._pump.take(idle, _SEND_BATCH)
                if texts:
                    connection.send_texts(texts)
                if end is not None:
                    code, reason = _close_for(end.error)
                    break
        except ConnectionClosed:
            pass
        except Exception:
            _log.exception("WebSocket sender failed")
            code, reason = CloseCode.INTERNAL_ERROR, "internal error"
        finally:
            self._pump.close()
            if connection.state is not CLOSED:
                with contextlib.suppress(Exception):
                    connection.close(code, _short(reason))
            self._owner.release(self)


class WebSockets:
    """Serves ``GET /ws`` and keeps count of the open sockets."""

    def __init__(self, channel: grpc.Channel, settings: WebSocketSettings) -> None:
        self.settings = settings
        self._list = channel.unary_unary(
            LIST_EVENTS,
            request_serializer=events_pb2.ListEventsRequest.SerializeToString,
            response_deserializer=events_pb2.ListEventsResponse.FromString,
        )
        self._stream = channel.unary_stream(
            STREAM_EVENTS,
            request_serializer=events_pb2.StreamEventsRequest.SerializeToString,
            response_deserializer=events_pb2.Event.FromString,
        )
        #: The conventions of EventService, which the handshake's errors follow.
        self.surface: Surface = surface_of(events_pb2.DESCRIPTOR.services_by_name["EventService"])
        self._style = self.surface.error_style
        self._lock = threading.Lock()
        self._per_key: dict[str, int] = {}
        self._open: set[_Session] = set()
        self._closing = False

    def open_count(self) -> int:
        """How many sockets are open."""
        with self._lock:
            return len(self._open)

    def close_all(self) -> None:
        """Closes every open socket with 1001 (on server shutdown) and waits for them."""
        with self._lock:
            self._closing = True
            sessions = list(self._open)
        for session in sessions:
            session.stop()
        deadline = time.monotonic() + _JOIN_SECS
        for session in sessions:
            session.thread.join(max(0.0, deadline - time.monotonic()))

    def release(self, session: _Session) -> None:
        """Forgets a closed socket (its sender's last act)."""
        with self._lock:
            if session in self._open:
                self._open.discard(session)
                self._unreserve(session.key)

    def _reserve(self, key: str) -> bool:
        # Under self._lock.
        count = self._per_key.get(key, 0)
        if self.settings.max_per_org and count >= self.settings.max_per_org:
            return False
        self._per_key[key] = count + 1
        return True

    def _unreserve(self, key: str) -> None:
        # Under self._lock.
        count = self._per_key.get(key, 0) - 1
        if count > 0:
            self._per_key[key] = count
        else:
            self._per_key.pop(key, None)

    def view(self) -> flask.Response:
        """``GET /ws``."""
        request = flask.request
        args = request.args
        try:
            types = parse_types(",".join(args.getlist("types")))
        except CodecError as error:
            return error_response(400, str(error), style=self._style)
        try:
            metadata = _metadata(request)
        except InvalidHeaderError as error:
            return error_response(400, str(error), style=self._style)
        protocol = ServerProtocol()
        handshake = protocol.accept(
            Request(path=request.full_path, headers=Headers(request.headers.items()))
        )
        if handshake.status_code != 101:
            problem = protocol.handshake_exc or handshake.reason_phrase
            # Not 426: its Upgrade header is hop-by-hop, which WSGI forbids.
            status = 400 if handshake.status_code == 426 else handshake.status_code
            return error_response(
                status, f"not a WebSocket handshake: {problem}", style=self._style
            )
        detach: DetachSocket | None = request.environ.get(DETACH_KEY)
        if detach is None:
            return error_response(
                501, "WebSocket needs the Trellis REST server (RestServer)", style=self._style
            )
        flt = events_pb2.EventFilter(
            workflow_id=args.get("workflow_id", ""),
            run_id=args.get("run_id", ""),
            job_id=args.get("job_id", ""),
            types=cast(Any, types),
        )
        cursor = args.get("cursor", "")
        try:
            # Admission: the server judges the credentials, the scope, the rate
            # limit, the cursor and the filter, while an HTTP answer is possible.
            # ("now" is the stream's alone: the probe reads from anywhere.)
            self._list(
                events_pb2.ListEventsRequest(
                    after_cursor="" if cursor == "now" else cursor, filter=flt, page_size=1
                ),
                metadata=metadata,
                timeout=self.settings.call_timeout_secs,
            )
        except grpc.RpcError as error:
            return rpc_error_response(error, style=self._style)
        key = _limit_key(metadata)
        with self._lock:
            if self._closing:
                return error_response(503, "the server is shutting down", style=self._style)
            if not self._reserve(key):
                return error_response(
                    429,
                    "too many WebSockets open for this organization "
                    f"(limit {self.settings.max_per_org})",
                    code=grpc.StatusCode.RESOURCE_EXHAUSTED,
                    style=self._style,
                )
        try:
            answer = self._upgrade(detach, protocol, handshake, cursor, flt, metadata, key)
        except BaseException:
            with self._lock:
                self._unreserve(key)
            raise
        if not isinstance(answer, _Session):
            with self._lock:
                self._unreserve(key)
            if answer is not None:
                return answer
        # Nothing of this answer is written: the connection is the socket's now.
        return flask.Response(status=101)

    def _upgrade(
        self,
        detach: DetachSocket,
        protocol: ServerProtocol,
        handshake: Response,
        cursor: str,
        flt: events_pb2.EventFilter,
        metadata: tuple[tuple[str, str], ...],
        key: str,
    ) -> _Session | flask.Response | None:
        """The open socket; or the HTTP answer when the stream failed to open; or
        None when the client went away during the handshake."""
        call: Any = self._stream(
            events_pb2.StreamEventsRequest(after_cursor=cursor, filter=flt), metadata=metadata
        )
        pump = _Pump(call, self.settings.queue_events, self.settings.send_timeout_secs)
        # The stream's headers say it knows where it starts: an event committed
        # after the 101 reaches the client, even with cursor=now.
        if not pump.opened.wait(self.settings.call_timeout_secs):
            pump.close()
            return error_response(504, "the event stream did not open in time", style=self._style)
        if call.done() and call.code() != grpc.StatusCode.OK:
            pump.close()
            return rpc_error_response(call, style=self._style)
        try:
            sock = detach()
        except BaseException:
            pump.close()
            raise
        try:
            sock.settimeout(self.settings.send_timeout_secs)
            protocol.send_response(handshake)
            sock.sendall(b"".join(protocol.data_to_send()))
            # The handshake's protocol still parses its input as a request (which
            # waitress read); the socket's starts where the handshake ended.
            opened = ServerProtocol(state=OPEN, max_size=_MAX_CLIENT_MESSAGE)
            session = _Session(self, key, pump, sock, opened)
        except Exception:
            pump.close()
            with contextlib.suppress(OSError):
                sock.close()
            _log.info("WebSocket handshake could not be sent", exc_info=True)
            return None
        with self._lock:
            self._open.add(session)
        session.thread.start()
        return session


def _metadata(request: flask.Request) -> tuple[tuple[str, str], ...]:
    """The forwarded metadata, with a ``token`` query parameter as the bearer token
    when no Authorization header is sent (browsers cannot set headers on a socket)."""
    metadata = forwarded_metadata(request)
    token = request.args.get("token", "")
    if token and not any(key == "authorization" for key, _ in metadata):
        value = f"Bearer {token}"
        if not (value.isascii() and value.isprintable()):
            raise InvalidHeaderError("token holds characters gRPC cannot carry")
        metadata = (("authorization", value), *metadata)
    return metadata


def _limit_key(metadata: tuple[tuple[str, str], ...]) -> str:
    """Whose sockets a new one counts among: the organization the request names
    (the server has accepted the credential for it), else the credential's own."""
    values: Mapping[str, str] = dict(metadata)
    org = values.get("x-organization-id")
    if org:
        return f"org:{org}"
    credential = values.get("authorization", "")
    return "credential:" + hashlib.sha256(credential.encode()).hexdigest()
