"""The REST bridge's JSON codec and routing, over the real generated messages.

No servers: the codec is pure, and the app tests use an unreachable channel.
"""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2

from trellis.rest_bridge import CodecError, create_app, parse_message, render_message

# The codec's refusals and spellings are checked over every option combination the
# contract allows, most of which no documented route happens to use.
from trellis.rest_bridge._codec import (
    InvalidJsonError,
    body_binder,
    enum_codec,
    load_json,
    query_setters,
    response_renderer,
    text_setter,
)
from trellis.rest_bridge._http_rules import UnsupportedRuleError, compile_template
from trellis.v1 import jobs_pb2, logs_pb2, options_pb2, runs_pb2, workers_pb2, workflows_pb2

# The workflow-graph surface's times: epoch milliseconds under `_ms` keys, 0 when unset.
GRAPH_TIMES = options_pb2.TIME_FORMAT_EPOCH_MS_OR_ZERO

# --- rendering ---------------------------------------------------------------------


def _claimed() -> workers_pb2.ClaimJobResponse:
    response = workers_pb2.ClaimJobResponse()
    job = response.assignment.job
    job.job_id = "build"
    job.workflow_id = "wf-uuid"
    job.command = "cargo build --release"
    job.required_labels.append("docker")
    job.retry_policy.max_retries = 2
    job.retry_policy.backoff.none.SetInParent()
    job.upstream_outputs["test"].values["coverage"] = "94%"
    job.enqueued_at.FromMilliseconds(1710000000000)
    lease = response.assignment.lease
    lease.lease_id = "lease-uuid"
    lease.job_id = "build"
    lease.workflow_id = "wf-uuid"
    lease.worker_id = "w1"
    lease.ttl_secs = 30
    lease.granted_at.FromMilliseconds(1710000000000)
    return response


def test_claim_response_renders_like_the_documented_example() -> None:
    render = response_renderer(
        workers_pb2.ClaimJobResponse.DESCRIPTOR, "assignment", times=GRAPH_TIMES
    )
    body = render(_claimed())
    assert isinstance(body, dict)
    job, lease = body["job"], body["lease"]
    documented_job = {
        "job_id": "build",
        "workflow_id": "wf-uuid",
        "command": "cargo build --release",
        "required_labels": ["docker"],
        "retry_policy": {"max_retries": 2, "backoff": "None"},
        "attempt": 0,
        "upstream_outputs": {"test": {"coverage": "94%"}},
        "enqueued_at_ms": 1710000000000,
        "delayed_until_ms": 0,
    }
    documented_lease = {
        "lease_id": "lease-uuid",
        "job_id": "build",
        "workflow_id": "wf-uuid",
        "worker_id": "w1",
        "ttl_secs": 30,
        "granted_at_ms": 1710000000000,
    }
    assert isinstance(job, dict) and isinstance(lease, dict)
    assert {k: job[k] for k in documented_job} == documented_job
    assert {k: lease[k] for k in documented_lease} == documented_lease
    # Fields beyond the page render too, with their defaults.
    assert job["run_id"] == "" and job["env"] == {} and lease["expires_at_ms"] == 0


def test_claim_response_without_assignment_renders_null() -> None:
    render = response_renderer(workers_pb2.ClaimJobResponse.DESCRIPTOR, "assignment")
    assert render(workers_pb2.ClaimJobResponse()) is None
    assert json.dumps(render(workers_pb2.ClaimJobResponse())) == "null"


def test_whole_response_renders_unset_message_as_null() -> None:
    assert render_message(workers_pb2.ClaimJobResponse()) == {"assignment": None}


def test_response_body_selects_bare_values() -> None:
    cancelled = response_renderer(workers_pb2.GetJobCancelledResponse.DESCRIPTOR, "cancelled")
    assert cancelled(workers_pb2.GetJobCancelledResponse(cancelled=True)) is True
    listed = response_renderer(workers_pb2.ListWorkersResponse.DESCRIPTOR, "workers")
    assert listed(workers_pb2.ListWorkersResponse()) == []


