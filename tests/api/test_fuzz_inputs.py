"""Generated bad input against every REST route and a sample of gRPC methods, on SQLite
and PostgreSQL: NUL and lone surrogates, huge numbers, deep nesting, wrong types,
empty and odd strings, garbage bytes. No answer may be a 5xx (gRPC: INTERNAL or
UNKNOWN), every REST error has a JSON body, every gRPC error a ``google.rpc.ErrorInfo``,
and nothing is logged as an error.

The routes come from the bridge's own route table and the methods from the contract's
descriptors, so that a new one is covered without being listed here. Examples are
derandomized: the same ones every run, a bounded number of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Running, login
from engine_helpers import RPC_TIMEOUT
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_helpers import HTTP_TIMEOUT, Rest, rest, uid
from status_helpers import error_info, no_errors_logged

from trellis.rest_bridge import create_app

# The bridge's route table and each route's binding are enumerated so that a new
# route is fuzzed without being listed here; no public face lists them.
from trellis.rest_bridge._routes import WAIT_FIELD, TranscodedRoute
from trellis.server.api import _engine

# Per route and per method: about 1,400 requests and 650 calls per database.
EXAMPLES_PER_ROUTE = 20
EXAMPLES_PER_METHOD = 10
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
F = FieldDescriptor

# --- values -------------------------------------------------------------------------------

ODD_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\ud83d\ude00",
    "..",
    "/",
    "%2F",
    "\u2028",
    "é",
    "null",
    "0",
    "-1",
    "a" * 5000,
]
text = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=20))
HUGE = [2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -1, 0]
numbers = st.one_of(
    st.sampled_from(HUGE),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, 1e308, -0.0]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)
any_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=8,
)


def field_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """Mostly values of the field's own type (with bad contents), sometimes anything."""
    if field.name == WAIT_FIELD:
        # A valid wait long-polls; only refused ones keep the examples quick.
        return st.one_of(st.just(0), st.integers(max_value=-1), st.sampled_from([61, 2**40, "x"]))
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        one = st.dictionaries(text, element_value(value, depth), max_size=3)
    elif field.is_repeated:
        one = st.lists(element_value(field, depth), max_size=3)
    else:
        one = element_value(field, depth)
    return st.one_of(one, one, any_json)


def element_value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        if depth >= 3:
            return any_json
        return message_json(field.message_type, depth + 1)
    if field.type == F.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        return st.one_of(st.sampled_from([*names, *(n.lower() for n in names)]), text, numbers)
    if field.type == F.TYPE_STRING:
        return text
    if field.type == F.TYPE_BOOL:
        return st.one_of(st.booleans(), text)
    return st.one_of(numbers, text)


def message_json(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with some of the message's fields, under either spelling."""
    fields = list(descriptor.fields)
    if not fields:
        return st.just({})
    return st.lists(st.sampled_from(fields), max_size=4, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {(f.name if depth % 2 == 0 else f.json_name): field_value(f, depth) for f in chosen}
        )
    )


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
    None,
]


def body_bytes(route: TranscodedRoute | None) -> st.SearchStrategy[bytes | None]:
    shaped: st.SearchStrategy[Any] = any_json
    binding = route.binding if route is not None else None
    if binding is not None and binding.body:
        request = binding.method.input_type
        target = request if binding.body == "*" else request.fields_by_name[binding.body]
        shaped = message_json(target) if isinstance(target, Descriptor) else field_value(target, 0)
    as_json = st.one_of(shaped, shaped, any_json).map(
        lambda value: json.dumps(value, ensure_ascii=True).encode()
    )
    form = st.dictionaries(text, text, max_size=3).map(
        lambda fields: "&".join(
            f"{quote(k, errors='surrogatepass')}={quote(v, errors='surrogatepass')}"
            for k, v in fields.items()
        ).encode()
    )
    return st.one_of(
        st.none(),
        as_json,
        as_json,
        form,
        st.binary(max_size=40),
        st.sampled_from([nested(40), nested(5000), b"[" * 3000, b'{"a": "\xed\xa0\x80"}']),
    )


