"""Backend registration (seed 000 ``POST /api/machine/register-backend``): the
callback URLs it refuses, and names that are not silently replaced, over REST
and gRPC against real servers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conftest import Running
from engine_helpers import RPC_TIMEOUT, uid
from rest_helpers import Rest, rest
from test_auth_api import code_of

from trellis.server.identity import store
from trellis.v1 import machine_pb2, machine_pb2_grpc

# Refused at registration, each with what its message names.
REFUSED = {
    "https://user:pass@payments.example.com/cb": "credentials",
    "https://user@payments.example.com/cb": "credentials",
    "http://user:pass@10.0.0.1/cb": "credentials",
    "ftp://payments.example.com/cb": "http or https",
    "file:///etc/passwd": "http or https",
    "javascript:alert(1)": "http or https",
    "gopher://127.0.0.1:6379/_INFO": "http or https",
    "/triggers/callback": "http or https",
    "http:///cb": "host",
    "https://:443/cb": "host",
    "https://payments.example.com/cb#x": "fragment",
    "https://payments.example.com/cb#": "fragment",
    "https://payments.example.com/" + "x" * 2048: "2048",
    "https://payments.example.com/a b": "percent-encoded",
    "https://payments.exa\nmple.com/cb": "percent-encoded",
    "https://payments.example.com\\@evil.example/cb": "percent-encoded",
    "https://p\u00e4yments.example.com/cb": "percent-encoded",
    "https://payments.example.com:99999/cb": "not a URL",
    "http://[::1/cb": "not a URL",
    "https://payments.example.com:0/cb": "port",
    "": "required",
}
# Well-formed: where they point is judged when callbacks are delivered, on the
# address the host resolves to then.
JUDGED_AT_DELIVERY = (
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/cb",
    "http://[::1]/cb",
    "http://2130706433/cb",
    "http://0x7f.1/cb",
)


@dataclass
class Answer:
    ok: bool
    status: int  # HTTP, or the HTTP status of the gRPC code
    message: str
    body: dict[str, Any]


GRPC_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.ALREADY_EXISTS: 409,
}


def _registrar(server: Running, transport: str) -> tuple[str, Callable[..., Answer]]:
    """A new machine user's id, and a way to register its backends over ``transport``."""
    created = rest(server).post("/api/machine-users", {"username": uid("payments")})
    assert created.status == 201, created.raw
    token, machine_id = created.json["generatedToken"], created.json["machineUser"]["id"]
    if transport == "rest":
        client = Rest(server.rest_url, token)

        def over_rest(**fields: Any) -> Answer:
            reply = client.post("/api/machine/register-backend", fields)
            body = reply.json
            if reply.status == 200:
                return Answer(True, 200, "", body)
            assert set(body) == {"error", "code", "status"} and body["status"] == reply.status
            return Answer(False, reply.status, body["error"], body)

        return machine_id, over_rest
    stub = machine_pb2_grpc.MachineUserServiceStub(server.channel_with(token))
    names = {"callbackUrl": "callback_url"}

    def over_grpc(**fields: Any) -> Answer:
        request = machine_pb2.RegisterBackendRequest(
            **{names.get(k, k): v for k, v in fields.items()}
        )
        try:
            backend = stub.RegisterBackend(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            assert isinstance(exc, grpc.Call)
            return Answer(False, GRPC_HTTP[code_of(exc)], str(exc.details()), {})
        body = {
            "id": backend.id,
            "callbackUrl": backend.callback_url,
            "description": backend.description,
        }
        return Answer(True, 200, "", body)

    return machine_id, over_grpc


def _stored(server: Running, machine_id: str) -> list[store.MachineBackend]:
    with server.server.db.read() as conn:
        return store.list_backends(conn, "default", machine_user_id=machine_id)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_callback_urls_are_refused_unless_plain_http_urls(server: Running, transport: str) -> None:
    machine_id, register = _registrar(server, transport)
    for url, named in REFUSED.items():
        answer = register(name="svc", callbackUrl=url)
        assert (answer.ok, answer.status) == (False, 400), url
        assert named in answer.message and "callbackUrl" in answer.message, (url, answer)
    assert _stored(server, machine_id) == []  # nothing stored, not even half-way
    for i, url in enumerate(JUDGED_AT_DELIVERY):
        answer = register(name=f"internal-{i}", callbackUrl=url)
        assert answer.ok and answer.body["callbackUrl"] == url, (url, answer)
    # Nothing of the refusals holds the name.
    assert register(name="svc", callbackUrl="HTTPS://payments.example.com:8443/cb?x=1").ok
    assert len(_stored(server, machine_id)) == len(JUDGED_AT_DELIVERY) + 1


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_a_registered_name_is_replaced_only_when_asked(server: Running, transport: str) -> None:
    machine_id, register = _registrar(server, transport)
    first = register(
        name="Payment Service",
        callbackUrl="https://payment.example.com/cb",
        description="Handles payments",
    )
    assert first.ok
    again = register(name="Payment Service", callbackUrl="https://evil.example/cb")
    assert (again.ok, again.status) == (False, 409)
    assert "registered already" in again.message and "replace" in again.message
    if transport == "rest":
        assert again.body["code"] == "ALREADY_EXISTS"
    [kept] = _stored(server, machine_id)
    assert (kept.callback_url, kept.description) == (
        "https://payment.example.com/cb",
        "Handles payments",
    )
    replaced = register(
        name="Payment Service", callbackUrl="https://payment.example.com/v2", replace=True
    )
    assert replaced.ok and replaced.body["id"] == first.body["id"]
    [changed] = _stored(server, machine_id)
    assert (changed.callback_url, changed.description) == ("https://payment.example.com/v2", "")
    # replace also registers a name that is new.
    assert register(name="Other", callbackUrl="https://other.example/cb", replace=True).ok
    # Another machine user's backend of the same name is its own.
    _, other = _registrar(server, transport)
    assert other(name="Payment Service", callbackUrl="https://payment.example.com/cb").ok