@pytest.mark.parametrize(
    ("backoff", "rendered"),
    [
        (jobs_pb2.Backoff(none=jobs_pb2.Backoff.NoDelay()), "None"),
        (
            jobs_pb2.Backoff(fixed=jobs_pb2.Backoff.Fixed(delay_secs=5)),
            {"Fixed": {"delay_secs": 5}},
        ),
        (
            jobs_pb2.Backoff(exponential=jobs_pb2.Backoff.Exponential(base_secs=2, max_secs=60)),
            {"Exponential": {"base_secs": 2, "max_secs": 60}},
        ),
        (jobs_pb2.Backoff(), None),
    ],
)
def test_backoff_renders_externally_tagged(backoff: jobs_pb2.Backoff, rendered: Any) -> None:
    assert render_message(backoff) == rendered


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("None", jobs_pb2.Backoff(none=jobs_pb2.Backoff.NoDelay())),
        ("none", jobs_pb2.Backoff(none=jobs_pb2.Backoff.NoDelay())),
        ({"None": None}, jobs_pb2.Backoff(none=jobs_pb2.Backoff.NoDelay())),
        (
            {"Fixed": {"delay_secs": 5}},
            jobs_pb2.Backoff(fixed=jobs_pb2.Backoff.Fixed(delay_secs=5)),
        ),
        (
            {"fixed": {"delay_secs": 5}},
            jobs_pb2.Backoff(fixed=jobs_pb2.Backoff.Fixed(delay_secs=5)),
        ),
        ({"Fixed": {}}, jobs_pb2.Backoff(fixed=jobs_pb2.Backoff.Fixed())),
        (
            {"Exponential": {"base_secs": 2, "max_secs": 60}},
            jobs_pb2.Backoff(exponential=jobs_pb2.Backoff.Exponential(base_secs=2, max_secs=60)),
        ),
    ],
)
def test_backoff_parses_externally_tagged(value: Any, expected: jobs_pb2.Backoff) -> None:
    parsed = jobs_pb2.Backoff()
    parse_message(value, parsed)
    assert parsed == expected
    assert parsed.WhichOneof("kind") == expected.WhichOneof("kind")


def test_backoff_round_trips() -> None:
    for backoff in (
        jobs_pb2.Backoff(none=jobs_pb2.Backoff.NoDelay()),
        jobs_pb2.Backoff(fixed=jobs_pb2.Backoff.Fixed(delay_secs=1)),
        jobs_pb2.Backoff(exponential=jobs_pb2.Backoff.Exponential(base_secs=1, max_secs=9)),
    ):
        parsed = jobs_pb2.Backoff()
        parse_message(render_message(backoff), parsed)
        assert parsed == backoff


def test_map_shape_renders_and_parses_bare_maps() -> None:
    job = workers_pb2.QueuedJob()
    job.upstream_outputs["test"].values["coverage"] = "94%"
    job.upstream_outputs["lint"].SetInParent()
    rendered = render_message(job)
    assert isinstance(rendered, dict)
    assert rendered["upstream_outputs"] == {"test": {"coverage": "94%"}, "lint": {}}
    parsed = workers_pb2.QueuedJob()
    parse_message({"upstream_outputs": {"test": {"coverage": "94%"}}}, parsed)
    assert dict(parsed.upstream_outputs["test"].values) == {"coverage": "94%"}
    assert render_message(workers_pb2.Outputs(values={"a": "b"})) == {"a": "b"}


def test_maps_render_in_key_order_whatever_order_they_were_filled_in() -> None:
    # A map iterates in its hash table's order, which differs between processes:
    # without an order of its own the same answer would differ from run to run.
    keys = [f"K{i:02d}" for i in range(40)]
    job = workers_pb2.QueuedJob()
    for key in reversed(keys):
        job.env[key] = key.lower()
        job.upstream_outputs[key].values[key] = "x"
    rendered = render_message(job)
    assert isinstance(rendered, dict)
    assert list(rendered["env"]) == keys
    assert list(rendered["upstream_outputs"]) == keys
    assert list(render_message(workers_pb2.Outputs(values=dict.fromkeys(reversed(keys), "")))) == (
        keys
    )


