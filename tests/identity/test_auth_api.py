"""Who may call what, over gRPC: credentials, scopes, roles, lease ownership,
organizations and rate limits, against real servers on SQLite and PostgreSQL.

Every principal here is made through the API itself (login, users, personal
access tokens, machine users, OAuth clients); nothing is put in the database
by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Running, login
from engine_helpers import RPC_TIMEOUT, create_workflow, job, must_claim, start_run, uid
from google.protobuf import struct_pb2

from trellis.rest_bridge import rpc_failure
from trellis.server.identity.ratelimit import Limit
from trellis.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    identity_pb2,
    identity_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    machine_pb2,
    machine_pb2_grpc,
    oauth_pb2,
    oauth_pb2_grpc,
    runs_pb2,
    runs_pb2_grpc,
    topics_pb2,
    topics_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)

PASSWORD = "Correct-horse-battery-9"


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def reason_of(error: grpc.RpcError) -> str:
    """The reason the server gave (its ErrorInfo), read as the REST bridge reads it."""
    return rpc_failure(error).reason


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)
    return error.code()


def auth_stub(channel: grpc.Channel) -> auth_pb2_grpc.AuthServiceStub:
    return auth_pb2_grpc.AuthServiceStub(channel)


def users_stub(channel: grpc.Channel) -> users_pb2_grpc.UserServiceStub:
    return users_pb2_grpc.UserServiceStub(channel)


def identity_stub(channel: grpc.Channel) -> identity_pb2_grpc.IdentityServiceStub:
    return identity_pb2_grpc.IdentityServiceStub(channel)


def wf_stub(channel: grpc.Channel) -> workflows_pb2_grpc.WorkflowServiceStub:
    return workflows_pb2_grpc.WorkflowServiceStub(channel)


def workers_stub(channel: grpc.Channel) -> workers_pb2_grpc.WorkerServiceStub:
    return workers_pb2_grpc.WorkerServiceStub(channel)


def make_user(server: Running, role: str) -> str:
    """A new user of the default organization with ``role``; returns its token."""
    name = uid(role)
    users_stub(server.channel).CreateUser(
        users_pb2.CreateUserRequest(username=name, password=PASSWORD, roles=[role]),
        timeout=RPC_TIMEOUT,
    )
    return login(server.anonymous_channel, name, PASSWORD)


def list_workflows(channel: grpc.Channel) -> list[str]:
    answer = wf_stub(channel).ListWorkflows(
        workflows_pb2.ListWorkflowsRequest(), timeout=RPC_TIMEOUT
    )
    return [w.id for w in answer.workflows]


def test_calls_without_valid_credentials_are_refused(server: Running) -> None:
    anonymous = server.anonymous_channel
    for channel in (anonymous, server.channel_with("not-a-token"), server.channel_with("eyJx.y.z")):
        error = refused(lambda ch=channel: list_workflows(ch))
        assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(error) == "invalid_token"
    stream = workers_stub(anonymous).StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id="w"), timeout=RPC_TIMEOUT
    )
    assert code_of(refused(lambda: next(stream))) == grpc.StatusCode.UNAUTHENTICATED
    # Public methods need nothing.
    scopes = identity_stub(anonymous).ListScopes(
        identity_pb2.ListScopesRequest(), timeout=RPC_TIMEOUT
    )
    assert "jobs:work" in {s.name for s in scopes.scopes}


def test_wrong_password_and_unknown_user_are_refused_alike(server: Running) -> None:
    wrong = refused(lambda: login(server.anonymous_channel, ADMIN_USERNAME, "nope-nope-nope"))
    unknown = refused(lambda: login(server.anonymous_channel, "nobody", "nope-nope-nope"))
    for error in (wrong, unknown):
        assert code_of(error) == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(error) == "invalid_credentials"
    assert wrong.details() == unknown.details()  # type: ignore[attr-defined]


def test_refresh_rotates_and_reuse_ends_the_session_and_logout_revokes(server: Running) -> None:
    first = auth_stub(server.anonymous_channel).Login(
        auth_pb2.LoginRequest(username=ADMIN_USERNAME, password=ADMIN_PASSWORD),
        timeout=RPC_TIMEOUT,
    )
    assert first.token and first.refresh_token and first.expires_at.ToSeconds() > time.time()
    second = auth_stub(server.anonymous_channel).Refresh(
        auth_pb2.RefreshRequest(token=first.refresh_token), timeout=RPC_TIMEOUT
    )
    assert second.token != first.token
    assert list_workflows(server.channel_with(second.token)) is not None

    # The retired refresh token, presented again, ends the whole session.
    reuse = refused(
        lambda: auth_stub(server.anonymous_channel).Refresh(
            auth_pb2.RefreshRequest(token=first.refresh_token), timeout=RPC_TIMEOUT
        )
    )
    assert code_of(reuse) == grpc.StatusCode.UNAUTHENTICATED
    after = refused(lambda: list_workflows(server.channel_with(second.token)))
    assert code_of(after) == grpc.StatusCode.UNAUTHENTICATED

    other = login(server.anonymous_channel, ADMIN_USERNAME, ADMIN_PASSWORD)
    auth_stub(server.channel_with(other)).Logout(auth_pb2.LogoutRequest(), timeout=RPC_TIMEOUT)
    gone = refused(lambda: list_workflows(server.channel_with(other)))
    assert code_of(gone) == grpc.StatusCode.UNAUTHENTICATED


def test_roles_grant_their_scopes_and_nothing_more(server: Running) -> None:
    wf = create_workflow(server, [job("a")])
    viewer = server.channel_with(make_user(server, "viewer"))
    operator = server.channel_with(make_user(server, "operator"))
    assert wf in list_workflows(viewer)
    denied = refused(
        lambda: wf_stub(viewer).RunWorkflow(
            workflows_pb2.RunWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
        )
    )
    assert code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(denied) == "insufficient_scope"
    run = wf_stub(operator).RunWorkflow(
        workflows_pb2.RunWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert run.run_id
    for channel in (viewer, operator):
        error = refused(
            lambda ch=channel: users_stub(ch).ListUsers(
                users_pb2.ListUsersRequest(), timeout=RPC_TIMEOUT
            )
        )
        assert code_of(error) == grpc.StatusCode.PERMISSION_DENIED


def test_personal_access_tokens_carry_their_scopes_need_the_org_header_and_revoke(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("a")])
    created = identity_stub(server.channel).CreatePersonalAccessToken(
        identity_pb2.CreatePersonalAccessTokenRequest(name="ci", scopes=["workflows:read"]),
        timeout=RPC_TIMEOUT,
    )
    secret = created.access_token
    assert secret.startswith("trl_pat_")
    listed = identity_stub(server.channel).ListPersonalAccessTokens(
        identity_pb2.ListPersonalAccessTokensRequest(), timeout=RPC_TIMEOUT
    )
    assert created.token.id in {t.id for t in listed.tokens}
    assert secret not in str(listed)

    pat = server.channel_with(secret, "default")
    assert wf in list_workflows(pat)
    run = refused(
        lambda: wf_stub(pat).RunWorkflow(
            workflows_pb2.RunWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
        )
    )
    assert reason_of(run) == "insufficient_scope"
    no_org = refused(lambda: list_workflows(server.channel_with(secret)))
    assert code_of(no_org) == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(no_org) == "missing_organization"
    elsewhere = refused(lambda: list_workflows(server.channel_with(secret, "another-org")))
    assert code_of(elsewhere) == grpc.StatusCode.PERMISSION_DENIED

    identity_stub(server.channel).RevokePersonalAccessToken(
        identity_pb2.RevokePersonalAccessTokenRequest(token_id=created.token.id),
        timeout=RPC_TIMEOUT,
    )
    revoked = refused(lambda: list_workflows(pat))
    assert code_of(revoked) == grpc.StatusCode.UNAUTHENTICATED


def test_leases_belong_to_the_principal_that_claimed_them(server: Running) -> None:
    machines = machine_pb2_grpc.MachineUserServiceStub(server.channel)
    created = machines.CreateMachineUser(
        machine_pb2.CreateMachineUserRequest(username=uid("builder")), timeout=RPC_TIMEOUT
    )
    machine = server.channel_with(created.generated_token)
    checked = machine_pb2_grpc.MachineUserServiceStub(machine).CheckMachineUser(
        machine_pb2.CheckMachineUserRequest(), timeout=RPC_TIMEOUT
    )
    assert checked.authenticated and checked.tenant_id == "default"

    wf = create_workflow(server, [job("a")])
    start_run(server, wf)
    got = workers_stub(machine).ClaimJob(
        workers_pb2.ClaimJobRequest(worker_id="builder", wait_secs=10),
        timeout=RPC_TIMEOUT + 10,
    )
    lease_id = got.assignment.lease.lease_id
    # The administrator, of the same org, does not know another principal's lease.
    for call in (
        lambda: server.workers.CompleteJob(
            workers_pb2.CompleteJobRequest(lease_id=lease_id), timeout=RPC_TIMEOUT
        ),
        lambda: server.workers.Heartbeat(
            workers_pb2.HeartbeatRequest(lease_id=lease_id), timeout=RPC_TIMEOUT
        ),
    ):
        error = refused(call)
        assert code_of(error) == grpc.StatusCode.ABORTED
        assert "unknown lease" in error.details()  # type: ignore[attr-defined]
    workers_stub(machine).CompleteJob(
        workers_pb2.CompleteJobRequest(lease_id=lease_id), timeout=RPC_TIMEOUT
    )


def test_client_credentials_tokens_are_narrowed_to_the_client_and_have_no_refresh(
    server: Running,
) -> None:
    wf = create_workflow(server, [job("a")])
    created = identity_stub(server.channel).CreateOAuthClient(
        identity_pb2.CreateOAuthClientRequest(name="reporting", scopes=["workflows:read"]),
        timeout=RPC_TIMEOUT,
    )
    oauth = oauth_pb2_grpc.OAuthServiceStub(server.anonymous_channel)
    token = oauth.Token(
        oauth_pb2.TokenRequest(
            grant_type="client_credentials",
            client_id=created.client.client_id,
            client_secret=created.client_secret,
        ),
        timeout=RPC_TIMEOUT,
    )
    assert token.token_type.lower() == "bearer" and token.scope == "workflows:read"
    assert not token.refresh_token
    client = server.channel_with(token.access_token)
    assert wf in list_workflows(client)
    assert (
        reason_of(
            refused(
                lambda: wf_stub(client).RunWorkflow(
                    workflows_pb2.RunWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
                )
            )
        )
        == "insufficient_scope"
    )
    # Asking for more than the client may have gets what it may have (RFC
    # 6749 3.3: the answer's scope says so).
    wider = oauth.Token(
        oauth_pb2.TokenRequest(
            grant_type="client_credentials",
            client_id=created.client.client_id,
            client_secret=created.client_secret,
            scope="workflows:read workflows:run",
        ),
        timeout=RPC_TIMEOUT,
    )
    assert wider.scope == "workflows:read"
    bad_secret = refused(
        lambda: oauth.Token(
            oauth_pb2.TokenRequest(
                grant_type="client_credentials",
                client_id=created.client.client_id,
                client_secret="wrong",
            ),
            timeout=RPC_TIMEOUT,
        )
    )
    assert code_of(bad_secret) == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(bad_secret) == "invalid_client"


# --------------------------------------------------------------- tenancy


@dataclass
class Tenant:
    """Another organization and a principal of each kind in it."""

    org_id: str
    user: grpc.Channel
    pat: grpc.Channel
    machine: grpc.Channel
    client: grpc.Channel

    def all(self) -> dict[str, grpc.Channel]:
        return {"user": self.user, "pat": self.pat, "machine": self.machine, "client": self.client}


def other_tenant(server: Running) -> Tenant:
    org_id = uid("org")
    identity_stub(server.channel).CreateOrganization(
        identity_pb2.CreateOrganizationRequest(
            id=org_id, name="Other", admin_username="boss", admin_password=PASSWORD
        ),
        timeout=RPC_TIMEOUT,
    )
    token = login(server.anonymous_channel, "boss", PASSWORD, org=org_id)
    user = server.channel_with(token)
    pat = identity_stub(user).CreatePersonalAccessToken(
        identity_pb2.CreatePersonalAccessTokenRequest(name="pat"), timeout=RPC_TIMEOUT
    )
    machine = machine_pb2_grpc.MachineUserServiceStub(user).CreateMachineUser(
        machine_pb2.CreateMachineUserRequest(username="robot"), timeout=RPC_TIMEOUT
    )
    client = identity_stub(user).CreateOAuthClient(
        identity_pb2.CreateOAuthClientRequest(name="app"), timeout=RPC_TIMEOUT
    )
    client_token = oauth_pb2_grpc.OAuthServiceStub(server.anonymous_channel).Token(
        oauth_pb2.TokenRequest(
            grant_type="client_credentials",
            client_id=client.client.client_id,
            client_secret=client.client_secret,
        ),
        timeout=RPC_TIMEOUT,
    )
    return Tenant(
        org_id,
        user,
        server.channel_with(pat.access_token, org_id),
        server.channel_with(machine.generated_token),
        server.channel_with(client_token.access_token),
    )


DENIED = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED}


def test_another_organizations_objects_are_invisible_to_all_its_principals(
    server: Running,
) -> None:
    # Objects of the default organization, made by its administrator.
    wf = create_workflow(server, [job("a"), job("b")])
    run_id = start_run(server, wf)
    lease = must_claim(server).lease.lease_id
    admin_id = (
        users_stub(server.channel)
        .ListUsers(users_pb2.ListUsersRequest(), timeout=RPC_TIMEOUT)
        .users[0]
        .id
    )
    pat = identity_stub(server.channel).CreatePersonalAccessToken(
        identity_pb2.CreatePersonalAccessTokenRequest(name="mine"), timeout=RPC_TIMEOUT
    )
    client = identity_stub(server.channel).CreateOAuthClient(
        identity_pb2.CreateOAuthClientRequest(name="mine"), timeout=RPC_TIMEOUT
    )
    policy = auth_stub(server.channel).CreatePolicy(
        auth_pb2.CreatePolicyRequest(
            name="mine",
            rules=[
                auth_pb2.PolicyRule(
                    effect=auth_pb2.POLICY_EFFECT_DENY, resource="workflows:x", action=["run"]
                )
            ],
        ),
        timeout=RPC_TIMEOUT,
    )

    def check(kind: str, channel: grpc.Channel) -> None:
        wf_s, runs_s = wf_stub(channel), runs_pb2_grpc.RunServiceStub(channel)
        w_s, a_s, i_s = workers_stub(channel), auth_stub(channel), identity_stub(channel)
        u_s = users_stub(channel)
        logs_s = logs_pb2_grpc.LogServiceStub(channel)
        m_s = machine_pb2_grpc.MachineUserServiceStub(channel)
        attempts: dict[str, Callable[[], object]] = {
            "GetWorkflow": lambda: wf_s.GetWorkflow(
                workflows_pb2.GetWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
            ),
            "RunWorkflow": lambda: wf_s.RunWorkflow(
                workflows_pb2.RunWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
            ),
            "CancelWorkflow": lambda: wf_s.CancelWorkflow(
                workflows_pb2.CancelWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
            ),
            "GetRun": lambda: runs_s.GetRun(
                runs_pb2.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT
            ),
            "CancelRun": lambda: runs_s.CancelRun(
                runs_pb2.CancelRunRequest(run_id=run_id), timeout=RPC_TIMEOUT
            ),
            "CompleteJob": lambda: w_s.CompleteJob(
                workers_pb2.CompleteJobRequest(lease_id=lease), timeout=RPC_TIMEOUT
            ),
            "Heartbeat": lambda: w_s.Heartbeat(
                workers_pb2.HeartbeatRequest(lease_id=lease), timeout=RPC_TIMEOUT
            ),
            "UpdateUser": lambda: u_s.UpdateUser(
                users_pb2.UpdateUserRequest(user_id=admin_id, enabled=False), timeout=RPC_TIMEOUT
            ),
            "DeleteUser": lambda: u_s.DeleteUser(
                users_pb2.DeleteUserRequest(user_id=admin_id), timeout=RPC_TIMEOUT
            ),
            "UpdatePolicy": lambda: a_s.UpdatePolicy(
                auth_pb2.UpdatePolicyRequest(policy_id=policy.id, name="x"), timeout=RPC_TIMEOUT
            ),
            "RevokePersonalAccessToken": lambda: i_s.RevokePersonalAccessToken(
                identity_pb2.RevokePersonalAccessTokenRequest(token_id=pat.token.id),
                timeout=RPC_TIMEOUT,
            ),
            "RevokeOAuthClient": lambda: i_s.RevokeOAuthClient(
                identity_pb2.RevokeOAuthClientRequest(client_id=client.client.client_id),
                timeout=RPC_TIMEOUT,
            ),
            "GetOrganization": lambda: i_s.GetOrganization(
                identity_pb2.GetOrganizationRequest(organization_id="default"),
                timeout=RPC_TIMEOUT,
            ),
            "SuspendOrganization": lambda: i_s.SuspendOrganization(
                identity_pb2.SuspendOrganizationRequest(organization_id="default"),
                timeout=RPC_TIMEOUT,
            ),
            "StreamRunEvents": lambda: next(
                runs_s.StreamRunEvents(
                    runs_pb2.StreamRunEventsRequest(run_id=run_id), timeout=RPC_TIMEOUT
                )
            ),
            "ListLogs": lambda: logs_s.ListLogs(
                logs_pb2.ListLogsRequest(workflow_id=wf, job_id="a"), timeout=RPC_TIMEOUT
            ),
            "FollowLogs": lambda: next(
                logs_s.FollowLogs(
                    logs_pb2.FollowLogsRequest(workflow_id=wf, job_id="a"), timeout=RPC_TIMEOUT
                )
            ),
            "PushLogs": lambda: logs_s.PushLogs(
                logs_pb2.PushLogsRequest(
                    lease_id=lease, chunks=[logs_pb2.LogChunk(sequence=1, data="x")]
                ),
                timeout=RPC_TIMEOUT,
            ),
            "GetJobCancelled": lambda: w_s.GetJobCancelled(
                workers_pb2.GetJobCancelledRequest(workflow_id=wf, job_id="a"),
                timeout=RPC_TIMEOUT,
            ),
            "SetMachineUserEnabled": lambda: m_s.SetMachineUserEnabled(
                machine_pb2.SetMachineUserEnabledRequest(machine_user_id=machine_id),
                timeout=RPC_TIMEOUT,
            ),
        }
        for name, attempt in attempts.items():
            code = code_of(refused(attempt))
            assert code in DENIED, f"{kind} {name}: {code}"
            # Another org's object is unknown, never forbidden: a principal
            # with the scope learns nothing about whether it exists.
            if code == grpc.StatusCode.PERMISSION_DENIED:
                assert kind != "user", f"{kind} {name} answered PERMISSION_DENIED"

        # Listings answer, with nothing of the default organization.
        with_scope = [
            (lambda: list_workflows(channel), [wf]),
            (
                lambda: [
                    u.id
                    for u in u_s.ListUsers(users_pb2.ListUsersRequest(), timeout=RPC_TIMEOUT).users
                ],
                [admin_id],
            ),
            (
                lambda: [
                    o.id
                    for o in i_s.ListOrganizations(
                        identity_pb2.ListOrganizationsRequest(), timeout=RPC_TIMEOUT
                    ).organizations
                ],
                ["default"],
            ),
            (
                lambda: [
                    p.id
                    for p in a_s.ListPolicies(
                        auth_pb2.ListPoliciesRequest(), timeout=RPC_TIMEOUT
                    ).policies
                ],
                [policy.id],
            ),
            (
                lambda: [
                    log.resource
                    for log in a_s.ListAuditLogs(
                        auth_pb2.ListAuditLogsRequest(limit=1000), timeout=RPC_TIMEOUT
                    ).logs
                ],
                [f"policy:{policy.id}", f"pat:{pat.token.id}"],
            ),
        ]
        with_scope += [
            (
                lambda: [
                    r.run_id
                    for r in runs_s.ListRuns(runs_pb2.ListRunsRequest(), timeout=RPC_TIMEOUT).runs
                ],
                [run_id],
            ),
            (
                lambda: [
                    w.worker_id
                    for w in w_s.ListWorkers(
                        workers_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT
                    ).workers
                ],
                ["worker"],
            ),
            (
                lambda: [
                    a.job.run_id
                    for a in w_s.ClaimJobs(
                        workers_pb2.ClaimJobsRequest(worker_id=f"thief-{kind}", max_jobs=10),
                        timeout=RPC_TIMEOUT,
                    ).assignments
                ],
                [run_id],
            ),
        ]
        for listing, hidden in with_scope:
            try:
                seen = listing()
            except grpc.RpcError as exc:  # no scope for this listing: also fine
                assert code_of(exc) == grpc.StatusCode.PERMISSION_DENIED, kind
                continue
            assert not set(hidden) & set(seen), f"{kind} saw {set(hidden) & set(seen)}"

    machine_id = (
        machine_pb2_grpc.MachineUserServiceStub(server.channel)
        .CreateMachineUser(
            machine_pb2.CreateMachineUserRequest(username=uid("ours")), timeout=RPC_TIMEOUT
        )
        .machine_user.id
    )
    tenant = other_tenant(server)
    for kind, channel in tenant.all().items():
        check(kind, channel)
    # The same workflow id in the other organization is another workflow.
    wf_stub(tenant.user).CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(
            workflow=workflows_pb2.Workflow(id=wf, name="theirs", jobs=[job("z")])
        ),
        timeout=RPC_TIMEOUT,
    )
    ours = server.workflows.GetWorkflow(
        workflows_pb2.GetWorkflowRequest(workflow_id=wf), timeout=RPC_TIMEOUT
    )
    assert ours.name != "theirs" and {j.id for j in ours.jobs} == {"a", "b"}

    # Nothing changed for the default organization.
    detail = server.runs.GetRun(runs_pb2.GetRunRequest(run_id=run_id), timeout=RPC_TIMEOUT)
    assert detail.run.state == runs_pb2.RUN_STATE_RUNNING
    server.workers.Heartbeat(workers_pb2.HeartbeatRequest(lease_id=lease), timeout=RPC_TIMEOUT)
    assert wf in list_workflows(server.channel)


def test_the_organization_header_selects_but_never_grants(server: Running) -> None:
    tenant = other_tenant(server)
    error = refused(lambda: list_workflows(server.channel_with(server.token, tenant.org_id)))
    assert code_of(error) == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(error) == "organization_mismatch"


# --------------------------------------------------------------- limits


def test_rate_limits_answer_resource_exhausted_with_retry_after(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(rate_limits={"general": Limit(3, 60.0), "worker": Limit(1000, 60.0)})
    calls = [
        wf_stub(server.channel).ListWorkflows.with_call(
            workflows_pb2.ListWorkflowsRequest(), timeout=RPC_TIMEOUT
        )
        for _ in range(2)
    ]
    remaining = [dict(call.trailing_metadata())["x-ratelimit-remaining"] for _, call in calls]
    assert remaining == ["1", "0"] or remaining == ["2", "1"]  # login may not count
    while True:
        try:
            list_workflows(server.channel)
        except grpc.RpcError as exc:
            error = exc
            break
    assert code_of(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) == "rate_limited"
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert int(trailers["retry-after"]) >= 1
    assert trailers["x-ratelimit-remaining"] == "0"
    # The worker protocol has its own budget.
    got = server.workers.ClaimJob(workers_pb2.ClaimJobRequest(worker_id="w"), timeout=RPC_TIMEOUT)
    assert not got.HasField("assignment")


def test_auth_can_be_off_only_on_a_loopback_host(start_server: Callable[..., Running]) -> None:
    with pytest.raises(ValueError, match=r"only 127\.0\.0\.1"):
        start_server(auth_enabled=False, host="0.0.0.0")


def test_without_auth_on_loopback_every_caller_is_an_administrator(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(auth_enabled=False)
    wf = create_workflow(server, [job("a")])
    assert wf in list_workflows(server.anonymous_channel)


def test_policies_take_away_what_scopes_grant_and_never_add(server: Running) -> None:
    prod = create_workflow(server, [job("a")], workflow_id=uid("prod"))
    dev = create_workflow(server, [job("a")], workflow_id=uid("dev"))
    auth_stub(server.channel).CreatePolicy(
        auth_pb2.CreatePolicyRequest(
            name="no_prod_runs",
            rules=[
                auth_pb2.PolicyRule(
                    effect=auth_pb2.POLICY_EFFECT_DENY, resource="workflows:prod-*", action=["run"]
                ),
                # An Allow grants nothing beyond the scopes.
                auth_pb2.PolicyRule(
                    effect=auth_pb2.POLICY_EFFECT_ALLOW, resource="workflows:*", action=["run"]
                ),
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    denied = refused(lambda: start_run(server, prod))
    assert code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(denied) == "policy_denied"
    assert start_run(server, dev)
    # Reading the denied workflow is another action: still allowed.
    assert prod in list_workflows(server.channel)
    viewer = server.channel_with(make_user(server, "viewer"))
    no_scope = refused(
        lambda: wf_stub(viewer).RunWorkflow(
            workflows_pb2.RunWorkflowRequest(workflow_id=dev), timeout=RPC_TIMEOUT
        )
    )
    assert reason_of(no_scope) == "insufficient_scope"


def test_a_policy_judges_the_workflow_a_request_names_in_either_field(server: Running) -> None:
    # CreateWorkflow names its workflow in workflow_id or in workflow.id: a
    # Deny on one workflow holds whichever the caller uses.
    prod = uid("prod")
    auth_stub(server.channel).CreatePolicy(
        auth_pb2.CreatePolicyRequest(
            name="prod_is_frozen",
            rules=[
                auth_pb2.PolicyRule(
                    effect=auth_pb2.POLICY_EFFECT_DENY,
                    resource="workflows:prod-*",
                    action=["write"],
                )
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    definition = workflows_pb2.Workflow(name="Frozen", jobs=[job("a")])
    by_field = workflows_pb2.CreateWorkflowRequest(workflow=definition, workflow_id=prod)
    definition_named = workflows_pb2.Workflow(id=prod, name="Frozen", jobs=[job("a")])
    in_message = workflows_pb2.CreateWorkflowRequest(workflow=definition_named)
    for request in (by_field, in_message):
        denied = refused(lambda r=request: server.workflows.CreateWorkflow(r, timeout=RPC_TIMEOUT))
        assert reason_of(denied) == "policy_denied"
    assert create_workflow(server, [job("a")], workflow_id=uid("dev"))


def test_policies_hold_for_the_workflows_a_publish_starts_and_the_events_read(
    server: Running,
) -> None:
    area = uid("area")
    on = f'name: Sub\non: {{topic: ["mHv1.0/{area}/#"]}}\njobs:\n  a: {{run: echo}}\n'
    prod, dev = uid("prod"), uid("dev")
    for workflow_id in (prod, dev):
        wf_stub(server.channel).CreateWorkflow(
            workflows_pb2.CreateWorkflowRequest(source=on, workflow_id=workflow_id),
            timeout=RPC_TIMEOUT,
        )
    auth_stub(server.channel).CreatePolicy(
        auth_pb2.CreatePolicyRequest(
            name="prod_is_closed",
            rules=[
                auth_pb2.PolicyRule(
                    effect=auth_pb2.POLICY_EFFECT_DENY,
                    resource="workflows:prod-*",
                    action=["run", "read"],
                )
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    published = topics_pb2_grpc.TopicServiceStub(server.channel).Publish(
        topics_pb2.PublishRequest(
            topic=f"mHv1.0/{area}/line-1", value=struct_pb2.Value(number_value=1)
        ),
        timeout=RPC_TIMEOUT,
    )
    assert [r.workflow_id for r in published.runs] == [dev]
    assert [s.workflow_id for s in published.skipped] == [prod]
    assert "polic" in published.skipped[0].reason
    events = events_pb2_grpc.EventServiceStub(server.channel)
    for name in (prod, dev):
        ask = events_pb2.ListEventsRequest(filter=events_pb2.EventFilter(workflow_id=name))
        if name == dev:
            assert events.ListEvents(ask, timeout=RPC_TIMEOUT)
            continue
        denied = refused(lambda a=ask: events.ListEvents(a, timeout=RPC_TIMEOUT))
        assert reason_of(denied) == "policy_denied"


def test_an_adhoc_run_needs_the_right_to_define_workflows(server: Running) -> None:
    created = identity_stub(server.channel).CreatePersonalAccessToken(
        identity_pb2.CreatePersonalAccessTokenRequest(name="runner", scopes=["workflows:run"]),
        timeout=RPC_TIMEOUT,
    )
    runner = server.channel_with(created.access_token, "default")
    ask = workflows_pb2.CreateRunRequest(source="name: A\non: push\njobs:\n  a: {run: id}\n")
    denied = refused(lambda: wf_stub(runner).CreateRun(ask, timeout=RPC_TIMEOUT))
    assert code_of(denied) == grpc.StatusCode.PERMISSION_DENIED
    assert "workflows:write" in (denied.details() or "")
    assert wf_stub(server.channel).CreateRun(ask, timeout=RPC_TIMEOUT).run_id


def test_a_worker_the_server_refuses_stops_and_says_why(server: Running) -> None:
    from trellis.worker_sdk import PermissionDenied, Unauthenticated, Worker

    for token, expected in (
        ("trl_mu_not-a-real-token", Unauthenticated),
        (make_user(server, "viewer"), PermissionDenied),  # no jobs:work
    ):
        worker = Worker(server.grpc_target, token=token)
        raised: list[BaseException] = []

        def run(w: Worker = worker, out: list[BaseException] = raised) -> None:
            try:
                w.run()
            except BaseException as exc:  # examined below
                out.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(RPC_TIMEOUT)
        assert not thread.is_alive(), "the worker kept retrying"
        assert len(raised) == 1 and isinstance(raised[0], expected), raised