def query_text(route: TranscodedRoute | None) -> st.SearchStrategy[str]:
    if route is None or route.binding.body == "*":
        keys: list[str] = ["x"]
    else:
        keys = [f.name for f in route.binding.method.input_type.fields] or ["x"]
    value = st.one_of(text, numbers.map(str))
    return st.dictionaries(st.sampled_from(keys), value, max_size=3).map(
        lambda query: "&".join(
            f"{quote(k)}={quote(v, safe='', errors='surrogatepass')}" for k, v in query.items()
        )
    )


# --- the routes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    rule: str
    variables: tuple[str, ...]
    route: TranscodedRoute | None

    def path(self, values: Sequence[str]) -> str:
        path = self.rule
        for name, value in zip(self.variables, values, strict=True):
            path = path.replace(f"<{name}>", quote(value, safe="", errors="surrogatepass"))
        return path


def endpoints() -> list[Endpoint]:
    """Every route of the bridge's route table, by method."""
    app = create_app(grpc.insecure_channel("127.0.0.1:1"))
    found = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        route = view if isinstance(view, TranscodedRoute) else None
        variables = tuple(sorted(rule.arguments, key=rule.rule.index))
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append(Endpoint(method, rule.rule, variables, route))
    return found


ENDPOINTS = endpoints()


def known_ids(client: Rest) -> list[str]:
    """Ids of things that exist, so that examples reach past the 404s."""
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    run_id = client.run(workflow_id)["run_id"]
    lease_id = client.must_claim()["lease"]["lease_id"]
    user = client.post("/api/v1/admin/users", {"username": uid("u"), "password": "Pw-123456789"})
    assert user.status == 201, user.raw
    return ["ci", "build", "a", "default", workflow_id, run_id, lease_id, user.json["id"]]


def send(
    client: Rest, endpoint: Endpoint, path: str, data: bytes | None, headers: dict[str, str]
) -> tuple[int, str, bytes]:
    connection = client.connection(HTTP_TIMEOUT)
    try:
        connection.request(endpoint.method, path, body=data, headers=client.headers(headers))
        response = connection.getresponse()
        kind = response.headers.get("Content-Type") or ""
        if response.status == 200 and kind.startswith("text/event-stream"):
            return response.status, kind, b""  # a live stream: its headers are the answer
        return response.status, kind, response.read()
    finally:
        connection.close()


def test_no_rest_route_answers_bad_input_with_a_server_error(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    admin = rest(server)
    ids = st.one_of(st.sampled_from(known_ids(admin)), text)
    for endpoint in ENDPOINTS:
        fuzz_route(server, endpoint, admin, ids)
    no_errors_logged(caplog)


def fuzz_route(
    server: Running, endpoint: Endpoint, admin: Rest, ids: st.SearchStrategy[str]
) -> None:
    examples = st.tuples(
        st.lists(ids, min_size=len(endpoint.variables), max_size=len(endpoint.variables)),
        query_text(endpoint.route),
        body_bytes(endpoint.route),
        st.sampled_from(CONTENT_TYPES),
        st.sampled_from([admin, admin, admin, Rest(server.rest_url)]),
        st.sampled_from([None, None, "default", "nope", "o" * 300, "é", "a b"]),
    )

    @settings(FUZZ, max_examples=EXAMPLES_PER_ROUTE)
    @given(examples)
    def check(example: tuple[list[str], str, bytes | None, str | None, Rest, str | None]) -> None:
        values, query, data, content_type, client, org = example
        path = endpoint.path(values) + (f"?{query}" if query else "")
        headers = {"Content-Type": content_type} if content_type and data is not None else {}
        if org is not None:
            headers["X-Organization-ID"] = org
        status, kind, raw = send(client, endpoint, path, data, headers)
        where = f"{endpoint.method} {path[:200]} {data[:200] if data else data!r}"
        assert status < 500, f"{where}: {status} {raw[:300]!r}"
        if status >= 400:
            assert kind == "application/json", f"{where}: {status} {kind}"
            assert isinstance(json.loads(raw), dict), where
        if endpoint.rule == "/auth/logout" and client is admin and status == 200:
            # The example ended the administrator's session: sign in again.
            admin.token = login(server.anonymous_channel, ADMIN_USERNAME, ADMIN_PASSWORD)

    check()


# --- gRPC ---------------------------------------------------------------------------------

_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
# Protobuf strings hold only valid Unicode: surrogates cannot be sent.
wire_text = st.one_of(
    st.sampled_from(
        [t for t in ODD_TEXT if t.encode("utf-8", "surrogatepass") == t.encode("utf-8", "replace")]
    ),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20),
)