def test_unset_optionals_render_null_and_set_ones_their_value() -> None:
    rendered = render_message(jobs_pb2.Job(id="a"), times=GRAPH_TIMES)
    assert isinstance(rendered, dict)
    assert rendered["duration_secs"] is None
    assert rendered["started_at"] is None
    assert rendered["output"] is None
    assert rendered["retry_policy"] is None
    assert rendered["delayed_until_ms"] == 0
    started = timestamp_pb2.Timestamp(seconds=1710000000, nanos=250_000_000)
    set_ones = render_message(
        jobs_pb2.Job(duration_secs=0, output="", started_at=started), times=GRAPH_TIMES
    )
    assert isinstance(set_ones, dict)
    assert (set_ones["duration_secs"], set_ones["output"], set_ones["started_at"]) == (
        0,
        "",
        1710000000250,
    )
    assert render_message(workers_pb2.Worker())["current_job"] is None  # type: ignore[index]


def test_defaults_are_rendered() -> None:
    rendered = render_message(jobs_pb2.Job())
    assert isinstance(rendered, dict)
    assert rendered["attempt"] == 0
    assert rendered["depends_on"] == []
    assert rendered["outputs"] == {}
    assert rendered["status"] is None  # JOB_STATE_UNSPECIFIED
    # `compensation` is additional and left out when unset (omit_unset).
    additional = {"waiting_reason", "attempts", "compensation"}
    documented = [f.name for f in jobs_pb2.Job.DESCRIPTOR.fields if f.name not in additional]
    assert list(rendered) == documented


def test_additional_fields_render_only_where_the_surface_asks_for_them() -> None:
    job = jobs_pb2.Job(id="a", waiting_reason="no worker is connected")
    assert "waiting_reason" not in render_message(job)  # type: ignore[operator]
    rendered = render_message(job, additional=True)
    assert isinstance(rendered, dict)
    unset = {"compensation"}  # omit_unset: absent rather than null
    assert list(rendered) == [f.name for f in jobs_pb2.Job.DESCRIPTOR.fields if f.name not in unset]
    assert rendered["waiting_reason"] == "no worker is connected"
    # Nested messages follow the surface: a run's jobs, a worker's capabilities.
    detail = runs_pb2.RunDetail(jobs=[job])
    assert render_message(detail, additional=True)["jobs"][0]["waiting_reason"]  # type: ignore[index]
    assert "waiting_reason" not in render_message(detail)["jobs"][0]  # type: ignore[index]
    worker = workers_pb2.Worker(capabilities=workers_pb2.WorkerCapabilities(handlers=["b"]))
    assert "capabilities" not in render_message(worker)  # type: ignore[operator]
    assert render_message(worker, additional=True)["capabilities"] == {  # type: ignore[index]
        "handlers": ["b"],
        "shell": False,
    }


def test_attempts_render_on_surfaces_with_additional_fields() -> None:
    attempt = jobs_pb2.JobAttempt(
        lease_id="l1",
        worker_id="w1",
        started_at=timestamp_pb2.Timestamp(seconds=1_700_000_000),
        outcome=jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST,
        error="lease expired",
    )
    assert "attempts" not in render_message(jobs_pb2.Job(id="a", attempts=[attempt]))  # type: ignore[operator]
    rendered = render_message(
        jobs_pb2.Job(id="a", attempts=[attempt]), additional=True, times=GRAPH_TIMES
    )
    assert isinstance(rendered, dict)
    assert list(rendered)[-1] == "attempts"
    assert rendered["attempts"] == [
        {
            "attempt": 0,
            "lease_id": "l1",
            "worker_id": "w1",
            "started_at_ms": 1_700_000_000_000,
            "ended_at_ms": 0,
            "outcome": "lease_lost",
            "error": "lease expired",
        }
    ]
    # JSON names too, and the outcomes spell their short names.
    camel = render_message(
        jobs_pb2.Job(attempts=[attempt]), json_names=True, additional=True, times=GRAPH_TIMES
    )
    assert isinstance(camel, dict)
    assert camel["attempts"][0]["startedAtMs"] == 1_700_000_000_000
    outcomes = [
        render_message(jobs_pb2.JobAttempt(outcome=value))["outcome"]  # type: ignore[index]
        for value in jobs_pb2.AttemptOutcome.values()
    ]
    assert outcomes == [
        None,
        "running",
        "succeeded",
        "failed",
        "lease_lost",
        "timed_out",
        "cancelled",
    ]


