"""Discovery of ``google.api.http`` rules in the ``trellis.v1`` descriptors.

Every unary RPC with an HttpRule becomes one :class:`HttpBinding` per binding (the
rule and its ``additional_bindings``). Path templates are compiled to Werkzeug rules;
a template this bridge cannot serve fails start-up rather than being skipped.

Each binding has its own surface: the one its ``(trellis.v1.rest).bindings`` entry
names, else its service's. Names resolve among the surfaces the package's services
declare, so that one RPC may serve the documented paths of several surfaces.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, cast

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)

from trellis.v1 import options_pb2

from ._descriptors import message_type, option
from ._surface import Surface, surface_of

_log = logging.getLogger(__name__)

PACKAGE = "trellis.v1"

_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()+,;=@-]+")
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(=\*)?\}")


class UnsupportedRuleError(ValueError):
    """An HttpRule the bridge cannot serve; raised at start-up."""


@dataclass(frozen=True)
class PathVariable:
    """A ``{field.path}`` segment of a template."""

    dotted: str
    """The field path as written in the template (``lease_id``, ``job.id``)."""
    rule_name: str
    """The Werkzeug variable name (dots are not allowed there)."""
    chain: tuple[FieldDescriptor, ...]
    """The fields from the request message down to the bound scalar."""


@dataclass(frozen=True)
class PathTemplate:
    """A compiled HttpRule path template."""

    template: str
    rule: str
    variables: tuple[PathVariable, ...]


@dataclass(frozen=True)
class HttpBinding:
    """One REST verb+path bound to a unary RPC."""

    service: ServiceDescriptor
    method: MethodDescriptor
    verb: str
    path: PathTemplate
    body: str
    response_body: str
    success_code: int
    surface: Surface
    """The conventions of this binding's answers: named by its ``(trellis.v1.rest)``
    entry, else those of its service's ``(trellis.v1.surface)`` option."""
    form_body: bool
    """The body may be a form (``(trellis.v1.rest).form_body``); else JSON only."""
    confirmation: str = ""
    """When set, the body of every successful answer instead of the response."""
    ignored_parameters: frozenset[str] = frozenset()
    """Top-level request fields the query string does not set on this binding."""

    @property
    def error_style(self) -> int:
        """The binding's ``trellis.v1.ErrorStyle``."""
        return self.surface.error_style

    @property
    def rpc_path(self) -> str:
        """The gRPC method path, ``/trellis.v1.Service/Method``."""
        return f"/{self.service.full_name}/{self.method.name}"


