"""A production WSGI server (waitress) for the bridge, run on a background thread."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from typing import Any, Protocol, cast

import flask
from waitress import trigger as waitress_trigger
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ErrorTask, Task, WSGITask

from ._app import EXTENSION, REFUSED_KEY, BridgeState
from ._ws_socket import DETACH_KEY

_STOP_SECS = 5
_log = logging.getLogger(__name__)


class _Trigger(Protocol):
    # waitress' trigger runs thunks on its event-loop thread (its stubs type it as int).
    def pull_trigger(self, thunk: object = None) -> None: ...


class RestServer:
    """Serves a WSGI app with waitress in a background thread (never Flask's dev server).

    Each request holds one of ``threads`` worker threads while it runs, including
    long polls (``wait_secs``) and SSE streams; keep ``threads`` above the app's
    ``max_sse_streams`` (32 against 24 by default) so that streams never starve
    ordinary requests.
    """

    def __init__(
        self,
        app: flask.Flask,
        host: str = "0.0.0.0",
        port: int = 3000,
        threads: int = 32,
        *,
        connection_limit: int = 1000,
        channel_timeout: int = 120,
        quiet_queue_warnings: bool = True,
    ) -> None:
        """Prepares (does not start) the server.

        Args:
            app: The WSGI application, usually from :func:`create_app`.
            host: Interface to listen on.
            port: TCP port; 0 picks a free one (see :attr:`port`).
            threads: Worker threads.
            connection_limit: Open connections at most; keep-alive clients and
                workers each hold one.
            channel_timeout: Seconds an idle keep-alive connection stays open.
            quiet_queue_warnings: Silence waitress' "Task queue depth" warnings,
                which fire on every request queued behind busy threads: under a
                claim loop's bursts they are noise, not a fault.
        """
        self._app = app
        self._host = host
        self._requested_port = port
        self._threads = threads
        self._connection_limit = connection_limit
        self._channel_timeout = channel_timeout
        self._quiet_queue_warnings = quiet_queue_warnings
        # Our own socket map, so that stop() can close every connection in it.
        self._map: dict[int, Any] = {}
        self._server: BaseWSGIServer | MultiSocketServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Binds the socket and starts serving; returns once the socket is bound."""
        if self._server is not None:
            raise RuntimeError("RestServer already started")
        if self._quiet_queue_warnings:
            logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        state = self._app.extensions.get(EXTENSION)
        if isinstance(state, BridgeState) and self._threads <= state.log_streams.max_streams:
            _log.warning(
                "%d threads for up to %d SSE streams: streams can starve other requests",
                self._threads,
                state.log_streams.max_streams,
            )
        body_limit = self._app.config.get("MAX_CONTENT_LENGTH")
        # waitress buffers a whole body before the app sees it, so it applies the
        # app's limit itself (refusing at `>=`, the app at `>`), by Content-Length
        # before reading any of it; the app renders that refusal (_Channel).
        max_body = body_limit + 1 if isinstance(body_limit, int) else 1 << 30
        self._server = create_server(
            self._app,
            map=cast(Any, self._map),
            host=self._host,
            port=self._requested_port,
            threads=self._threads,
            connection_limit=self._connection_limit,
            channel_timeout=self._channel_timeout,
            # poll() has no FD_SETSIZE ceiling, unlike select(), for many connections.
            asyncore_use_poll=True,
            ident="trellis",
            max_request_body_size=max_body,
        )
        for dispatcher in [self._server, *self._map.values()]:
            if isinstance(dispatcher, BaseWSGIServer):
                dispatcher.channel_class = _Channel
        self._thread = threading.Thread(
            target=self._server.run, name="trellis-rest-server", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The bound port (the one picked by the system when constructed with port=0)."""
        if self._server is None:
            raise RuntimeError("RestServer not started")
        # Present on every listening waitress server, though missing from its stubs.
        return int(cast(Any, self._listener()).effective_port)

    def _listener(self) -> BaseWSGIServer:
        # A host name resolving to several addresses gives a MultiSocketServer, whose
        # listeners (one per address) sit in the socket map.
        if isinstance(self._server, BaseWSGIServer):
            return self._server
        for dispatcher in self._map.values():
            if isinstance(dispatcher, BaseWSGIServer):
                return dispatcher
        raise RuntimeError("RestServer has no listening socket")

    def stop(self) -> None:
        """Stops serving: ends SSE streams, closes listener and connections, joins threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        listener = self._listener()
        self._server = self._thread = None
        state = self._app.extensions.get(EXTENSION)
        if isinstance(state, BridgeState):
            state.close()
        # Sockets belong to the event-loop thread; close them there, after which the
        # loop finds its map empty and returns. The triggers (one per listener) are
        # only taken out of the map, not closed: the thunk may run before
        # pull_trigger's own write (another thread's pull can wake the loop first),
        # and worker threads pull the trigger when their tasks end. Closing it in
        # the thunk made stop() fail with EBADF now and then, and a late pull could
        # write into whatever file reused the descriptor.
        socket_map = self._map
        triggers: list[waitress_trigger.trigger] = []
        trigger = cast(_Trigger, listener.trigger)
        trigger.pull_trigger(lambda: _close_sockets(socket_map, triggers))
        thread.join(_STOP_SECS)
        dispatcher = server.task_dispatcher
        dispatcher.shutdown(cancel_pending=True, timeout=_STOP_SECS)
        if dispatcher.threads:
            # A worker is still busy (a long poll); it will pull a trigger when it
            # ends, so leave those open (a few descriptors) rather than risk that.
            _log.warning("%d REST worker thread(s) still running", len(dispatcher.threads))
            return
        for pipe in triggers:
            pipe.close()


def _close_sockets(socket_map: dict[int, Any], triggers: list[waitress_trigger.trigger]) -> None:
    """Closes listeners and connections on the event-loop thread (which owns the map);
    unmaps the triggers into ``triggers`` for the caller to close later."""
    for dispatcher in list(socket_map.values()):
        # Like wasyncore.close_all(ignore_all=True): a socket that fails to close is gone.
        with contextlib.suppress(Exception):
            if isinstance(dispatcher, waitress_trigger.trigger):
                dispatcher.del_channel()
                triggers.append(dispatcher)
            elif isinstance(dispatcher, BaseWSGIServer):
                # BaseWSGIServer.close() would close the listener's trigger too.
                wasyncore.dispatcher.close(dispatcher)
            else:
                dispatcher.close()
    socket_map.clear()


class _RefusalTask(WSGITask):
    """A request waitress refused (a body over the limit, a malformed one), answered
    by the app as it answers every error: in JSON, in the style of its path. The
    app reads the refusal from the environ and no body."""

    def execute(self) -> None:
        # The rest of a refused body may still be on its way.
        self.set_close_on_finish()
        super().execute()

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        error = cast(Any, self.request).error  # the parser (see _refusal_task)
        environ[REFUSED_KEY] = (int(error.code), str(error.body))
        environ["wsgi.input"] = io.BytesIO()
        return environ


def _refusal_task(channel: HTTPChannel, request: Any) -> Task:
    # `request` is the HTTPRequestParser (the stubs type tasks' requests as errors).
    # A request whose request line did not parse has no path to answer for.
    error = request.error
    # waitress' own internal-error request has neither command nor path.
    command, path = getattr(request, "command", None), getattr(request, "path", None)
    if command and path and error is not None and 400 <= error.code < 500:
        return _RefusalTask(channel, request)
    return ErrorTask(channel, request)


class _Task(WSGITask):
    """A request whose connection the app may take over (a WebSocket upgrade) by
    calling ``environ[DETACH_KEY]``; waitress then writes no answer and forgets
    the socket."""

    detached = False

    def get_environment(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environment()
        environ[DETACH_KEY] = self._detach
        return environ

    def _detach(self) -> socket.socket:
        if self.detached:
            raise RuntimeError("the connection is detached already")
        channel = cast(Any, self.channel)
        # While this task runs the channel is neither readable nor writable for
        # the event loop, but the socket map belongs to the loop's thread: the
        # socket leaves it there, between two polls.
        unmapped = threading.Event()

        def unmap() -> None:
            with contextlib.suppress(Exception):
                channel.del_channel()
            unmapped.set()

        cast(_Trigger, channel.server.trigger).pull_trigger(unmap)
        if not unmapped.wait(_STOP_SECS):
            raise OSError("the REST server's event loop did not release the connection")
        self.detached = True
        self.close_on_finish = True
        # Later writes by waitress find the channel disconnected; the descriptor
        # moves to a new socket object, so that closing the channel's (or its
        # garbage collection) leaves the connection open.
        channel.connected = False
        sock: socket.socket = channel.socket
        return socket.socket(fileno=sock.detach())

    def finish(self) -> None:
        if not self.detached:
            super().finish()

    def write(self, data: bytes) -> None:
        if not self.detached:
            super().write(data)


class _Channel(HTTPChannel):
    task_class = _Task
    # waitress makes its refusals with this; the stubs type it as the class.
    error_task_class = staticmethod(_refusal_task)  # type: ignore[assignment]