@pytest.mark.parametrize(
    ("state", "rendered"),
    [
        (jobs_pb2.JOB_STATE_UNSPECIFIED, None),
        (jobs_pb2.JOB_STATE_PENDING, "queued"),
        (jobs_pb2.JOB_STATE_QUEUED, "queued"),
        (jobs_pb2.JOB_STATE_RUNNING, "running"),
        (jobs_pb2.JOB_STATE_SUCCEEDED, "success"),
        (jobs_pb2.JOB_STATE_FAILED, "failure"),
        (jobs_pb2.JOB_STATE_SKIPPED, "skipped"),
        (jobs_pb2.JOB_STATE_CANCELLED, "cancelled"),
    ],
)
def test_job_states_render_as_documented(state: int, rendered: str | None) -> None:
    assert render_message(jobs_pb2.Job(status=state))["status"] == rendered  # type: ignore[index]


def test_other_enums_render_lower_case_short_names() -> None:
    chunk = render_message(logs_pb2.LogChunk(stream=logs_pb2.LOG_STREAM_STDERR))
    assert chunk["stream"] == "stderr"  # type: ignore[index]
    run = render_message(runs_pb2.Run(state=runs_pb2.RUN_STATE_SUCCEEDED))
    assert run["state"] == "success"  # type: ignore[index]
    worker = render_message(workers_pb2.Worker(status=workers_pb2.WORKER_STATUS_BUSY))
    assert worker["status"] == "busy"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("queued", jobs_pb2.JOB_STATE_QUEUED),
        ("pending", jobs_pb2.JOB_STATE_PENDING),
        ("JOB_STATE_PENDING", jobs_pb2.JOB_STATE_PENDING),
        ("success", jobs_pb2.JOB_STATE_SUCCEEDED),
        ("succeeded", jobs_pb2.JOB_STATE_SUCCEEDED),
        ("running", jobs_pb2.JOB_STATE_RUNNING),
        (3, jobs_pb2.JOB_STATE_RUNNING),
    ],
)
def test_enums_parse_spelling_name_or_number(text: Any, state: int) -> None:
    codec = enum_codec(jobs_pb2.JobState.DESCRIPTOR)
    assert codec.parse(text, "status") == state
    job = jobs_pb2.Job()
    text_setter([jobs_pb2.Job.DESCRIPTOR.fields_by_name["status"]], "status")(job, [str(text)])
    assert job.status == state


def test_enum_fields_parse_from_json() -> None:
    worker = workers_pb2.Worker()
    parse_message({"status": "offline"}, worker)
    assert worker.status == workers_pb2.WORKER_STATUS_OFFLINE
    parse_message({"status": "WORKER_STATUS_BUSY"}, worker)
    assert worker.status == workers_pb2.WORKER_STATUS_BUSY


def test_int64_renders_as_json_numbers() -> None:
    text = json.dumps(render_message(runs_pb2.StreamRunEventsRequest(after_id=2**62)))
    assert f'"after_id": {2**62}' in text
    chunk = render_message(logs_pb2.LogChunk(sequence=2**64 - 1, id=-5))
    assert chunk["sequence"] == 2**64 - 1 and chunk["id"] == -5  # type: ignore[index]


def test_int64_accepts_numbers_and_quoted_digits() -> None:
    chunk = logs_pb2.LogChunk()
    parse_message({"timestamp_ms": 1710000000000, "sequence": "7"}, chunk)
    assert (chunk.timestamp.ToMilliseconds(), chunk.sequence) == (1710000000000, 7)


def test_integral_doubles_render_as_integers() -> None:
    rendered = render_message(wrappers_pb2.DoubleValue(value=1710000000000.0))
    assert rendered == 1710000000000
    assert isinstance(rendered, int)


def test_json_names_are_accepted_on_input() -> None:
    request = workers_pb2.ClaimJobRequest()
    parse_message({"workerId": "w", "leaseTtlSecs": 10, "labels": ["x"]}, request)
    assert (request.worker_id, request.lease_ttl_secs, list(request.labels)) == ("w", 10, ["x"])


