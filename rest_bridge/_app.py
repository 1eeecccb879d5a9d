"""Assembly of the Flask application: generated routes, hand-written routes, errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import flask
import grpc
from flask.typing import RouteCallable
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge, abort
from werkzeug.routing import RequestRedirect

from ._attribution import SurfaceLocator
from ._cors import install_cors
from ._errors import error_response
from ._health import HealthCheck
from ._http_rules import UnsupportedRuleError, discover_bindings
from ._routes import TranscodedRoute
from ._sse import LogStreams
from ._surface import Surface
from ._ws import WebSockets, WebSocketSettings

_log = logging.getLogger(__name__)

#: Key of the bridge's state in ``app.extensions``.
EXTENSION = "trellis.rest_bridge"

_VARIABLE_RULE = re.compile(r"<[^>]*>")

#: Where the WSGI server puts ``(status, message)`` of a request it refused
#: itself (RestServer), for the app to answer in JSON like its own errors.
REFUSED_KEY = "trellis.refused"

LOG_STREAM_PATH = "/api/workflows/<wf_id>/jobs/<job_id>/logs/stream"
WEBSOCKET_PATH = "/ws"


class BridgeState:
    """What the running bridge holds beyond its routes."""

    def __init__(
        self, routes: list[TranscodedRoute], log_streams: LogStreams, websockets: WebSockets
    ) -> None:
        self.routes = routes
        self.log_streams = log_streams
        self.websockets = websockets

    def close(self) -> None:
        """Ends long-lived answers (SSE streams, WebSockets) so the server can stop promptly."""
        self.log_streams.close_all()
        self.websockets.close_all()


def create_app(
    channel: grpc.Channel,
    *,
    cors_origins: Sequence[str] | None = None,
    sse_keepalive_secs: float = 15.0,
    max_sse_streams: int = 24,
    max_body_bytes: int = 8 * 1024 * 1024,
    call_timeout_secs: float = 30.0,
    websockets: WebSocketSettings | None = None,
) -> flask.Flask:
    """Builds the REST application that transcodes onto the gRPC API behind ``channel``.

    Routes come from the ``google.api.http`` rules of every unary RPC in ``trellis.v1``;
    the log SSE stream, the ``/ws`` WebSocket, ``/healthz`` and CORS are added by hand.

    Args:
        channel: The channel to the Trellis gRPC server, shared by all requests.
        cors_origins: Allowed browser origins; None allows any origin.
        sse_keepalive_secs: Idle time after which an SSE stream sends a comment.
        max_sse_streams: Open SSE streams at most; each holds a server thread, so the
            WSGI server needs more threads than this (RestServer: 32 against 24).
        max_body_bytes: Largest accepted request body (413 beyond).
        call_timeout_secs: Deadline of each RPC, plus the request's ``wait_secs``.
        websockets: How ``/ws`` runs its sockets (pings, limits); None: the defaults.

    Raises:
        UnsupportedRuleError: a proto HTTP rule the bridge cannot serve.
    """
    if max_sse_streams < 1:
        raise ValueError("max_sse_streams must be at least 1")
    app = flask.Flask(EXTENSION, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    # Merging slashes answers with a redirect, which is no JSON API answer.
    app.url_map.merge_slashes = False

    registered: dict[tuple[str, str], str] = {}

    def register(rule: str, verb: str, endpoint: str, view: RouteCallable) -> None:
        # Rules differing only in variable names would shadow each other.
        shape = _VARIABLE_RULE.sub("<>", rule)
        other = registered.setdefault((verb, shape), endpoint)
        if other != endpoint:
            raise UnsupportedRuleError(f"{verb} {rule} is bound to both {other} and {endpoint}")
        app.add_url_rule(
            rule, endpoint=endpoint, view_func=view, methods=[verb], provide_automatic_options=False
        )

    routes: list[TranscodedRoute] = []
    endpoints: dict[str, int] = {}
    surfaces: dict[str, Surface] = {}
    for binding in discover_bindings():
        route = TranscodedRoute(binding, channel, call_timeout_secs=call_timeout_secs)
        routes.append(route)
        # Additional bindings of one RPC get numbered endpoints.
        name = binding.method.full_name
        seen = endpoints[name] = endpoints.get(name, -1) + 1
        endpoint = f"{name}#{seen}" if seen else name
        register(binding.path.rule, binding.verb, endpoint, route)
        surfaces[endpoint] = binding.surface

    log_streams = LogStreams(
        channel, keepalive_secs=sse_keepalive_secs, max_streams=max_sse_streams
    )
    register(LOG_STREAM_PATH, "GET", "trellis.rest_bridge.log_stream", log_streams.view)
    surfaces["trellis.rest_bridge.log_stream"] = log_streams.surface
    sockets = WebSockets(
        channel, websockets or WebSocketSettings(call_timeout_secs=call_timeout_secs)
    )
    register(WEBSOCKET_PATH, "GET", "trellis.rest_bridge.websocket", sockets.view)
    # Werkzeug routes upgrade requests only to rules marked for WebSocket; the
    # plain rule answers the rest (426, as the handshake says).
    app.add_url_rule(
        WEBSOCKET_PATH,
        endpoint="trellis.rest_bridge.websocket",
        view_func=sockets.view,
        methods=["GET"],
        provide_automatic_options=False,
        websocket=True,
    )
    surfaces["trellis.rest_bridge.websocket"] = sockets.surface
    register("/healthz", "GET", "trellis.rest_bridge.healthz", HealthCheck(channel).view)

    install_cors(app, cors_origins)
    locator = SurfaceLocator(
        surfaces, [(route.binding.path.template, route.surface) for route in routes]
    )
    _install_error_handlers(app, max_body_bytes, locator)
    app.extensions[EXTENSION] = BridgeState(routes, log_streams, sockets)
    return app


def _install_error_handlers(app: flask.Flask, max_body_bytes: int, locator: SurfaceLocator) -> None:
    def http_error(error: HTTPException) -> flask.Response | HTTPException:
        if isinstance(error, RequestRedirect):
            return error
        request = flask.request
        status = error.code or 500
        if status == 404:
            message = f"no route for {request.method} {request.path}"
        elif isinstance(error, MethodNotAllowed):
            allowed = sorted(error.valid_methods or ())
            message = f"{request.method} is not allowed on {request.path}"
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        elif isinstance(error, RequestEntityTooLarge):
            message = f"request body is larger than {max_body_bytes} bytes"
        else:
            message = error.description or error.name
        style = locator.for_request(request, error).error_style
        response = error_response(status, message, style=style)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
        return response

    def unexpected_error(error: Exception) -> flask.Response:
        request = flask.request
        _log.exception("unhandled error in %s %s", request.method, request.path)
        style = locator.for_request(request, error).error_style
        return error_response(500, "internal error", style=style)

    def refused_by_server() -> None:
        refused = flask.request.environ.get(REFUSED_KEY)
        if refused is not None:
            status, message = refused
            abort(status, description=message)

    app.before_request(refused_by_server)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
