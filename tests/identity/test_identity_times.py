"""Identity times are Timestamps over gRPC, spelled per surface over REST."""

from __future__ import annotations

import time

from conftest import Running
from engine_helpers import RPC_TIMEOUT
from google.protobuf import timestamp_pb2
from rest_helpers import rest, uid

from trellis.v1 import auth_pb2, auth_pb2_grpc, identity_pb2, identity_pb2_grpc


def _stamp(ms: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


def test_organization_times_are_timestamps_rendered_as_ms_on_api_v1(server: Running) -> None:
    before_ms = int(time.time() * 1000)
    org_id = uid("org")
    created = identity_pb2_grpc.IdentityServiceStub(server.channel).CreateOrganization(
        identity_pb2.CreateOrganizationRequest(id=org_id, name=org_id), timeout=RPC_TIMEOUT
    )
    created_ms = created.created_at.ToMilliseconds()
    assert created_ms >= before_ms - 1000 and created.HasField("updated_at")

    answer = rest(server).get(f"/api/v1/organizations/{org_id}")
    assert answer.status == 200
    assert answer.json["created_at_ms"] == created_ms
    assert answer.json["updated_at_ms"] == created.updated_at.ToMilliseconds()


def test_audit_log_bounds_are_timestamps_and_rest_takes_both_spellings(server: Running) -> None:
    admin = rest(server)
    name = uid("policy")
    made = admin.post(
        "/policies",
        {"name": name, "rules": [{"effect": "Allow", "resource": "x", "action": ["run"]}]},
    )
    assert made.status == 201
    resource = f"policy:{made.json['data']['id']}"

    stub = auth_pb2_grpc.AuthServiceStub(server.channel)
    everything = stub.ListAuditLogs(
        auth_pb2.ListAuditLogsRequest(resource=resource), timeout=RPC_TIMEOUT
    )
    [entry] = everything.logs
    at_ms = entry.timestamp.ToMilliseconds()
    within = auth_pb2.ListAuditLogsRequest(resource=resource)
    getattr(within, "from").CopyFrom(_stamp(at_ms))
    within.to.CopyFrom(_stamp(at_ms + 1))
    assert [e.id for e in stub.ListAuditLogs(within, timeout=RPC_TIMEOUT).logs] == [entry.id]
    later = auth_pb2.ListAuditLogsRequest(resource=resource)
    getattr(later, "from").CopyFrom(_stamp(at_ms + 1))
    assert not stub.ListAuditLogs(later, timeout=RPC_TIMEOUT).logs

    def listed(query: str) -> list[str]:
        answer = admin.get(f"/audit/logs?resource={resource}&{query}")
        assert answer.status == 200, answer.raw
        return [e["id"] for e in answer.json["data"]]

    assert listed(f"from_ms={at_ms}&to_ms={at_ms + 1}") == [entry.id]
    assert listed(f"from_ms={at_ms + 1}") == [] and listed(f"to_ms={at_ms}") == []
    # ISO text to the second, as the answers spell it.
    iso = admin.get(f"/audit/logs?resource={resource}").json["data"][0]["timestamp"]
    assert iso.endswith("Z") and listed(f"from={iso}") == [entry.id]


def test_a_time_that_is_no_time_is_the_servers_refusal(server: Running) -> None:
    answer = rest(server).get("/audit/logs?to=soon")
    assert answer.status == 400
    assert answer.json == {"success": False, "error": "to: not an ISO 8601 time: 'soon'"}
    assert answer.headers["X-RateLimit-Limit"]


def test_pat_times_are_timestamps_and_never_is_zero_on_api_v1(server: Running) -> None:
    created = identity_pb2_grpc.IdentityServiceStub(server.channel).CreatePersonalAccessToken(
        identity_pb2.CreatePersonalAccessTokenRequest(name=uid("pat"), expires_in_days=2),
        timeout=RPC_TIMEOUT,
    )
    pat = created.token
    created_ms = pat.created_at.ToMilliseconds()
    assert pat.expires_at.ToMilliseconds() == created_ms + 2 * 86_400_000
    assert not pat.HasField("last_used_at")

    listed = rest(server).get("/api/v1/oauth2/tokens")
    [shown] = [t for t in listed.json if t["id"] == pat.id]
    assert shown["created_at_ms"] == created_ms
    assert shown["expires_at_ms"] == pat.expires_at.ToMilliseconds()
    assert shown["last_used_at_ms"] == 0