def test_null_leaves_a_field_unset() -> None:
    request = workers_pb2.ClaimJobRequest()
    parse_message({"worker_id": "w", "lease_ttl_secs": None, "labels": None}, request)
    assert not request.HasField("lease_ttl_secs")
    assert list(request.labels) == []


def test_optional_zero_is_set() -> None:
    request = workers_pb2.ClaimJobRequest()
    parse_message({"lease_ttl_secs": 0}, request)
    assert request.HasField("lease_ttl_secs")


def test_output_only_fields_are_accepted_and_ignored() -> None:
    echoed = {
        "id": "ci",
        "name": "CI",
        "trigger": "push",
        "version": 3,
        "run_id": "r1",
        "run_state": "running",
        "jobs": [
            {
                "id": "build",
                "name": "build",
                "status": "success",
                "command": "make",
                "duration_secs": 12,
                "started_at": 1710000000000,
                "depends_on": [],
                "output": None,
                "required_labels": ["linux"],
                "max_retries": 1,
                "attempt": 0,
                "outputs": {"a": "b"},
                "delayed_until_ms": 0,
            }
        ],
    }
    workflow = workflows_pb2.Workflow()
    parse_message(echoed, workflow)
    assert workflow.id == "ci" and workflow.version == 0 and workflow.run_id == ""
    job = workflow.jobs[0]
    assert job.command == "make" and list(job.required_labels) == ["linux"]
    assert job.status == jobs_pb2.JOB_STATE_UNSPECIFIED
    assert not job.HasField("duration_secs") and not job.outputs


# --- parse errors ----------------------------------------------------------------------

_WORKFLOW_BODY = body_binder(workflows_pb2.CreateWorkflowRequest.DESCRIPTOR, "workflow")
_STAR_CLAIM = body_binder(workers_pb2.ClaimJobRequest.DESCRIPTOR, "*")
_STAR_LOGS = body_binder(logs_pb2.PushLogsRequest.DESCRIPTOR, "*")
_STAR_COMPLETE = body_binder(workers_pb2.CompleteJobRequest.DESCRIPTOR, "*")
_STAR_RESULTS = body_binder(workers_pb2.ReportResultsRequest.DESCRIPTOR, "*")


def _jobs(job: dict[str, Any]) -> dict[str, Any]:
    return {"name": "w", "jobs": [{}, {}, job]}


