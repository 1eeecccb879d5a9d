"""Identity values that proto declares as enums, over gRPC and REST."""

from __future__ import annotations

from conftest import Running
from engine_helpers import RPC_TIMEOUT
from rest_helpers import rest, uid

from trellis.v1 import identity_pb2, identity_pb2_grpc


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
