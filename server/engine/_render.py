"""Rows and definitions rendered as the contract's messages."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from trellis.server.core._sql import from_json
from trellis.server.core.times import timestamp
from trellis.server.engine._machine.claims import Claimed
from trellis.server.engine._states import JobState, LeaseState, LogStream, RunState
from trellis.server.engine.definitions import Backoff, InputDef, JobDef
from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2, workflows_pb2

# Keyed by the stored text, which rows hold.
JOB_STATES = {
    JobState.PENDING.value: jobs_pb2.JOB_STATE_PENDING,
    JobState.QUEUED.value: jobs_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING.value: jobs_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED.value: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED.value: jobs_pb2.JOB_STATE_FAILED,
    JobState.SKIPPED.value: jobs_pb2.JOB_STATE_SKIPPED,
    JobState.CANCELLED.value: jobs_pb2.JOB_STATE_CANCELLED,
}
RUN_STATES = {
    RunState.RUNNING.value: runs_pb2.RUN_STATE_RUNNING,
    RunState.SUCCEEDED.value: runs_pb2.RUN_STATE_SUCCEEDED,
    RunState.FAILED.value: runs_pb2.RUN_STATE_FAILED,
    RunState.CANCELLED.value: runs_pb2.RUN_STATE_CANCELLED,
}
# The workflow-graph spelling of job states, for the `status` list filter.
STATUS_FILTER: dict[str, tuple[JobState, ...]] = {
    "queued": (JobState.PENDING, JobState.QUEUED),
    "running": (JobState.RUNNING,),
    "success": (JobState.SUCCEEDED,),
    "failure": (JobState.FAILED,),
    "skipped": (JobState.SKIPPED,),
    "cancelled": (JobState.CANCELLED,),
}
# How a try ended, by the state its lease ended in.
ATTEMPT_OUTCOMES = {
    LeaseState.ACTIVE.value: jobs_pb2.ATTEMPT_OUTCOME_RUNNING,
    LeaseState.COMPLETED.value: jobs_pb2.ATTEMPT_OUTCOME_SUCCEEDED,
    LeaseState.FAILED.value: jobs_pb2.ATTEMPT_OUTCOME_FAILED,
    LeaseState.EXPIRED.value: jobs_pb2.ATTEMPT_OUTCOME_LEASE_LOST,
    LeaseState.TIMED_OUT.value: jobs_pb2.ATTEMPT_OUTCOME_TIMED_OUT,
    LeaseState.CANCELLED.value: jobs_pb2.ATTEMPT_OUTCOME_CANCELLED,
}
LOG_STREAMS = {
    LogStream.STDOUT.value: logs_pb2.LOG_STREAM_STDOUT,
    LogStream.STDERR.value: logs_pb2.LOG_STREAM_STDERR,
}


def retry_policy(max_retries: int, backoff: Backoff) -> jobs_pb2.RetryPolicy:
    policy = jobs_pb2.RetryPolicy(max_retries=max_retries)
    if backoff.kind == "fixed":
        policy.backoff.fixed.delay_secs = backoff.delay_secs
    elif backoff.kind == "exponential":
        policy.backoff.exponential.base_secs = backoff.base_secs
        policy.backoff.exponential.max_secs = backoff.max_secs
    else:
        policy.backoff.none.SetInParent()
    return policy


@functools.lru_cache(maxsize=4096)
def _stored_policy(max_retries: int, backoff: tuple[tuple[str, Any], ...]) -> jobs_pb2.RetryPolicy:
    return retry_policy(max_retries, Backoff.from_json(dict(backoff)))


def stored_policy(max_retries: int, backoff: Mapping[str, Any]) -> jobs_pb2.RetryPolicy:
    """The policy of a stored job; cached, as claims render one per job.

    The cached message is shared: callers copy it into theirs, never change it.
    """
    return _stored_policy(max_retries, tuple(sorted(backoff.items())))


INPUT_TYPES = {
    "string": workflows_pb2.INPUT_TYPE_STRING,
    "number": workflows_pb2.INPUT_TYPE_NUMBER,
    "boolean": workflows_pb2.INPUT_TYPE_BOOLEAN,
    "json": workflows_pb2.INPUT_TYPE_JSON,
}


def workflow_inputs(inputs: Sequence[InputDef]) -> dict[str, workflows_pb2.WorkflowInput]:
    """A definition's declared inputs as the ``Workflow`` message's map."""
    found: dict[str, workflows_pb2.WorkflowInput] = {}
    for spec in inputs:
        msg = workflows_pb2.WorkflowInput(
            type=INPUT_TYPES[spec.type], required=spec.required, description=spec.description
        )
        if spec.has_default:
            msg.default.CopyFrom(json_format.ParseDict(spec.default, struct_pb2.Value()))
        found[spec.name] = msg
    return found


def job_from_def(job: JobDef) -> jobs_pb2.Job:
    """A job of a workflow that has not run yet."""
    return jobs_pb2.Job(
        id=job.id,
        name=job.name,
        status=jobs_pb2.JOB_STATE_PENDING,
        command=job.command,
        depends_on=list(job.depends_on),
        required_labels=list(job.required_labels),
        max_retries=job.max_retries,
        retry_policy=retry_policy(job.max_retries, job.backoff),
        timeout_secs=job.timeout_secs,
        env=dict(job.env),
    )


def job_from_row(row: Mapping[Any, Any], now: int) -> jobs_pb2.Job:
    state = row["state"]
    msg = jobs_pb2.Job(
        id=row["key"],
        name=row["name"],
        status=JOB_STATES[state],
        command=row["command"],
        depends_on=row["parents"],
        required_labels=[x for x in row["label_key"].split(",") if x],
        max_retries=row["max_retries"],
        attempt=row["attempt"],
        retry_policy=stored_policy(row["max_retries"], row["backoff"]),
        timeout_secs=row["timeout_secs"],
        outputs=row["outputs"] or {},
        env=row["env"] or {},
        started_at=timestamp(row["started_at_ms"]),
    )
    started, finished = row["started_at_ms"], row["finished_at_ms"]
    if started and finished:
        msg.duration_secs = max(0, round((finished - started) / 1000))
    if row["error"] and state in (JobState.FAILED, JobState.QUEUED):
        msg.output = row["error"]
    if state == JobState.QUEUED and row["ready_at_ms"] > now:
        msg.delayed_until.FromMilliseconds(row["ready_at_ms"])
    return msg


def attempt(lease: Any) -> jobs_pb2.JobAttempt:
    """One try at a job, from its lease's row."""
    return jobs_pb2.JobAttempt(
        attempt=lease.attempt,
        lease_id=lease.id,
        worker_id=lease.worker_id,
        started_at=timestamp(lease.granted_at_ms),
        ended_at=timestamp(lease.finished_at_ms),
        outcome=ATTEMPT_OUTCOMES[lease.state],
        error=lease.error or "",
    )