@pytest.mark.parametrize(
    ("bind", "request_class", "body", "error"),
    [
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"max_retries": "x"}),
            'jobs[2].max_retries: expected an integer, got "x"',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"max_retries": 1.5}),
            "jobs[2].max_retries: expected an integer, got 1.5",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"max_retries": -1}),
            "jobs[2].max_retries: expected a non-negative integer, got -1",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"timeout_secs": 2**32}),
            "jobs[2].timeout_secs: integer out of range for uint32, got 4294967296",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"max_retries": True}),
            "jobs[2].max_retries: expected an integer, got true",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"colour": "red"}),
            "jobs[2].colour: unknown field",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"depends_on": "a"}),
            'jobs[2].depends_on: expected a list, got "a"',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"depends_on": ["a", 3]}),
            "jobs[2].depends_on[1]: expected a string, got 3",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"env": {"A": 1}}),
            'jobs[2].env["A"]: expected a string, got 1',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"retry_policy": []}),
            "jobs[2].retry_policy: expected an object, got []",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"retry_policy": {"backoff": "Sometimes"}}),
            'jobs[2].retry_policy.backoff: unknown variant "Sometimes", expected one of '
            '"None", {"Fixed": ...}, {"Exponential": ...}',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"retry_policy": {"backoff": "Fixed"}}),
            'jobs[2].retry_policy.backoff: "Fixed" needs a value: {"Fixed": ...}',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"retry_policy": {"backoff": {"Fixed": {}, "None": None}}}),
            "jobs[2].retry_policy.backoff: expected one of "
            '"None", {"Fixed": ...}, {"Exponential": ...}, got {"Fixed":{},"None":null}',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            _jobs({"retry_policy": {"backoff": {"Fixed": {"delay_secs": "soon"}}}}),
            'jobs[2].retry_policy.backoff.Fixed.delay_secs: expected an integer, got "soon"',
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            {"jobs": [{"jobs": 1}]},
            "jobs[0].jobs: unknown field",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            {"jobs": [None]},
            "jobs[0]: expected an object, got null",
        ),
        (
            _WORKFLOW_BODY,
            workflows_pb2.CreateWorkflowRequest,
            ["not", "an", "object"],
            'body: expected an object, got ["not","an","object"]',
        ),
        (
            _STAR_CLAIM,
            workers_pb2.ClaimJobRequest,
            {"worker_id": 7},
            "worker_id: expected a string, got 7",
        ),
        (
            _STAR_CLAIM,
            workers_pb2.ClaimJobRequest,
            {"worker_id": "w", "lease_ttl_secs": "30"},
            'lease_ttl_secs: expected an integer, got "30"',
        ),
        (
            _STAR_CLAIM,
            workers_pb2.ClaimJobRequest,
            {"worker_id": "w", "labels": ["a", None]},
            "labels[1]: expected a string, got null",
        ),
        (
            _STAR_CLAIM,
            workers_pb2.ClaimJobRequest,
            "w1",
            'body: expected an object, got "w1"',
        ),
        (
            _STAR_LOGS,
            logs_pb2.PushLogsRequest,
            {"chunks": [{"stream": "stdin"}]},
            'chunks[0].stream: expected one of "stderr", "stdout", got "stdin"',
        ),
        (
            _STAR_LOGS,
            logs_pb2.PushLogsRequest,
            {"chunks": [{"stream": 9}]},
            "chunks[0].stream: unknown trellis.v1.LogStream number 9",
        ),
        (
            _STAR_LOGS,
            logs_pb2.PushLogsRequest,
            {"chunks": [{"timestamp_ms": 2**63}]},
            "chunks[0].timestamp_ms: 9223372036854775808 is out of range for a time",
        ),
        (
            _STAR_COMPLETE,
            workers_pb2.CompleteJobRequest,
            {"outputs": {"url": ["s3://a"]}},
            'outputs["url"]: expected a string, got ["s3://a"]',
        ),
        (
            _STAR_COMPLETE,
            workers_pb2.CompleteJobRequest,
            {"outputs": "s3://a"},
            'outputs: expected an object, got "s3://a"',
        ),
        (
            _STAR_RESULTS,
            workers_pb2.ReportResultsRequest,
            {"results": [{"complete": {"lease_id": "a"}, "fail": {"lease_id": "a"}}]},
            'results[0].fail: cannot be set together with "complete"',
        ),
        (
            _STAR_RESULTS,
            workers_pb2.ReportResultsRequest,
            {"results": [{"fail": {"retryable": "yes"}}]},
            'results[0].fail.retryable: expected true or false, got "yes"',
        ),
    ],
)
def test_parse_errors_name_the_field_path(
    bind: Any, request_class: Any, body: Any, error: str
) -> None:
    with pytest.raises(CodecError) as raised:
        bind(request_class(), body)
    assert str(raised.value) == error


def test_invalid_json_is_explained() -> None:
    with pytest.raises(InvalidJsonError, match=r"^invalid JSON body: Expecting"):
        load_json(b'{"worker_id": ')
    with pytest.raises(InvalidJsonError, match="NaN is not valid JSON"):
        load_json(b'{"a": NaN}')
    with pytest.raises(InvalidJsonError, match="not UTF-8"):
        load_json(b'{"a": "\xff"}')
    assert load_json(b"") == {}
    assert load_json(b"  \n") == {}


def test_empty_and_null_bodies_are_empty_requests() -> None:
    request = workers_pb2.HeartbeatRequest()
    bind = body_binder(workers_pb2.HeartbeatRequest.DESCRIPTOR, "*")
    bind(request, load_json(b""))
    bind(request, None)
    assert request == workers_pb2.HeartbeatRequest()


# --- URL text: path variables and query ---------------------------------------------


def test_path_variables_are_coerced_to_the_field_type() -> None:
    template = compile_template("/logs/{after_id}/{run_id}", logs_pb2.ListLogsRequest.DESCRIPTOR)
    assert template.rule == "/logs/<after_id>/<run_id>"
    after_id = template.variables[0]
    request = logs_pb2.ListLogsRequest()
    text_setter(after_id.chain, after_id.dotted)(request, ["42"])
    assert request.after_id == 42
    with pytest.raises(CodecError, match=r'^after_id: expected an integer, got "abc"$'):
        text_setter(after_id.chain, after_id.dotted)(request, ["abc"])
    with pytest.raises(CodecError, match=r"^after_id: integer out of range for int64"):
        text_setter(after_id.chain, after_id.dotted)(request, [str(2**64)])


