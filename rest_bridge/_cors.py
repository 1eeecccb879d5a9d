"""Cross-origin resource sharing for browser clients (dashboards)."""

from __future__ import annotations

from collections.abc import Sequence

import flask
from werkzeug.exceptions import MethodNotAllowed

from ._response_headers import COPIED_HEADERS

ALLOWED_HEADERS = "Authorization, Content-Type, X-Organization-ID, X-Request-ID, Last-Event-ID"
_PREFLIGHT_MAX_AGE = "600"
# Browsers hide all but a few response headers from scripts; dashboards page with
# X-Total-Count and back off on the rate-limit headers, so those are exposed.
EXPOSED_HEADERS = ", ".join(COPIED_HEADERS.values())


def install_cors(app: flask.Flask, origins: Sequence[str] | None) -> None:
    """Adds CORS headers to every answer and answers preflight requests.

    ``origins=None`` allows any origin (``*``); otherwise the request's Origin is
    echoed only when it is listed, and ``Vary: Origin`` keeps caches honest.
    """
    allowed = frozenset(origins) if origins is not None else None

    def allow_origin(response: flask.Response) -> flask.Response:
        if allowed is None:
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            return response
        response.vary.add("Origin")
        origin = flask.request.headers.get("Origin")
        if origin is not None and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    def preflight() -> flask.Response | None:
        if flask.request.method != "OPTIONS":
            return None
        # Routes never list OPTIONS, so a known path answers with MethodNotAllowed,
        # which carries the methods the path does allow; unknown paths stay 404.
        error = flask.request.routing_exception
        if not isinstance(error, MethodNotAllowed):
            return None
        methods = ", ".join(sorted({*(error.valid_methods or ()), "OPTIONS"}))
        response = flask.Response(status=204)
        del response.headers["Content-Type"]
        response.headers["Allow"] = methods
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
        return response

    app.before_request(preflight)
    app.after_request(allow_origin)
