"""Page tokens of the identity listings, over gRPC against real servers: every
item once, in order, and tokens that only fit the listing that issued them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from conftest import Running
from engine_helpers import RPC_TIMEOUT
from rest_helpers import rest, uid

from trellis.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)


def walk(list_page: Callable[[str], Any], items: str) -> tuple[list[Any], int]:
    """Every item of a listing, page after page; and how many pages it took."""
    found: list[Any] = []
    token, pages = "", 0
    while True:
        answer = list_page(token)
        found.extend(getattr(answer, items))
        pages += 1
        token = answer.next_page_token
        if not token:
            return found, pages


def invalid_argument(call: Callable[[], object]) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    return str(info.value.details())  # type: ignore[attr-defined]


def test_each_identity_listing_pages_through_every_item_once(server: Running) -> None:
    ident = identity_pb2_grpc.IdentityServiceStub(server.channel)
    auth = auth_pb2_grpc.AuthServiceStub(server.channel)
    machines = machine_pb2_grpc.MachineUserServiceStub(server.channel)
    names = [uid("n") for _ in range(5)]
    for name in names:
        ident.CreatePersonalAccessToken(
            identity_pb2.CreatePersonalAccessTokenRequest(name=name, scopes=["workflows:read"]),
            timeout=RPC_TIMEOUT,
        )
        ident.CreateOAuthClient(
            identity_pb2.CreateOAuthClientRequest(name=name, scopes=["workflows:read"]),
            timeout=RPC_TIMEOUT,
        )
        auth.CreatePolicy(
            auth_pb2.CreatePolicyRequest(
                name=name,
                rules=[
                    auth_pb2.PolicyRule(
                        effect=auth_pb2.POLICY_EFFECT_DENY, resource="workflows:x", action=["run"]
                    )
                ],
            ),
            timeout=RPC_TIMEOUT,
        )
        machines.CreateMachineUser(
            machine_pb2.CreateMachineUserRequest(username=name), timeout=RPC_TIMEOUT
        )
        ident.CreateOrganization(
            identity_pb2.CreateOrganizationRequest(id=name, name=name), timeout=RPC_TIMEOUT
        )

    pats, pages = walk(
        lambda t: ident.ListPersonalAccessTokens(
            identity_pb2.ListPersonalAccessTokensRequest(page_size=2, page_token=t),
            timeout=RPC_TIMEOUT,
        ),
        "tokens",
    )
    assert [p.name for p in pats] == names[::-1] and pages == 3  # newest first

    clients, _ = walk(
        lambda t: ident.ListOAuthClients(
            identity_pb2.ListOAuthClientsRequest(page_size=2, page_token=t), timeout=RPC_TIMEOUT
        ),
        "clients",
    )
    assert [c.name for c in clients] == names

    policies, _ = walk(
        lambda t: auth.ListPolicies(
            auth_pb2.ListPoliciesRequest(page_size=2, page_token=t), timeout=RPC_TIMEOUT
        ),
        "policies",
    )
    assert [p.name for p in policies] == names

    machine_users, _ = walk(
        lambda t: machines.ListMachineUsers(
            machine_pb2.ListMachineUsersRequest(page_size=2, page_token=t), timeout=RPC_TIMEOUT
        ),
        "machine_users",
    )
    assert [m.username for m in machine_users] == names

    orgs, pages = walk(
        lambda t: ident.ListOrganizations(
            identity_pb2.ListOrganizationsRequest(page_size=4, page_token=t), timeout=RPC_TIMEOUT
        ),
        "organizations",
    )
    assert [o.id for o in orgs] == ["default", *names] and pages == 2

    logs, _ = walk(
        lambda t: auth.ListAuditLogs(
            auth_pb2.ListAuditLogsRequest(action="org.create", page_size=2, page_token=t),
            timeout=RPC_TIMEOUT,
        ),
        "logs",
    )
    # Newest first, down to the default organization made at start-up.
    assert [e.resource for e in logs] == [*(f"org:{n}" for n in names[::-1]), "org:default"]

    # Unsized pages of the listings that had no paging before hold everything.
    whole = ident.ListOAuthClients(identity_pb2.ListOAuthClientsRequest(), timeout=RPC_TIMEOUT)
    assert len(whole.clients) == 5 and whole.next_page_token == ""


def test_a_page_token_fits_only_the_listing_and_filters_that_issued_it(server: Running) -> None:
    ident = identity_pb2_grpc.IdentityServiceStub(server.channel)
    auth = auth_pb2_grpc.AuthServiceStub(server.channel)
    machines = machine_pb2_grpc.MachineUserServiceStub(server.channel)
    for _ in range(3):
        name = uid("n")
        ident.CreateOAuthClient(
            identity_pb2.CreateOAuthClientRequest(name=name, scopes=["workflows:read"]),
            timeout=RPC_TIMEOUT,
        )
        ident.CreateOrganization(
            identity_pb2.CreateOrganizationRequest(id=name, name=name), timeout=RPC_TIMEOUT
        )
    first = ident.ListOAuthClients(
        identity_pb2.ListOAuthClientsRequest(page_size=1), timeout=RPC_TIMEOUT
    )
    token = first.next_page_token
    assert token

    invalid_argument(
        lambda: machines.ListMachineUsers(
            machine_pb2.ListMachineUsersRequest(page_token=token), timeout=RPC_TIMEOUT
        )
    )
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    invalid_argument(
        lambda: ident.ListOAuthClients(
            identity_pb2.ListOAuthClientsRequest(page_token=tampered), timeout=RPC_TIMEOUT
        )
    )
    audit = auth.ListAuditLogs(
        auth_pb2.ListAuditLogsRequest(action="org.create", page_size=1), timeout=RPC_TIMEOUT
    )
    assert audit.next_page_token
    invalid_argument(
        lambda: auth.ListAuditLogs(
            auth_pb2.ListAuditLogsRequest(
                action="oauth_client.create", page_token=audit.next_page_token
            ),
            timeout=RPC_TIMEOUT,
        )
    )
    message = invalid_argument(
        lambda: ident.ListOrganizations(
            identity_pb2.ListOrganizationsRequest(page_size=1, offset=1), timeout=RPC_TIMEOUT
        )
    )
    assert "not both" in message
    invalid_argument(
        lambda: ident.ListOAuthClients(
            identity_pb2.ListOAuthClientsRequest(page_size=-1), timeout=RPC_TIMEOUT
        )
    )


def test_limit_and_offset_pages_still_answer_with_their_rest_headers(server: Running) -> None:
    ident = identity_pb2_grpc.IdentityServiceStub(server.channel)
    names = [uid("n") for _ in range(2)]
    for name in names:
        ident.CreateOrganization(
            identity_pb2.CreateOrganizationRequest(id=name, name=name), timeout=RPC_TIMEOUT
        )
    reply = rest(server).request("GET", "/api/v1/organizations?limit=1&offset=1")
    assert reply.status == 200 and [o["id"] for o in reply.json] == names[:1]
    assert reply.headers["X-Total-Count"] == "3" and reply.headers["X-Offset"] == "1"
    # The gRPC answer to the same page names the next one too.
    answer = ident.ListOrganizations(
        identity_pb2.ListOrganizationsRequest(limit=1, offset=1), timeout=RPC_TIMEOUT
    )
    assert [o.id for o in answer.organizations] == names[:1]
    rest_of_it = ident.ListOrganizations(
        identity_pb2.ListOrganizationsRequest(page_token=answer.next_page_token),
        timeout=RPC_TIMEOUT,
    )
    assert [o.id for o in rest_of_it.organizations] == names[1:]
    assert rest_of_it.next_page_token == ""


def test_users_page_by_token_and_still_by_limit_and_offset(server: Running) -> None:
    users = users_pb2_grpc.UserServiceStub(server.channel)
    names = [uid("u") for _ in range(5)]
    for name in names:
        users.CreateUser(
            users_pb2.CreateUserRequest(username=name, password="Correct-horse-battery-9"),
            timeout=RPC_TIMEOUT,
        )

    def page(token: str, **filters: Any) -> Any:
        request = users_pb2.ListUsersRequest(page_size=2, page_token=token, **filters)
        return users.ListUsers(request, timeout=RPC_TIMEOUT)

    listed, pages = walk(page, "users")
    # Oldest first: the administrator made at start-up, then the new users.
    assert [u.username for u in listed][1:] == names and pages == 3
    viewers, _ = walk(lambda t: page(t, role="viewer"), "users")
    assert [u.username for u in viewers] == names

    # A token is bound to the filters of the listing that issued it.
    token = page("", role="viewer").next_page_token
    assert "other filters" in invalid_argument(lambda: page(token, role="admin"))
    assert "not both" in invalid_argument(
        lambda: users.ListUsers(
            users_pb2.ListUsersRequest(page_size=2, offset=1), timeout=RPC_TIMEOUT
        )
    )

    by_offset = rest(server).get("/users?role=viewer&limit=2&offset=3")
    assert by_offset.status == 200
    assert [u["username"] for u in by_offset.json["data"]] == names[3:]
    assert (by_offset.headers["X-Total-Count"], by_offset.headers["X-Limit"]) == ("5", "2")
    by_token = rest(server).get(f"/api/v1/admin/users?role=viewer&page_size=2&page_token={token}")
    assert [u["username"] for u in by_token.json] == names[2:4]
    assert "X-Total-Count" not in by_token.headers


def test_an_audit_page_token_resumes_after_its_last_event_as_new_ones_arrive(
    server: Running,
) -> None:
    ident = identity_pb2_grpc.IdentityServiceStub(server.channel)
    auth = auth_pb2_grpc.AuthServiceStub(server.channel)

    def create_org() -> str:
        name = uid("n")
        ident.CreateOrganization(
            identity_pb2.CreateOrganizationRequest(id=name, name=name), timeout=RPC_TIMEOUT
        )
        return f"org:{name}"

    older = [create_org() for _ in range(4)]

    def page(token: str = "", **paging: Any) -> Any:
        request = auth_pb2.ListAuditLogsRequest(action="org.create", page_token=token, **paging)
        return auth.ListAuditLogs(request, timeout=RPC_TIMEOUT)

    first = page(page_size=2)
    assert [e.resource for e in first.logs] == older[:1:-1]
    # Events logged meanwhile are newer: they neither shift nor repeat the next page.
    create_org()
    second = page(first.next_page_token)
    assert [e.resource for e in second.logs][:2] == older[1::-1]

    # A limit/offset page names the page after it the same way.
    by_offset = page(limit=1, offset=1)
    assert [e.resource for e in by_offset.logs] == older[-1:]
    after_it = page(by_offset.next_page_token, page_size=2)
    assert [e.resource for e in after_it.logs] == older[-2:-4:-1]


def test_the_scope_catalogue_pages_like_any_listing(server: Running) -> None:
    ident = identity_pb2_grpc.IdentityServiceStub(server.anonymous_channel)
    whole = ident.ListScopes(identity_pb2.ListScopesRequest(), timeout=RPC_TIMEOUT)
    assert whole.next_page_token == "" and len(whole.scopes) > 3

    def page(token: str) -> identity_pb2.ListScopesResponse:
        request = identity_pb2.ListScopesRequest(page_size=3, page_token=token)
        return ident.ListScopes(request, timeout=RPC_TIMEOUT)

    paged, pages = walk(page, "scopes")
    assert [s.name for s in paged] == [s.name for s in whole.scopes]
    assert pages == -(-len(whole.scopes) // 3)
    token = page("").next_page_token
    forged = token[:-1] + ("B" if token[-1] == "A" else "A")
    assert "page_token" in invalid_argument(lambda: page(forged))