def test_nested_path_variables_bind_sub_fields() -> None:
    template = compile_template(
        "/workflows/{workflow.id}", workflows_pb2.CreateWorkflowRequest.DESCRIPTOR
    )
    assert template.rule == "/workflows/<workflow__id>"
    variable = template.variables[0]
    request = workflows_pb2.CreateWorkflowRequest()
    text_setter(variable.chain, variable.dotted)(request, ["ci"])
    assert request.workflow.id == "ci"


@pytest.mark.parametrize(
    "template",
    [
        "/api/{workflow_id=workflows/*}",
        "/api/{workflow_id=**}",
        "/api/*",
        "/api/workflows:list",
        "/api/{missing}",
        "/api/{env}",
        "/api//x",
        "api/x",
        "/api/x/",
    ],
)
def test_unsupported_templates_fail_loudly(template: str) -> None:
    with pytest.raises(UnsupportedRuleError):
        compile_template(template, workflows_pb2.Workflow.DESCRIPTOR)


def test_query_values_bind_scalars_repeated_and_bools() -> None:
    setters = query_setters(workers_pb2.ClaimJobsRequest.DESCRIPTOR, lambda chain: False)
    request = workers_pb2.ClaimJobsRequest()
    setters["labels"](request, ["a", "b"])
    setters["maxJobs"](request, ["3"])
    assert list(request.labels) == ["a", "b"] and request.max_jobs == 3
    fail = workers_pb2.FailJobRequest()
    bool_setter = query_setters(workers_pb2.FailJobRequest.DESCRIPTOR, lambda chain: False)
    for text, value in (("true", True), ("0", False), ("1", True), ("false", False)):
        bool_setter["retryable"](fail, [text])
        assert fail.retryable is value
    with pytest.raises(CodecError, match=r'^retryable: expected true or false, got "maybe"$'):
        bool_setter["retryable"](fail, ["maybe"])


# --- routes ----------------------------------------------------------------------------

# Every path of the workflow-graph REST page, with its verb.
DOCUMENTED_ROUTES = [
    ("GET", "/api/workflows"),
    ("POST", "/api/workflows"),
    ("GET", "/api/workflows/{}/status"),
    ("POST", "/api/workflows/{}/run"),
    ("POST", "/api/workflows/{}/cancel"),
    ("POST", "/api/workers/register"),
    ("POST", "/api/jobs/claim"),
    ("POST", "/api/jobs/{}/heartbeat"),
    ("POST", "/api/jobs/{}/complete"),
    ("POST", "/api/jobs/{}/fail"),
    ("POST", "/api/jobs/{}/logs"),
    ("GET", "/api/jobs/{}/{}/cancelled"),
    ("GET", "/api/workflows/{}/jobs/{}/logs"),
    ("GET", "/api/workflows/{}/jobs/{}/logs/stream"),
    ("GET", "/api/workers"),
]


@pytest.fixture(scope="module")
def app() -> Any:
    # Nothing listens on port 1: every RPC fails fast with UNAVAILABLE.
    return create_app(grpc.insecure_channel("127.0.0.1:1"), call_timeout_secs=2.0)


def _route_table(app: Any) -> set[tuple[str, str]]:
    table = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "{}", rule.rule)
        for method in rule.methods:
            table.add((method, path))
    return table


def test_route_table_has_every_documented_path(app: Any) -> None:
    table = _route_table(app)
    missing = [route for route in DOCUMENTED_ROUTES if route not in table]
    assert missing == []


def test_documented_success_codes(app: Any) -> None:
    routes = {
        route.binding.method.name: route.binding.success_code
        for route in app.extensions["trellis.rest_bridge"].routes
    }
    assert routes["CreateWorkflow"] == 201
    assert routes["RunWorkflow"] == 202 and routes["CancelWorkflow"] == 202
    assert routes["ClaimJob"] == 200 and routes["ListWorkflows"] == 200