def wire_scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.name == WAIT_FIELD:
        return st.sampled_from([0, 61, 2**31 - 1])
    if field.type in _INT_RANGES:
        low, high = _INT_RANGES[field.type]
        return st.one_of(st.sampled_from([low, high, 0, 1]), st.integers(low, high))
    if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.sampled_from([0.0, -1.0, 1e30, float("inf"), float("nan")])
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=10)
    return wire_text


@st.composite
def wire_message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    fields = (
        draw(st.lists(st.sampled_from(list(descriptor.fields)), max_size=4, unique=True))
        if descriptor.fields
        else []
    )
    for field in fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            value = entry.fields_by_name["value"]
            target = getattr(message, field.name)
            for key in draw(st.lists(wire_scalar(entry.fields_by_name["key"]), max_size=2)):
                if value.type == F.TYPE_MESSAGE:
                    target[key].CopyFrom(draw(wire_message(value.message_type, depth + 1)))
                else:
                    target[key] = draw(wire_scalar(value))
        elif field.type == F.TYPE_MESSAGE:
            if depth >= 3:
                continue
            items = draw(
                st.lists(wire_message(field.message_type, depth + 1), min_size=1, max_size=2)
            )
            if field.is_repeated:
                getattr(message, field.name).extend(items)
            else:
                getattr(message, field.name).CopyFrom(items[0])
        elif field.is_repeated:
            getattr(message, field.name).extend(draw(st.lists(wire_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(wire_scalar(field)))
    return message


def unary_methods() -> list[MethodDescriptor]:
    return [
        method
        for file in _engine.PROTO_FILES
        for service in file.services_by_name.values()
        for method in service.methods
        if not method.client_streaming and not method.server_streaming
    ]


UNARY = unary_methods()
# Headers that reach the database: the organization, and the client address that a
# caller on loopback (the REST bridge) may forward.
METADATA: list[tuple[tuple[str, str], ...]] = [
    (),
    (),
    (("x-organization-id", "default"),),
    (("x-organization-id", "o" * 300),),
    (("x-forwarded-for", "1" * 300),),
]


def test_no_grpc_method_answers_bad_input_with_internal_or_unknown(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    for method in UNARY:
        fuzz_method(method, [server.channel, server.channel, server.anonymous_channel])
    no_errors_logged(caplog)


def fuzz_method(method: MethodDescriptor, channels: list[grpc.Channel]) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    calls = st.tuples(
        st.one_of(
            st.binary(max_size=64),
            wire_message(method.input_type).map(lambda m: m.SerializeToString()),
        ),
        st.sampled_from(channels),
        st.sampled_from(METADATA),
    )

    @settings(FUZZ, max_examples=EXAMPLES_PER_METHOD)
    @given(calls)
    def check(call: tuple[bytes, grpc.Channel, tuple[tuple[str, str], ...]]) -> None:
        data, channel, metadata = call
        try:
            channel.unary_unary(path)(data, timeout=RPC_TIMEOUT, metadata=metadata)
        except grpc.RpcError as error:
            assert isinstance(error, grpc.Call)
            code = error.code()
            assert code not in (
                grpc.StatusCode.INTERNAL,
                grpc.StatusCode.UNKNOWN,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            ), f"{path} {data[:100]!r}: {code} {error.details()}"
            error_info(error)

    check()
