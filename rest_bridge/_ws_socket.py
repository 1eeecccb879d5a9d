"""How a request hands its connection over to a WebSocket: the environ key under
which the WSGI server offers to detach the socket from HTTP.

waitress cannot speak WebSocket itself; RestServer's tasks put a callable under
:data:`DETACH_KEY` that takes the connection out of waitress (its event loop
forgets the socket, nothing of the HTTP answer is written) and returns the socket
for the caller to own from then on. Servers without it (Flask's test client)
cannot upgrade.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

DETACH_KEY = "trellis.detach_socket"

#: Takes the request's connection out of the WSGI server; the caller owns it.
DetachSocket = Callable[[], socket.socket]
