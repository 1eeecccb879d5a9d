"""The REST bridge's surface conventions: error styles, envelopes, field names, error
details from the server, headers from metadata, and form-encoded bodies.

Answers are built by the bridge's own functions over the real ``trellis.v1``
descriptors; metadata and error details come from real gRPC calls, to an in-process
upstream that sends chosen metadata and to a real Trellis server.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import flask
import grpc
import pytest
from conftest import Running
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from trellis.rest_bridge import CodecError, create_app, render_message, rpc_failure

# Each surface's error styles, envelopes and headers are checked over combinations of
# options and upstream trailers that no documented route produces on its own.
from trellis.rest_bridge._attribution import SurfaceLocator
from trellis.rest_bridge._codec import (
    InvalidFormError,
    body_binder,
    form_binder,
    load_form,
    query_setters,
    response_renderer,
)
from trellis.rest_bridge._errors import error_body, error_response, rpc_error_response
from trellis.rest_bridge._http_rules import discover_bindings
from trellis.rest_bridge._response_headers import COPIED_HEADERS, call_headers, metadata_headers
from trellis.rest_bridge._routes import TranscodedRoute
from trellis.rest_bridge._status_details import (
    DETAILS_KEY,
    decode_status_details,
    details_from_metadata,
    reason_for_code,
)
from trellis.rest_bridge._surface import DEFAULT_SURFACE, Surface, surface_of
from trellis.v1 import options_pb2, workers_pb2, workflows_pb2

GOOGLE = options_pb2.ERROR_STYLE_GOOGLE
SUCCESS_FLAG = options_pb2.ERROR_STYLE_SUCCESS_FLAG
CODE_STATUS = options_pb2.ERROR_STYLE_CODE_STATUS
REASON_MESSAGE = options_pb2.ERROR_STYLE_REASON_MESSAGE
OAUTH2 = options_pb2.ERROR_STYLE_OAUTH2

# --- error bodies ----------------------------------------------------------------------


def test_error_body_of_each_style() -> None:
    code, message = grpc.StatusCode.UNAUTHENTICATED, "Invalid machine user credentials"
    reason = "invalid_credentials"
    assert error_body(GOOGLE, 401, code, message, reason) == {
        "error": {"code": 401, "status": "UNAUTHENTICATED", "message": message}
    }
    assert error_body(SUCCESS_FLAG, 401, code, message, reason) == {
        "success": False,
        "error": message,
    }
    assert error_body(CODE_STATUS, 401, code, message, reason) == {
        "error": message,
        "code": "INVALID_CREDENTIALS",
        "status": 401,
    }
    assert error_body(REASON_MESSAGE, 403, code, "needs runs:write", "insufficient_scope") == {
        "error": "insufficient_scope",
        "message": "needs runs:write",
    }
    assert error_body(OAUTH2, 400, code, "code expired", "invalid_grant") == {
        "error": "invalid_grant",
        "error_description": "code expired",
    }
    # The unspecified style (and any newer one) is Google's.
    assert error_body(0, 401, code, message, reason) == error_body(GOOGLE, 401, code, message)
    assert error_body(99, 401, code, message, reason) == error_body(GOOGLE, 401, code, message)


def test_reason_defaults_to_the_one_of_the_code() -> None:
    body = error_body(REASON_MESSAGE, 404, grpc.StatusCode.NOT_FOUND, "workflow 'x' not found")
    assert body == {"error": "not_found", "message": "workflow 'x' not found"}
    assert reason_for_code(grpc.StatusCode.ABORTED) == "conflict"
    assert reason_for_code(grpc.StatusCode.RESOURCE_EXHAUSTED) == "rate_limited"
    assert reason_for_code(grpc.StatusCode.UNAUTHENTICATED) == "unauthorized"
    assert reason_for_code(grpc.StatusCode.PERMISSION_DENIED) == "forbidden"
    # Every code has a reason.
    assert all(reason_for_code(code) for code in grpc.StatusCode if code != grpc.StatusCode.OK)


def test_bridge_errors_take_reasons_from_their_http_status() -> None:
    too_large = error_response(413, "request body is larger than 64 bytes", style=CODE_STATUS)
    assert json.loads(too_large.get_data()) == {
        "error": "request body is larger than 64 bytes",
        "code": "PAYLOAD_TOO_LARGE",
        "status": 413,
    }
    not_allowed = error_response(405, "DELETE is not allowed", style=REASON_MESSAGE)
    assert json.loads(not_allowed.get_data())["error"] == "method_not_allowed"
    # Google's style keeps its gRPC status names.
    google = error_response(413, "too large")
    assert json.loads(google.get_data())["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_oauth2_errors_use_rfc_6749_names_and_are_not_cached() -> None:
    response = error_response(400, "invalid JSON body: ...", style=OAUTH2)
    assert response.status_code == 400
    assert json.loads(response.get_data()) == {
        "error": "invalid_request",
        "error_description": "invalid JSON body: ...",
    }
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    unavailable = error_response(503, "down", style=OAUTH2)
    assert json.loads(unavailable.get_data())["error"] == "temporarily_unavailable"
    # Other styles add no caching headers.
    assert "Cache-Control" not in error_response(400, "x", style=REASON_MESSAGE).headers


# --- surfaces and envelopes ----------------------------------------------------------------


def test_surface_is_read_from_the_service_options() -> None:
    service = workflows_pb2.DESCRIPTOR.services_by_name["WorkflowService"]
    surface = surface_of(service)
    assert (surface.name, surface.error_style) == ("workflow-graph", GOOGLE)
    assert surface.envelope == options_pb2.ENVELOPE_UNSPECIFIED
    assert not surface.json_names
    # A binding carries the surface its (trellis.v1.rest) entry names, else its service's.
    for binding in discover_bindings():
        entries = {
            entry.path: entry.surface
            for entry in binding.method.GetOptions().Extensions[options_pb2.rest].bindings
        }
        named = entries.get(binding.path.template)
        if named:
            assert binding.surface.name == named
        else:
            assert binding.surface == surface_of(binding.service)
        assert binding.error_style == binding.surface.error_style

    declared = Surface.from_options(
        options_pb2.SurfaceConventions(
            name="manager",
            error_style=CODE_STATUS,
            envelope=options_pb2.ENVELOPE_SUCCESS_DATA,
            field_names=options_pb2.FIELD_NAMES_JSON,
        )
    )
    assert declared == Surface("manager", CODE_STATUS, 1, 1)
    assert declared.json_names
    # A surface without an error style answers errors in Google's.
    assert Surface.from_options(options_pb2.SurfaceConventions()).error_style == GOOGLE
    assert Surface.from_options(options_pb2.SurfaceConventions()) == DEFAULT_SURFACE


def test_success_envelope_wraps_every_body_shape() -> None:
    wrapped = Surface(envelope=options_pb2.ENVELOPE_SUCCESS_DATA)
    for body in [{"id": "x"}, [1, 2], "text", None, True, {}]:
        assert wrapped.wrap(body) == {"success": True, "data": body}
        assert DEFAULT_SURFACE.wrap(body) is body
    assert Surface(error_style=OAUTH2).headers == (
        ("Cache-Control", "no-store"),
        ("Pragma", "no-cache"),
    )
    assert DEFAULT_SURFACE.headers == ()


# --- field names -------------------------------------------------------------------------


def _claimed() -> workers_pb2.ClaimJobResponse:
    response = workers_pb2.ClaimJobResponse()
    job = response.assignment.job
    job.job_id = "build"
    job.workflow_id = "wf-uuid"
    job.required_labels.append("docker")
    job.retry_policy.max_retries = 2
    job.retry_policy.backoff.none.SetInParent()
    job.upstream_outputs["test_job"].values["line_coverage"] = "94%"
    job.enqueued_at.FromMilliseconds(1710000000000)
    response.assignment.lease.lease_id = "lease-uuid"
    response.assignment.lease.ttl_secs = 30
    return response


def test_json_field_names_render_in_camel_case_at_every_depth() -> None:
    render = response_renderer(
        workers_pb2.ClaimJobResponse.DESCRIPTOR,
        "assignment",
        json_names=True,
        times=options_pb2.TIME_FORMAT_EPOCH_MS_OR_ZERO,
    )
    body: Any = render(_claimed())
    job, lease = body["job"], body["lease"]
    assert (job["jobId"], job["workflowId"], job["requiredLabels"]) == (
        "build",
        "wf-uuid",
        ["docker"],
    )
    assert job["enqueuedAtMs"] == 1710000000000
    assert job["retryPolicy"]["maxRetries"] == 2
    # The tagged union keeps its declared json_names.
    assert job["retryPolicy"]["backoff"] == "None"
    # Map keys are data and keep their spelling, in maps of maps too.
    assert job["upstreamOutputs"] == {"test_job": {"line_coverage": "94%"}}
    assert (lease["leaseId"], lease["ttlSecs"]) == ("lease-uuid", 30)
    assert not any("_" in key for key in job)


def test_default_field_names_stay_proto_names() -> None:
    body: Any = render_message(_claimed())
    job = body["assignment"]["job"]
    assert (job["job_id"], job["retry_policy"]["max_retries"]) == ("build", 2)
    assert "jobId" not in job
    # Both spellings have their own compiled renderers; neither leaks into the other.
    camel: Any = render_message(_claimed(), json_names=True)
    again: Any = render_message(_claimed())
    assert "jobId" in camel["assignment"]["job"]
    assert "job_id" in again["assignment"]["job"]


def test_well_known_types_follow_the_field_name_spelling() -> None:
    timeout = duration_pb2.Duration(seconds=90)
    assert render_message(timeout, json_names=True) == "90s"


def test_requests_accept_json_and_proto_names() -> None:
    descriptor = workers_pb2.ClaimJobRequest.DESCRIPTOR
    bind = body_binder(descriptor, "*")
    for body in [
        {"workerId": "w1", "leaseTtlSecs": 60, "labels": ["gpu"]},
        {"worker_id": "w1", "lease_ttl_secs": 60, "labels": ["gpu"]},
    ]:
        message = workers_pb2.ClaimJobRequest()
        bind(message, body)
        assert (message.worker_id, message.lease_ttl_secs, list(message.labels)) == (
            "w1",
            60,
            ["gpu"],
        )
    setters = query_setters(descriptor, lambda chain: False)
    for key in ["workerId", "worker_id"]:
        message = workers_pb2.ClaimJobRequest()
        setters[key](message, ["w2"])
        assert message.worker_id == "w2"
    with pytest.raises(CodecError, match="leaseTtlSecs"):
        bind(workers_pb2.ClaimJobRequest(), {"leaseTtlSecs": "soon"})


# --- form-encoded bodies -----------------------------------------------------------------


def test_load_form_groups_values_and_drops_empty_ones() -> None:
    form = load_form(
        b"grant_type=client_credentials&client_id=c1&scope=workflows%3Aread+runs%3Awrite"
        b"&labels=a&labels=b&client_secret="
    )
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["c1"],
        "scope": ["workflows:read runs:write"],
        "labels": ["a", "b"],
    }
    assert load_form(b"") == {}
    with pytest.raises(InvalidFormError, match="UTF-8"):
        load_form(b"name=%FF%FE")
    with pytest.raises(InvalidFormError, match="UTF-8"):
        load_form(b"name=\xff")


def test_form_fields_bind_like_query_parameters() -> None:
    bind = form_binder(workers_pb2.ClaimJobRequest.DESCRIPTOR, lambda chain: False)
    message = workers_pb2.ClaimJobRequest()
    bind(
        message,
        load_form(b"workerId=w1&labels=gpu&labels=linux&lease_ttl_secs=45&unknown=ignored"),
    )
    assert (message.worker_id, list(message.labels), message.lease_ttl_secs) == (
        "w1",
        ["gpu", "linux"],
        45,
    )
    with pytest.raises(CodecError, match="lease_ttl_secs: expected an integer"):
        bind(workers_pb2.ClaimJobRequest(), {"lease_ttl_secs": ["x"]})


def test_form_bodies_only_where_declared() -> None:
    app = create_app(grpc.insecure_channel("127.0.0.1:1"), call_timeout_secs=2.0)
    client = app.test_client()
    form = "application/x-www-form-urlencoded"
    # The OAuth2 endpoints declare (rest).form_body; a form there is read as one.
    reply = client.post("/api/v1/oauth2/token", data=b"grant_type=%FF", content_type=form)
    assert reply.status_code == 400
    assert "invalid form body" in reply.get_json()["error_description"]
    # Elsewhere a form is no JSON body: 415, whether the body is "*" or one field.
    for path in ("/api/jobs/claim", "/api/workflows"):
        reply = client.post(path, data="worker_id=w&wait_secs=x", content_type=form)
        assert reply.status_code == 415
        assert reply.get_json()["error"]["message"] == (
            f"request body is not JSON (Content-Type: {form}); send application/json"
        )
    reply = client.post("/api/jobs/claim", json={"worker_id": 5})
    assert reply.get_json()["error"]["message"] == "worker_id: expected a string, got 5"
    declared = {b.rpc_path for b in discover_bindings() if b.form_body}
    assert declared == {
        f"/trellis.v1.OAuthService/{name}"
        for name in ("Token", "Authorize", "Revoke", "Introspect")
    }


# --- status details ----------------------------------------------------------------------


def _details(
    reason: str, *, http_status: str | None = None, extra: list[any_pb2.Any] | None = None
) -> bytes:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="trellis")
    if http_status is not None:
        info.metadata["http_status"] = http_status
    packed = any_pb2.Any()
    packed.Pack(info)
    status = status_pb2.Status(code=9, message="m", details=[*(extra or []), packed])
    return status.SerializeToString()


def test_status_details_decode_reason_and_http_status() -> None:
    details = decode_status_details(_details("missing_organization", http_status="422"))
    assert details is not None
    assert (details.reason, details.domain, details.http_status) == (
        "missing_organization",
        "trellis",
        422,
    )
    assert details.metadata == {"http_status": "422"}
    # Another detail type before the ErrorInfo is skipped.
    other = any_pb2.Any()
    other.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3)))
    later = decode_status_details(_details("rate_limited", extra=[other]))
    assert later is not None and later.reason == "rate_limited" and later.http_status is None


@pytest.mark.parametrize("status", ["abc", "200", "302", "600", "", " 4 2 2"])
def test_http_status_outside_the_error_classes_is_ignored(status: str) -> None:
    details = decode_status_details(_details("odd", http_status=status))
    assert details is not None and details.reason == "odd" and details.http_status is None


def test_malformed_status_details_are_ignored() -> None:
    garbage = any_pb2.Any(
        type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\xff\xff\xff"
    )
    for data in [
        b"\xff\xff\xff\xff",
        b"\x0a",  # truncated field
        status_pb2.Status(code=3, message="no details").SerializeToString(),
        status_pb2.Status(details=[garbage]).SerializeToString(),
        _details(""),  # an ErrorInfo without a reason
        b"",
    ]:
        assert decode_status_details(data) is None
    # Only the binary trailer counts; a text value under the key is not details.
    assert details_from_metadata([(DETAILS_KEY, "text")]) is None
    assert details_from_metadata(None) is None
    assert details_from_metadata([("a", "b"), (DETAILS_KEY, _details("x"))]) is not None


# --- metadata -> headers -----------------------------------------------------------------


def test_only_allow_listed_metadata_becomes_headers() -> None:
    headers = metadata_headers(
        [
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "99"),
            ("link", '</api/x?page=2>; rel="next"'),
            ("x-internal-user", "alice"),
            ("authorization", "Bearer secret"),
            (DETAILS_KEY, b"\x00"),
            ("x-total-count", "bad\r\nSet-Cookie: x=1"),
        ],
        [
            ("x-ratelimit-remaining", "98"),
            ("link", '</api/x?page=9>; rel="last"'),
            ("www-authenticate", 'Bearer error="invalid_token"'),
            ("retry-after", "7"),
        ],
    )
    assert headers == [
        ("X-RateLimit-Limit", "100"),
        ("Link", '</api/x?page=2>; rel="next"'),
        ("X-RateLimit-Remaining", "98"),
        ("Link", '</api/x?page=9>; rel="last"'),
        ("WWW-Authenticate", 'Bearer error="invalid_token"'),
        ("Retry-After", "7"),
    ]
    assert call_headers(object()) == []


# An upstream gRPC server that answers GetWorkflow with chosen metadata and errors, so
# that the bridge reads a real grpc.Call.
_GET_WORKFLOW = "/trellis.v1.WorkflowService/GetWorkflow"


def _get_workflow(request: workflows_pb2.GetWorkflowRequest, context: Any) -> Any:
    wanted = request.workflow_id
    if wanted == "ok":
        context.send_initial_metadata(
            (("x-total-count", "3"), ("link", "</api/workflows?offset=1>"), ("x-secret", "s"))
        )
        context.set_trailing_metadata((("x-ratelimit-remaining", "41"),))
        return workflows_pb2.Workflow(id="ok", name="Continuous integration", trigger="push")
    trailers: list[tuple[str, str | bytes]] = [("retry-after", "30"), ("x-secret", "s")]
    if wanted == "limited":
        trailers.append((DETAILS_KEY, _details("rate_limited")))
        context.set_trailing_metadata(tuple(trailers))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
    if wanted == "unprocessable":
        trailers.append((DETAILS_KEY, _details("missing_organization", http_status="422")))
        context.set_trailing_metadata(tuple(trailers))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "X-Organization-ID is required")
    if wanted == "garbled":
        trailers.append((DETAILS_KEY, b"\xff\x00garbage"))
        context.set_trailing_metadata(tuple(trailers))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    context.abort(grpc.StatusCode.NOT_FOUND, f"workflow {wanted!r} not found")


@pytest.fixture(scope="module")
def upstream() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(
        _get_workflow,
        request_deserializer=workflows_pb2.GetWorkflowRequest.FromString,
        response_serializer=workflows_pb2.Workflow.SerializeToString,
    )
    service = grpc.method_handlers_generic_handler(
        "trellis.v1.WorkflowService", {"GetWorkflow": handler}
    )
    server.add_generic_rpc_handlers((service,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(grace=None)


def _fail(channel: grpc.Channel, workflow_id: str) -> grpc.RpcError:
    stub = channel.unary_unary(
        _GET_WORKFLOW,
        request_serializer=workflows_pb2.GetWorkflowRequest.SerializeToString,
        response_deserializer=workflows_pb2.Workflow.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub(workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id), timeout=10)
    return caught.value


def test_headers_of_a_successful_call(upstream: grpc.Channel) -> None:
    stub = upstream.unary_unary(
        _GET_WORKFLOW,
        request_serializer=workflows_pb2.GetWorkflowRequest.SerializeToString,
        response_deserializer=workflows_pb2.Workflow.FromString,
    )
    _, call = stub.with_call(workflows_pb2.GetWorkflowRequest(workflow_id="ok"), timeout=10)
    assert call_headers(call) == [
        ("X-Total-Count", "3"),
        ("Link", "</api/workflows?offset=1>"),
        ("X-RateLimit-Remaining", "41"),
    ]


def test_failed_calls_read_their_error_info(upstream: grpc.Channel) -> None:
    limited = rpc_failure(_fail(upstream, "limited"))
    assert (limited.code, limited.reason, limited.http_status) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "rate_limited",
        None,
    )
    unprocessable = rpc_error_response(_fail(upstream, "unprocessable"), style=REASON_MESSAGE)
    assert unprocessable.status_code == 422
    assert json.loads(unprocessable.get_data()) == {
        "error": "missing_organization",
        "message": "X-Organization-ID is required",
    }
    assert unprocessable.headers["Retry-After"] == "30"
    assert "x-secret" not in unprocessable.headers
    # Unreadable details fall back to the reason of the code.
    garbled = rpc_error_response(_fail(upstream, "garbled"), style=CODE_STATUS)
    assert garbled.status_code == 403
    assert json.loads(garbled.get_data()) == {"error": "no", "code": "FORBIDDEN", "status": 403}
    plain = rpc_failure(_fail(upstream, "missing"))
    assert (plain.reason, plain.message) == ("not_found", "workflow 'missing' not found")
    # A bare RpcError (no call behind it) is an unknown failure.
    bare = rpc_failure(grpc.RpcError())
    assert (bare.code, bare.reason) == (grpc.StatusCode.UNKNOWN, "internal_error")


def test_bridge_copies_headers_on_success_and_error(upstream: grpc.Channel) -> None:
    client = create_app(upstream, call_timeout_secs=10.0).test_client()
    ok = client.get("/api/workflows/ok/status")
    assert ok.status_code == 200
    assert ok.get_json()["trigger"] == "push"
    assert (ok.headers["X-Total-Count"], ok.headers["X-RateLimit-Remaining"]) == ("3", "41")
    assert ok.headers["Link"] == "</api/workflows?offset=1>"
    assert "x-secret" not in ok.headers
    limited = client.get("/api/workflows/limited/status")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "30"
    assert limited.get_json() == {
        "error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down"}
    }


def test_route_follows_a_declared_surface(upstream: grpc.Channel) -> None:
    """A route of a service with every convention set: envelope, JSON names, OAuth2."""
    binding = next(b for b in discover_bindings() if b.rpc_path == _GET_WORKFLOW)
    surface = Surface(
        name="declared",
        error_style=OAUTH2,
        envelope=options_pb2.ENVELOPE_SUCCESS_DATA,
        field_names=options_pb2.FIELD_NAMES_JSON,
    )
    route = TranscodedRoute(
        dataclasses.replace(binding, surface=surface), upstream, call_timeout_secs=10.0
    )
    app = flask.Flask("declared")
    app.add_url_rule(binding.path.rule, endpoint="declared", view_func=route, methods=["GET"])
    client = app.test_client()
    ok = client.get("/api/workflows/ok/status")
    body = ok.get_json()
    assert body["success"] is True
    assert (body["data"]["id"], body["data"]["runId"]) == ("ok", "")
    assert "run_id" not in body["data"]
    assert (ok.headers["Cache-Control"], ok.headers["Pragma"]) == ("no-store", "no-cache")
    assert ok.headers["X-Total-Count"] == "3"
    missing = client.get("/api/workflows/missing/status")
    assert missing.status_code == 404
    assert missing.get_json() == {
        "error": "not_found",
        "error_description": "workflow 'missing' not found",
    }
    assert missing.headers["Cache-Control"] == "no-store"


# --- the bridge's own errors -----------------------------------------------------------------


def test_unmatched_paths_take_the_surface_of_their_prefix() -> None:
    oauth = Surface("oauth2", OAUTH2)
    api = Surface("api-v1", REASON_MESSAGE)
    also_api = Surface("api-v1-other-name", REASON_MESSAGE)
    locator = SurfaceLocator(
        {"token": oauth},
        [
            ("/api/v1/oauth2/token", oauth),
            ("/api/v1/oauth2/tokens", api),
            ("/api/v1/organizations/{organization_id}", api),
            ("/api/v1/organizations", also_api),
            ("/oauth/authorize", oauth),
        ],
    )
    assert locator.for_path("/oauth/nope") == oauth
    assert locator.for_path("/api/v1/oauth2/token/extra") == oauth
    assert locator.for_path("/api/v1/organizations/o1/members").error_style == REASON_MESSAGE
    # A prefix shared by surfaces of different error styles is nobody's.
    assert locator.for_path("/api/v1/oauth2/nope") == DEFAULT_SURFACE
    assert locator.for_path("/api/v1/nope") == DEFAULT_SURFACE
    assert locator.for_path("/elsewhere") == DEFAULT_SURFACE
    assert locator.for_path("/") == DEFAULT_SURFACE
    assert locator.for_endpoint("token") == oauth
    assert locator.for_endpoint(None) is None


def test_bridge_errors_of_default_surfaces_keep_google_style() -> None:
    client = create_app(grpc.insecure_channel("127.0.0.1:1"), call_timeout_secs=2.0).test_client()
    for reply, status in [
        (client.get("/api/workflows/x/status/extra"), 404),
        (client.delete("/api/workflows"), 405),
        (client.post("/api/jobs/claim", data="{", content_type="application/json"), 400),
    ]:
        assert reply.status_code == status
        assert set(reply.get_json()["error"]) == {"code", "status", "message"}


# --- against a real Trellis server ---------------------------------------------------------


def test_real_server_failure_reads_as_not_found(server: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.workflows.GetWorkflow(
            workflows_pb2.GetWorkflowRequest(workflow_id="no-such-workflow"), timeout=10
        )
    error = caught.value
    assert isinstance(error, grpc.Call)
    failure = rpc_failure(error)
    assert failure.code == grpc.StatusCode.NOT_FOUND
    assert failure.reason == "not_found"
    answer = rpc_error_response(error, style=REASON_MESSAGE)
    assert answer.status_code == 404
    assert json.loads(answer.get_data()) == {"error": "not_found", "message": error.details()}
    # Whatever else the server sends in metadata never becomes a header.
    assert {name for name, _ in call_headers(error)} <= set(COPIED_HEADERS.values())


def test_copied_headers_are_exposed_to_browsers() -> None:
    client = create_app(grpc.insecure_channel("127.0.0.1:1"), call_timeout_secs=2.0).test_client()
    reply = client.get("/nope", headers={"Origin": "https://dash.example"})
    exposed = {name.strip() for name in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == set(COPIED_HEADERS.values())
