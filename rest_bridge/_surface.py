"""REST surface conventions, declared by services with ``(trellis.v1.surface)``.

One :class:`Surface` per documented API says how its answers look: the error body
style, the success envelope, the spelling of field names and of times. Everything
that shapes an answer takes a Surface (or its ``error_style``) rather than reading
options itself. A service's surface is the default of its bindings; ``_http_rules``
picks the surface of each binding.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from trellis.v1 import options_pb2

from ._descriptors import option
from ._json_values import Json

# RFC 6749 section 5.1: token answers (and their errors) must not be cached.
_OAUTH2_HEADERS = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


@dataclass(frozen=True, slots=True)
class Surface:
    """How the REST paths of one surface render their answers."""

    name: str = ""
    error_style: int = options_pb2.ERROR_STYLE_GOOGLE
    envelope: int = options_pb2.ENVELOPE_UNSPECIFIED
    field_names: int = options_pb2.FIELD_NAMES_UNSPECIFIED
    # Whether answers carry the fields marked ``(additional)``.
    additional_fields: bool = False
    # The ``trellis.v1.TimeFormat`` of Timestamps in answers.
    times: int = options_pb2.TIME_FORMAT_UNSPECIFIED

    @classmethod
    def from_options(cls, conventions: options_pb2.SurfaceConventions) -> Surface:
        """The surface a ``SurfaceConventions`` declares; an unset error style is Google's."""
        return cls(
            name=conventions.name,
            error_style=int(conventions.error_style) or options_pb2.ERROR_STYLE_GOOGLE,
            envelope=int(conventions.envelope),
            field_names=int(conventions.field_names),
            additional_fields=conventions.additional_fields,
            times=int(conventions.times),
        )

    @property
    def json_names(self) -> bool:
        """Whether responses spell field names as their proto JSON names."""
        return self.field_names == options_pb2.FIELD_NAMES_JSON

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Headers every answer of this surface carries, success or error."""
        return answer_headers(self.error_style)

    def wrap(self, body: Json) -> Json:
        """A successful body in this surface's envelope."""
        if self.envelope == options_pb2.ENVELOPE_SUCCESS_DATA:
            return {"success": True, "data": body}
        return body


#: The conventions of a service that declares none (and of the bridge's own routes).
DEFAULT_SURFACE = Surface()


def answer_headers(error_style: int) -> tuple[tuple[str, str], ...]:
    """Headers that every answer (success or error) of a surface in this style carries."""
    return _OAUTH2_HEADERS if error_style == options_pb2.ERROR_STYLE_OAUTH2 else ()


def surface_of(service: ServiceDescriptor) -> Surface:
    """The surface a service declares with ``option (trellis.v1.surface)``."""
    options = service.GetOptions()
    conventions: options_pb2.SurfaceConventions = option(options, options_pb2.surface)
    return Surface.from_options(conventions)
