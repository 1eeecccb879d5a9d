"""Identity values that proto declares as enums, over gRPC and REST."""

from __future__ import annotations

import grpc
import pytest
from conftest import Running
from engine_helpers import RPC_TIMEOUT
from rest_helpers import rest, uid

from trellis.v1 import auth_pb2, auth_pb2_grpc, identity_pb2, identity_pb2_grpc


def test_organization_status_is_an_enum_rendered_as_the_documented_word(server: Running) -> None:
    stub = identity_pb2_grpc.IdentityServiceStub(server.channel)
    org_id = uid("org")
    created = stub.CreateOrganization(
        identity_pb2.CreateOrganizationRequest(id=org_id, name=org_id), timeout=RPC_TIMEOUT
    )
    assert created.status == identity_pb2.ORGANIZATION_STATUS_ACTIVE
    suspended = stub.SuspendOrganization(
        identity_pb2.SuspendOrganizationRequest(organization_id=org_id), timeout=RPC_TIMEOUT
    )
    assert suspended.status == identity_pb2.ORGANIZATION_STATUS_SUSPENDED

    answer = rest(server).request("GET", f"/api/v1/organizations/{org_id}")
    assert answer.status == 200 and answer.json["status"] == "suspended"


def _policy_body(*effects: str) -> dict[str, object]:
    rules = [{"effect": e, "resource": "workflows:x", "action": ["run"]} for e in effects]
    return {"name": uid("policy"), "rules": rules}


def test_policy_effect_is_an_enum_spelled_as_seed_002_does(server: Running) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(server.channel)
    created = stub.CreatePolicy(
        auth_pb2.CreatePolicyRequest(
            name=uid("policy"),
            rules=[
                auth_pb2.PolicyRule(
                    effect=auth_pb2.POLICY_EFFECT_DENY, resource="workflows:x", action=["run"]
                )
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    assert [r.effect for r in created.rules] == [auth_pb2.POLICY_EFFECT_DENY]

    # Requests take any case; answers spell the value as the document does.
    answer = rest(server).post("/policies", _policy_body("allow", "DENY"))
    assert answer.status == 201
    assert [r["effect"] for r in answer.json["data"]["rules"]] == ["Allow", "Deny"]
    listed = stub.ListPolicies(auth_pb2.ListPoliciesRequest(), timeout=RPC_TIMEOUT)
    mine = next(p for p in listed.policies if p.id == answer.json["data"]["id"])
    assert [r.effect for r in mine.rules] == [
        auth_pb2.POLICY_EFFECT_ALLOW,
        auth_pb2.POLICY_EFFECT_DENY,
    ]


def test_a_rule_without_an_effect_is_refused_over_grpc(server: Running) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(server.channel)
    request = auth_pb2.CreatePolicyRequest(
        name=uid("policy"), rules=[auth_pb2.PolicyRule(resource="workflows:x", action=["run"])]
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreatePolicy(request, timeout=RPC_TIMEOUT)
    error = refused.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "rules[0]: effect must be 'allow' or 'deny', got ''"


def test_an_unknown_effect_over_rest_is_refused_by_the_server(server: Running) -> None:
    answer = rest(server).post("/policies", _policy_body("Allow", "Perhaps"))
    assert answer.status == 400
    assert answer.json == {
        "success": False,
        "error": "rules[1]: effect must be 'allow' or 'deny', got 'perhaps'",
    }
    # The server answered (after counting the call), not the bridge.
    assert answer.headers["X-RateLimit-Limit"]
