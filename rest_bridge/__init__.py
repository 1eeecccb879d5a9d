"""REST bridge: serves the documented JSON APIs by transcoding them onto the gRPC API.

The routes come from the ``google.api.http`` rules in the ``trellis.v1`` protos and the
JSON conventions from the custom options in ``trellis/v1/options.proto``; the bridge
talks to the gRPC server over a channel, like any gateway.

    channel = grpc.insecure_channel("127.0.0.1:50051")
    server = RestServer(create_app(channel), port=3000)
    server.start()

:func:`render_message` gives the JSON a message renders as by its type's conventions
(and a surface's field names and time format), :func:`parse_message` reads such JSON
back, raising :class:`CodecError` naming the field. ``GET /ws`` serves the event
log as a WebSocket, configured by :class:`WebSocketSettings`. :func:`rpc_failure` reads a
failed call the way the bridge does for its error answers: code, message, and the
``reason`` REST surfaces render.
"""

from ._app import create_app
from ._codec import parse_message, render_message
from ._http_rules import UnsupportedRuleError
from ._json_values import CodecError, Json
from ._server import RestServer
from ._status_details import RpcFailure, rpc_failure
from ._ws import WebSocketSettings

__all__ = [
    "CodecError",
    "Json",
    "RestServer",
    "RpcFailure",
    "UnsupportedRuleError",
    "WebSocketSettings",
    "create_app",
    "parse_message",
    "render_message",
    "rpc_failure",
]