def import_package_modules(package_name: str = PACKAGE) -> list[ModuleType]:
    """Imports every module of the generated package so all its files are in the pool."""
    package = importlib.import_module(package_name)
    return [
        importlib.import_module(f"{package_name}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


def package_files(package_name: str = PACKAGE) -> list[FileDescriptor]:
    """The proto files of the package, in a stable order."""
    files: dict[str, FileDescriptor] = {}
    for module in import_package_modules(package_name):
        descriptor = getattr(module, "DESCRIPTOR", None)
        if isinstance(descriptor, FileDescriptor) and descriptor.package == package_name:
            files[descriptor.name] = descriptor
    return [files[name] for name in sorted(files)]


def discover_bindings(package_name: str = PACKAGE) -> list[HttpBinding]:
    """Every REST binding declared on the package's services."""
    services = [
        service
        for file in package_files(package_name)
        for service in file.services_by_name.values()
    ]
    surfaces = named_surfaces(services)
    bindings: list[HttpBinding] = []
    for service in services:
        bindings.extend(_service_bindings(service, surfaces))
    return bindings


def named_surfaces(services: Iterable[ServiceDescriptor]) -> dict[str, Surface]:
    """The surfaces the services declare, by name; a name declared twice with
    different conventions is UnsupportedRuleError."""
    surfaces: dict[str, Surface] = {}
    for service in services:
        surface = surface_of(service)
        if not surface.name:
            continue
        known = surfaces.setdefault(surface.name, surface)
        if known != surface:
            raise UnsupportedRuleError(
                f"{service.full_name}: surface {surface.name!r} is declared with other conventions"
            )
    return surfaces


def _service_bindings(
    service: ServiceDescriptor, surfaces: Mapping[str, Surface]
) -> Iterator[HttpBinding]:
    surface = surface_of(service)
    for method in service.methods:
        options = method.GetOptions()
        if not cast(Any, options).HasExtension(annotations_pb2.http):
            continue
        if method.client_streaming or method.server_streaming:
            # Streams need a hand-written route (SSE, WebSocket); transcoding cannot.
            _log.warning("%s has an HTTP rule but streams; no REST route", method.full_name)
            continue
        rest = option(options, options_pb2.rest)
        rule = option(options, annotations_pb2.http)
        rules = [
            (one, *_verb_and_template(one, method.full_name))
            for one in (rule, *rule.additional_bindings)
        ]
        entries = {entry.path: entry for entry in rest.bindings}
        if len(entries) < len(rest.bindings):
            raise UnsupportedRuleError(f"{method.full_name}: (trellis.v1.rest) names a path twice")
        unmatched = entries.keys() - {template for _, _, template in rules}
        if unmatched:
            raise UnsupportedRuleError(
                f"{method.full_name}: (trellis.v1.rest) names no binding of the method: "
                + ", ".join(sorted(unmatched))
            )
        for one, verb, template in rules:
            entry = entries.get(template, options_pb2.RestBinding())
            chosen = _binding_surface(entry, surface, surfaces, f"{method.full_name}: {template}")
            yield _binding(service, method, one, verb, template, rest, entry, chosen)


def _binding_surface(
    entry: options_pb2.RestBinding, default: Surface, surfaces: Mapping[str, Surface], where: str
) -> Surface:
    """The surface a binding's entry names (else ``default``), with the entry's times."""
    chosen = default
    if entry.surface:
        found = surfaces.get(entry.surface)
        if found is None:
            raise UnsupportedRuleError(f"{where} names an undeclared surface {entry.surface!r}")
        chosen = found
    if entry.times:
        chosen = dataclasses.replace(chosen, times=int(entry.times))
    return chosen


def _verb_and_template(rule: http_pb2.HttpRule, where: str) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise UnsupportedRuleError(f"{where}: HTTP rule without a verb and path")
    if pattern == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return pattern.upper(), getattr(rule, pattern)


def _binding(
    service: ServiceDescriptor,
    method: MethodDescriptor,
    rule: http_pb2.HttpRule,
    verb: str,
    template: str,
    rest: options_pb2.RestOptions,
    entry: options_pb2.RestBinding,
    surface: Surface,
) -> HttpBinding:
    where = method.full_name
    request = method.input_type
    if rule.body and rule.body != "*" and rule.body not in request.fields_by_name:
        raise UnsupportedRuleError(f"{where}: body {rule.body!r} is not a request field")
    if rule.body and verb == "GET":
        raise UnsupportedRuleError(f"{where}: GET with a body")
    response = method.output_type
    if rule.response_body and rule.response_body not in response.fields_by_name:
        raise UnsupportedRuleError(
            f"{where}: response_body {rule.response_body!r} is not a response field"
        )
    return HttpBinding(
        service=service,
        method=method,
        verb=verb,
        path=compile_template(template, request, where=where),
        body=rule.body,
        response_body=rule.response_body,
        success_code=int(entry.success_code) or int(rest.success_code) or 200,
        surface=surface,
        form_body=bool(rest.form_body) and rule.body == "*",
        confirmation=entry.confirmation,
        ignored_parameters=_ignored_parameters(entry, request, f"{where}: {template}"),
    )


def _ignored_parameters(
    entry: options_pb2.RestBinding, request: Descriptor, where: str
) -> frozenset[str]:
    unknown = [name for name in entry.ignored_parameters if name not in request.fields_by_name]
    if unknown:
        raise UnsupportedRuleError(f"{where}: ignored_parameters {unknown} are no request fields")
    return frozenset(entry.ignored_parameters)


def compile_template(template: str, request: Descriptor, *, where: str = "") -> PathTemplate:
    """Compiles an HttpRule template into a Werkzeug rule.

    Supported: literal segments and whole-segment variables ``{field}``,
    ``{field.sub}`` and ``{field=*}`` bound to singular scalar fields. Multi-segment
    variables (``{name=shelves/*}``, ``**``), bare wildcards and ``:verb`` suffixes
    raise UnsupportedRuleError.
    """
    prefix = f"{where}: " if where else ""
    if not template.startswith("/") or template == "/" or template.endswith("/"):
        raise UnsupportedRuleError(f"{prefix}unsupported path template {template!r}")
    parts: list[str] = []
    variables: list[PathVariable] = []
    for segment in template[1:].split("/"):
        match = _VARIABLE.fullmatch(segment)
        if match:
            dotted = match.group(1)
            if any(v.dotted == dotted for v in variables):
                raise UnsupportedRuleError(f"{prefix}{template!r} binds {dotted!r} twice")
            chain = _field_chain(request, dotted, f"{prefix}{template!r}")
            rule_name = dotted.replace(".", "__")
            variables.append(PathVariable(dotted=dotted, rule_name=rule_name, chain=chain))
            parts.append(f"<{rule_name}>")
        elif _LITERAL.fullmatch(segment):
            parts.append(segment)
        else:
            raise UnsupportedRuleError(
                f"{prefix}unsupported segment {segment!r} in path template {template!r}"
            )
    return PathTemplate(template=template, rule="/" + "/".join(parts), variables=tuple(variables))


def _field_chain(request: Descriptor, dotted: str, where: str) -> tuple[FieldDescriptor, ...]:
    chain: list[FieldDescriptor] = []
    message: Descriptor | None = request
    for name in dotted.split("."):
        field = message.fields_by_name.get(name) if message is not None else None
        if field is None or field.is_repeated:
            raise UnsupportedRuleError(f"{where}: {dotted!r} is not a singular request field")
        chain.append(field)
        message = message_type(field) if field.type == FieldDescriptor.TYPE_MESSAGE else None
    if chain[-1].type == FieldDescriptor.TYPE_MESSAGE:
        raise UnsupportedRuleError(f"{where}: {dotted!r} is a message, not a scalar")
    return tuple(chain)