def _error(response: Any) -> dict[str, Any]:
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == response.status_code
    error: dict[str, Any] = body["error"]
    return error


def test_unknown_path_is_a_json_404(app: Any) -> None:
    response = app.test_client().get("/api/nothing/here")
    assert response.status_code == 404
    assert _error(response)["status"] == "NOT_FOUND"


def test_wrong_method_is_a_json_405(app: Any) -> None:
    response = app.test_client().delete("/api/jobs/claim")
    assert response.status_code == 405
    assert _error(response)["status"] == "UNIMPLEMENTED"
    assert "POST" in response.headers["Allow"]


def test_bad_json_body_is_a_json_400(app: Any) -> None:
    client = app.test_client()
    response = client.post(
        "/api/jobs/claim", data=b'{"worker_id": ', content_type="application/json"
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"].startswith("invalid JSON body: ")
    response = client.post("/api/jobs/claim", json={"worker_id": "w", "lease_ttl_secs": "x"})
    assert response.status_code == 400
    assert _error(response)["message"] == 'lease_ttl_secs: expected an integer, got "x"'


def test_bad_query_value_is_a_json_400(app: Any) -> None:
    response = app.test_client().get("/api/workflows?limit=ten")
    assert response.status_code == 400
    assert _error(response)["message"] == 'limit: expected an integer, got "ten"'


def test_body_too_large_is_a_json_413() -> None:
    small = create_app(grpc.insecure_channel("127.0.0.1:1"), max_body_bytes=64)
    response = small.test_client().post("/api/jobs/claim", data=b"{" + b" " * 100 + b"}")
    assert response.status_code == 413
    assert _error(response)["status"] == "RESOURCE_EXHAUSTED"


def test_preflight_answers_with_cors_headers(app: Any) -> None:
    response = app.test_client().options(
        "/api/jobs/claim",
        headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"]
    for header in ("Authorization", "Content-Type", "X-Organization-ID", "Last-Event-ID"):
        assert header in allowed


def test_cors_origin_list_echoes_only_listed_origins() -> None:
    listed = create_app(
        grpc.insecure_channel("127.0.0.1:1"), cors_origins=["https://app.example.com"]
    )
    client = listed.test_client()
    allowed = client.get("/nowhere", headers={"Origin": "https://app.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Origin" in allowed.headers["Vary"]
    denied = client.get("/nowhere", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in denied.headers
    assert "Origin" in denied.headers["Vary"]


def test_unreachable_server_is_a_json_503(app: Any) -> None:
    client = app.test_client()
    response = client.post("/api/jobs/claim", json={"worker_id": "w1"})
    assert response.status_code == 503
    assert _error(response)["status"] == "UNAVAILABLE"
    heartbeat = client.post("/api/jobs/lease-1/heartbeat")  # no body, as documented
    assert heartbeat.status_code == 503
    health = client.get("/healthz")
    assert health.status_code == 503
    assert _error(health)["status"] == "UNAVAILABLE"


def test_log_stream_of_unreachable_server_is_a_json_503(app: Any) -> None:
    response = app.test_client().get("/api/workflows/ci/jobs/build/logs/stream")
    assert response.status_code == 503
    assert _error(response)["status"] == "UNAVAILABLE"


def test_bad_last_event_id_is_a_json_400(app: Any) -> None:
    response = app.test_client().get(
        "/api/workflows/ci/jobs/build/logs/stream", headers={"Last-Event-ID": "abc"}
    )
    assert response.status_code == 400
    assert "Last-Event-ID" in _error(response)["message"]


def test_well_known_types_use_their_canonical_json() -> None:
    assert render_message(timestamp_pb2.Timestamp(seconds=0)) == "1970-01-01T00:00:00Z"
    assert render_message(duration_pb2.Duration(seconds=1, nanos=500000000)) == "1.500s"
    assert render_message(wrappers_pb2.Int64Value(value=2**40)) == 2**40
    struct = struct_pb2.Struct()
    parse_message({"a": [1, "b", None]}, struct)
    assert render_message(struct) == {"a": [1, "b", None]}
    stamp = timestamp_pb2.Timestamp()
    with pytest.raises(CodecError, match=r"^body: "):
        parse_message("yesterday", stamp)
