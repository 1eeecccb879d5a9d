"""Which surface an answer the bridge gives itself belongs to (404, 405, 413, 500).

A client of an OAuth2 endpoint expects OAuth2 errors even when the bridge, not the
server, refuses its request. A request that matched a route takes that route's
surface; one that matched none takes the surface of the longest literal path prefix
it shares with routes of a single error style (``/oauth/nope`` beside
``/oauth/token``); a prefix shared by routes of different styles is not attributed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import flask
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ._surface import DEFAULT_SURFACE, Surface


class SurfaceLocator:
    """Finds the surface of a request from its route, or else from its path."""

    def __init__(
        self,
        endpoints: Mapping[str, Surface],
        templates: Iterable[tuple[str, Surface]],
    ) -> None:
        """Args:
        endpoints: The surface of each Flask endpoint that has one.
        templates: HttpRule path templates with the surface of their service.
        """
        self._endpoints = dict(endpoints)
        candidates: dict[tuple[str, ...], list[Surface]] = {}
        for template, surface in templates:
            literal = _literal_prefix(template)
            for length in range(1, len(literal) + 1):
                candidates.setdefault(literal[:length], []).append(surface)
        self._prefixes: dict[tuple[str, ...], Surface | None] = {}
        for prefix, surfaces in candidates.items():
            styles = {surface.error_style for surface in surfaces}
            self._prefixes[prefix] = surfaces[0] if len(styles) == 1 else None

    def for_endpoint(self, endpoint: str | None) -> Surface | None:
        """The surface of a matched endpoint, None for routes without one."""
        return self._endpoints.get(endpoint) if endpoint is not None else None

    def for_path(self, path: str) -> Surface:
        """The surface of the longest known literal prefix of ``path``."""
        segments = tuple(segment for segment in path.split("/") if segment)
        for length in range(len(segments), 0, -1):
            if segments[:length] in self._prefixes:
                return self._prefixes[segments[:length]] or DEFAULT_SURFACE
        return DEFAULT_SURFACE

    def for_request(self, request: flask.Request, error: Exception | None = None) -> Surface:
        """The surface of the request being answered (inside a request context)."""
        surface = self.for_endpoint(request.endpoint)
        if surface is not None:
            return surface
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            # The path matched under another verb: that route names the surface.
            adapter = flask.current_app.url_map.bind_to_environ(request.environ)
            for method in sorted(error.valid_methods):
                try:
                    endpoint, _ = adapter.match(method=method)
                except HTTPException:
                    continue
                surface = self.for_endpoint(str(endpoint))
                if surface is not None:
                    return surface
        return self.for_path(request.path)


def _literal_prefix(template: str) -> tuple[str, ...]:
    literal: list[str] = []
    for segment in template.split("/"):
        if not segment:
            continue
        if "{" in segment:
            break
        literal.append(segment)
    return tuple(literal)
