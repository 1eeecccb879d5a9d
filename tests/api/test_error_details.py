"""Every error status the server sends carries a ``google.rpc.ErrorInfo``, and requests
that cannot be decoded, or hold NUL characters, are INVALID_ARGUMENT, on SQLite and
PostgreSQL, with no traceback in the log.

One sample of a real error path per status code, through the generated stubs and,
for bytes no stub would send, through raw method handles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import grpc
import pytest
from conftest import NO_LIMITS, Running, login
from engine_helpers import RPC_TIMEOUT, uid
from rest_helpers import Rest, rest
from sqlalchemy import text
from status_helpers import error_info, no_errors_logged

from trellis.server.identity.ratelimit import Limit
from trellis.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    logs_pb2,
    logs_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
    workers_pb2,
    workers_pb2_grpc,
    workflows_pb2,
)

PASSWORD = "Correct-horse-battery-9"
CODE = grpc.StatusCode


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def check(error: grpc.RpcError, code: grpc.StatusCode, reason: str, *fragments: str) -> None:
    assert isinstance(error, grpc.Call)
    assert error.code() == code, (error.code(), error.details())
    assert error_info(error).reason == reason
    for fragment in fragments:
        assert fragment in error.details(), (fragment, error.details())


def test_every_code_carries_error_info(server: Running, caplog: pytest.LogCaptureFixture) -> None:
    users = users_pb2_grpc.UserServiceStub(server.channel)
    # INVALID_ARGUMENT, from the service's own validation.
    check(
        refused(
            lambda: server.workflows.CreateWorkflow(
                workflows_pb2.CreateWorkflowRequest(), timeout=RPC_TIMEOUT
            )
        ),
        CODE.INVALID_ARGUMENT,
        "invalid_argument",
        "workflow: required",
    )
    check(
        refused(
            lambda: server.workflows.GetWorkflow(
                workflows_pb2.GetWorkflowRequest(workflow_id="nope"), timeout=RPC_TIMEOUT
            )
        ),
        CODE.NOT_FOUND,
        "not_found",
        "'nope' not found",
    )
    name = uid("user")
    create = users_pb2.CreateUserRequest(username=name, password=PASSWORD, roles=["viewer"])
    users.CreateUser(create, timeout=RPC_TIMEOUT)
    check(
        refused(lambda: users.CreateUser(create, timeout=RPC_TIMEOUT)),
        CODE.ALREADY_EXISTS,
        "already_exists",
    )
    check(
        refused(
            lambda: server.workers.CompleteJob(
                workers_pb2.CompleteJobRequest(lease_id="no-such-lease"), timeout=RPC_TIMEOUT
            )
        ),
        CODE.ABORTED,
        "lease_lost",
        "unknown lease",
    )
    admin_id = server.subject.partition(":")[2]
    check(
        refused(
            lambda: users.DeleteUser(
                users_pb2.DeleteUserRequest(user_id=admin_id), timeout=RPC_TIMEOUT
            )
        ),
        CODE.FAILED_PRECONDITION,
        "failed_precondition",
        "your own account",
    )
    viewer = server.channel_with(login(server.anonymous_channel, name, PASSWORD))
    check(
        refused(
            lambda: workers_pb2_grpc.WorkerServiceStub(viewer).ClaimJob(
                workers_pb2.ClaimJobRequest(worker_id="w"), timeout=RPC_TIMEOUT
            )
        ),
        CODE.PERMISSION_DENIED,
        "insufficient_scope",
    )
    check(
        refused(
            lambda: workers_pb2_grpc.WorkerServiceStub(server.anonymous_channel).ClaimJob(
                workers_pb2.ClaimJobRequest(worker_id="w"), timeout=RPC_TIMEOUT
            )
        ),
        CODE.UNAUTHENTICATED,
        "invalid_token",
    )
    no_errors_logged(caplog)


def test_rate_limited_calls_carry_error_info(start_server: Callable[..., Running]) -> None:
    server = start_server(rate_limits={**NO_LIMITS, "general": Limit(1, 60.0)})

    def list_workflows() -> None:
        while True:
            server.workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest(), timeout=5)

    check(refused(list_workflows), CODE.RESOURCE_EXHAUSTED, "rate_limited")


def test_unexpected_failures_are_internal_with_error_info(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # A real fault: the table the call reads is gone.
    with server.server.db.engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_events"))
    caplog.clear()
    error = refused(
        lambda: auth_pb2_grpc.AuthServiceStub(server.channel).ListAuditLogs(
            auth_pb2.ListAuditLogsRequest(), timeout=RPC_TIMEOUT
        )
    )
    check(error, CODE.INTERNAL, "internal", "internal error; see the server log")
    assert "audit_events" not in error.details()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failures] == ["/trellis.v1.AuthService/ListAuditLogs failed"]


# --- requests that do not decode, and NUL in text ----------------------------------------


def raw_unary(channel: grpc.Channel, method: str) -> Callable[[bytes], bytes]:
    call = channel.unary_unary(method)
    return lambda data: call(data, timeout=RPC_TIMEOUT)


@pytest.mark.parametrize(
    "method",
    [
        "/trellis.v1.WorkflowService/GetWorkflow",
        "/trellis.v1.WorkerService/ClaimJob",
        "/trellis.v1.AuthService/Login",  # public: refused before anything else
        "/trellis.v1.OAuthService/Token",
    ],
)
def test_undecodable_messages_are_invalid_argument(
    server: Running, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    for channel in (server.channel, server.anonymous_channel):
        for garbage in (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xed\xa0"):
            error = refused(lambda data=garbage, ch=channel: raw_unary(ch, method)(data))
            check(error, CODE.INVALID_ARGUMENT, "invalid_argument", "request: ")
    no_errors_logged(caplog)


def test_nul_in_any_text_field_is_invalid_argument_naming_it(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    anonymous = auth_pb2_grpc.AuthServiceStub(server.anonymous_channel)
    for call, field in [
        (
            lambda: anonymous.Login(
                auth_pb2.LoginRequest(username="ad\x00min", password="x"), timeout=RPC_TIMEOUT
            ),
            "username",
        ),
        (
            lambda: server.workflows.GetWorkflow(
                workflows_pb2.GetWorkflowRequest(workflow_id="ci\x00"), timeout=RPC_TIMEOUT
            ),
            "workflow_id",
        ),
        (
            lambda: server.workers.ClaimJob(
                workers_pb2.ClaimJobRequest(worker_id="w", labels=["a", "\x00"]),
                timeout=RPC_TIMEOUT,
            ),
            "labels[1]",
        ),
        (
            lambda: server.workers.CompleteJob(
                workers_pb2.CompleteJobRequest(lease_id="l", outputs={"url": "s3://\x00"}),
                timeout=RPC_TIMEOUT,
            ),
            'outputs["url"]',
        ),
        (
            lambda: server.workers.CompleteJob(
                workers_pb2.CompleteJobRequest(lease_id="l", outputs={"u\x00": "x"}),
                timeout=RPC_TIMEOUT,
            ),
            'outputs["u\\u0000"]',
        ),
        (
            lambda: server.logs.PushLogs(
                logs_pb2.PushLogsRequest(
                    lease_id="l", chunks=[logs_pb2.LogChunk(), logs_pb2.LogChunk(data="\x00")]
                ),
                timeout=RPC_TIMEOUT,
            ),
            "chunks[1].data",
        ),
    ]:
        error = refused(call)
        check(error, CODE.INVALID_ARGUMENT, "invalid_argument", f"{field}: ", "NUL")
    no_errors_logged(caplog)


def test_streamed_requests_are_checked_one_by_one(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    def heartbeats() -> Iterator[workers_pb2.HeartbeatRequest]:
        yield workers_pb2.HeartbeatRequest(lease_id="\x00")

    answers = server.workers.StreamHeartbeats(heartbeats(), timeout=RPC_TIMEOUT)
    check(refused(lambda: next(answers)), CODE.INVALID_ARGUMENT, "invalid_argument", "lease_id")
    upload = server.channel.stream_unary("/trellis.v1.LogService/UploadLogs")
    check(
        refused(lambda: upload(iter([b"\xff\xff"]), timeout=RPC_TIMEOUT)),
        CODE.INVALID_ARGUMENT,
        "invalid_argument",
        "request: ",
    )
    # A well-formed stream still works.
    logs = logs_pb2_grpc.LogServiceStub(server.channel)
    assert logs.UploadLogs(iter([]), timeout=RPC_TIMEOUT).accepted == 0
    no_errors_logged(caplog)


def test_rest_renders_generic_reasons_in_its_own_words(server: Running) -> None:
    # The /api/v1 surface shows reasons: the server's `invalid_argument` and
    # `not_found` read as they always have.
    client: Rest = rest(server)
    reply = client.get("/api/v1/organizations/nope")
    assert (reply.status, reply.json["error"]) == (404, "not_found")
    reply = client.post("/api/v1/organizations", {"name": ""})
    assert (reply.status, reply.json["error"]) == (400, "bad_request")


def test_messages_that_echo_huge_input_are_cut_to_fit_the_trailers(server: Running) -> None:
    # A client refuses trailers over 8 KiB: uncut, this NOT_FOUND arrived as
    # RESOURCE_EXHAUSTED with no message and no details.
    huge = "w" * 100_000
    error = refused(
        lambda: server.workflows.GetWorkflow(
            workflows_pb2.GetWorkflowRequest(workflow_id=huge), timeout=RPC_TIMEOUT
        )
    )
    check(error, CODE.NOT_FOUND, "not_found", "workflow 'www")
    assert isinstance(error, grpc.Call)
    assert len(error.details().encode()) <= 1024 and error.details().endswith("...")


def test_sign_in_to_an_organization_id_no_org_can_have_is_422(server: Running) -> None:
    # It reached the audit log of failed sign-ins, whose column it overflowed
    # on PostgreSQL (INTERNAL).
    login_request = auth_pb2.LoginRequest(username="admin", password="wrong-password-1")
    for org in ("o" * 65, "-x", "a b"):
        error = refused(
            lambda org=org: auth_pb2_grpc.AuthServiceStub(server.anonymous_channel).Login(
                login_request, metadata=(("x-organization-id", org),), timeout=RPC_TIMEOUT
            )
        )
        check(error, CODE.INVALID_ARGUMENT, "missing_organization", "malformed")
    reply = Rest(server.rest_url).post(
        "/auth/login",
        {"username": "admin", "password": "x"},
        headers={"X-Organization-ID": "o" * 300},
    )
    assert (reply.status, reply.json["success"]) == (422, False)