def run_from_row(row: Mapping[Any, Any]) -> runs_pb2.Run:
    return runs_pb2.Run(
        run_id=row["id"],
        workflow_id=row["workflow_id"],
        workflow_version=row["workflow_version"],
        state=RUN_STATES[row["state"]],
        created_at=timestamp(row["created_at_ms"]),
        finished_at=timestamp(row["finished_at_ms"]),
        inputs=_struct(row["inputs"]),
        request_id=row["request_id"],
    )


def _struct(values: Mapping[str, Any] | str | None) -> struct_pb2.Struct | None:
    """A run's stored inputs as a Struct (None: the run has none)."""
    if values is None:
        return None
    out = struct_pb2.Struct()
    out.update(from_json(values))
    return out


def assignment(claimed: Claimed, worker_id: str) -> workers_pb2.Assignment:
    job = claimed.job
    return workers_pb2.Assignment(
        job=workers_pb2.QueuedJob(
            job_id=job["key"],
            workflow_id=job["workflow_id"],
            run_id=job["run_id"],
            name=job["name"],
            command=job["command"],
            required_labels=[x for x in job["label_key"].split(",") if x],
            retry_policy=stored_policy(job["max_retries"], job["backoff"]),
            attempt=job["attempt"],
            upstream_outputs={
                k: workers_pb2.Outputs(values=v) for k, v in claimed.upstream_outputs.items()
            },
            enqueued_at=timestamp(job["enqueued_at_ms"]),
            delayed_until=timestamp(job["ready_at_ms"]),
            env=job["env"] or {},
            timeout_secs=job["timeout_secs"],
            inputs=_struct(job["inputs"]),
        ),
        lease=workers_pb2.Lease(
            lease_id=claimed.lease_id,
            job_id=job["key"],
            workflow_id=job["workflow_id"],
            run_id=job["run_id"],
            worker_id=worker_id,
            ttl_secs=claimed.ttl_secs,
            granted_at=timestamp(claimed.granted_at_ms),
            expires_at=timestamp(claimed.expires_at_ms),
        ),
    )


def log_chunk(row: Mapping[Any, Any]) -> logs_pb2.LogChunk:
    return logs_pb2.LogChunk(
        id=row["id"],
        workflow_id=row["workflow_id"],
        job_id=row["job_key"],
        run_id=row["run_id"],
        attempt=row["attempt"],
        sequence=row["sequence"],
        data=row["data"],
        timestamp=timestamp(row["timestamp_ms"]),
        stream=LOG_STREAMS.get(row["stream"], logs_pb2.LOG_STREAM_UNSPECIFIED),
    )


# A run's stream calls the log's RUN_CREATED by its older name.
_RUN_VIEW_NAMES = {"RUN_CREATED": "RUN_STARTED"}


def run_event(row: Mapping[Any, Any]) -> runs_pb2.RunEvent:
    return runs_pb2.RunEvent(
        id=row["id"],
        run_id=row["run_id"],
        type=runs_pb2.RunEventType.Name(
            runs_pb2.RunEventType.Value(
                "RUN_EVENT_TYPE_" + _RUN_VIEW_NAMES.get(row["type"], row["type"])
            )
        ),
        job_id=row["job_key"],
        attempt=row["attempt"],
        occurred_at=timestamp(row["time_ms"]),
        message=row["message"],
    )
