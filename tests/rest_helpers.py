"""Helpers for the REST end-to-end tests (``tests/test_rest_*.py``).

Everything goes over real HTTP (``http.client``) to the REST bridge of a real
Trellis server; nothing is mocked. Waits are blocking reads with socket timeouts
or ``wait_until`` on a condition, never fixed sleeps.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from conftest import Running, wait_until

# A socket timeout for every request, so that a hung server fails a test
# instead of hanging it; long polls add their wait to it.
HTTP_TIMEOUT = 30.0

# --- the JSON shapes Trellis renders (the seed page's fields and a few more) ---------

WORKFLOW_KEYS = {
    "id",
    "name",
    "trigger",
    "jobs",
    "version",
    "run_id",
    "run_state",
    "env",
    "enabled",
}
JOB_KEYS = {
    "id",
    "name",
    "status",
    "command",
    "duration_secs",
    "started_at",
    "depends_on",
    "output",
    "required_labels",
    "max_retries",
    "attempt",
    "retry_policy",
    "timeout_secs",
    "outputs",
    "delayed_until_ms",
    "env",
}
JOB_STATUSES = {"queued", "running", "success", "failure", "skipped", "cancelled"}
RUN_KEYS = {"run_id", "workflow_id", "workflow_version", "state", "created_at_ms", "finished_at_ms"}
QUEUED_JOB_KEYS = {
    "job_id",
    "workflow_id",
    "command",
    "required_labels",
    "retry_policy",
    "attempt",
    "upstream_outputs",
    "enqueued_at_ms",
    "delayed_until_ms",
    "run_id",
    "name",
    "env",
    "timeout_secs",
}
LEASE_KEYS = {
    "lease_id",
    "job_id",
    "workflow_id",
    "worker_id",
    "ttl_secs",
    "granted_at_ms",
    "expires_at_ms",
    "run_id",
}
CHUNK_KEYS = {
    "workflow_id",
    "job_id",
    "sequence",
    "data",
    "timestamp_ms",
    "stream",
    "id",
    "run_id",
    "attempt",
}
WORKER_KEYS = {
    "worker_id",
    "labels",
    "registered_at_ms",
    "last_heartbeat_ms",
    "current_job",
    "status",
}
HEARTBEAT_KEYS = {"lease_id", "expires_at_ms", "cancelled", "lease_lost"}
NO_BACKOFF: dict[str, Any] = {"max_retries": 0, "backoff": "None"}


def uid(prefix: str = "wf") -> str:
    """A fresh id, so that tests never share workflows or workers."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def is_int(value: object) -> bool:
    """A JSON integer (``_ms`` values and counters), not a bool, float or string."""
    return type(value) is int


def is_ms(value: object) -> bool:
    """An epoch-milliseconds timestamp as a JSON integer."""
    return is_int(value) and value > 1_000_000_000_000  # type: ignore[operator]


# --- HTTP -------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer, read whole."""

    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


_NO_BODY = object()


class Rest:
    """A tiny REST client over ``http.client`` (one connection per request)."""

    def __init__(self, base_url: str, token: str = "") -> None:
        parts = urlsplit(base_url)
        assert parts.hostname is not None and parts.port is not None
        self.host = parts.hostname
        self.port = parts.port
        # Sent as a bearer token unless a request names its own Authorization.
        self.token = token

    def headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """``headers`` with the bearer token, unless they name their own Authorization."""
        sent = dict(headers or {})
        if self.token and not any(k.lower() == "authorization" for k in sent):
            sent["Authorization"] = f"Bearer {self.token}"
        return sent

    def connection(self, timeout: float = HTTP_TIMEOUT) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = _NO_BODY,
        *,
        raw: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> Reply:
        """Sends ``body`` as JSON (or ``raw`` bytes as they are); no body when neither."""
        sent = self.headers(headers)
        data = raw
        if body is not _NO_BODY:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        connection = self.connection(timeout)
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            reply = Reply(response.status, response.headers, response.read())
        finally:
            connection.close()
        self.exchanged(method, path, headers or {}, data, reply)
        return reply

    def exchanged(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None, reply: Reply
    ) -> None:
        """Called after each exchange with the caller's own headers (a hook for recorders)."""

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = _NO_BODY, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    # --- the documented calls, asserting success ---------------------------------------

    def ok(self, reply: Reply, status: int = 200) -> Any:
        """The JSON of a successful answer; fails the test on any other answer."""
        assert reply.status == status, f"{reply.status}: {reply.raw[:500]!r}"
        assert reply.content_type == "application/json"
        return reply.json

    def create_workflow(
        self, jobs: Iterable[Mapping[str, Any]], *, workflow_id: str = "", name: str = "Test"
    ) -> dict[str, Any]:
        """POST /api/workflows with a fresh id (unless given); returns the workflow JSON."""
        body: dict[str, Any] = {"id": workflow_id or uid(), "name": name, "jobs": list(jobs)}
        created: dict[str, Any] = self.ok(self.post("/api/workflows", body), 201)
        assert created["id"] == body["id"]
        return created

    def run(self, workflow_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.ok(self.post(f"/api/workflows/{workflow_id}/run"), 202)
        assert run["state"] == "running"
        return run

    def status(self, workflow_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.ok(self.get(f"/api/workflows/{workflow_id}/status"))
        return found

    def jobs(self, workflow_id: str) -> dict[str, dict[str, Any]]:
        """The workflow's jobs (in its latest run) by id."""
        return {job["id"]: job for job in self.status(workflow_id)["jobs"]}

    def claim(
        self,
        worker_id: str = "worker",
        labels: Iterable[str] = (),
        *,
        ttl: int | None = None,
        wait: int = 0,
    ) -> dict[str, Any] | None:
        """POST /api/jobs/claim; None when the answer is ``null``."""
        body: dict[str, Any] = {"worker_id": worker_id, "labels": list(labels)}
        if ttl is not None:
            body["lease_ttl_secs"] = ttl
        if wait:
            body["wait_secs"] = wait
        reply = self.post("/api/jobs/claim", body, timeout=HTTP_TIMEOUT + wait)
        found: dict[str, Any] | None = self.ok(reply)
        return found

    def must_claim(
        self,
        worker_id: str = "worker",
        labels: Iterable[str] = (),
        *,
        ttl: int | None = None,
        wait: int = 10,
    ) -> dict[str, Any]:
        got = self.claim(worker_id, labels, ttl=ttl, wait=wait)
        assert got is not None, f"{worker_id} got no job within {wait} s"
        return got

    def complete(self, lease_id: str, outputs: Mapping[str, str] | None = None) -> None:
        body = {"outputs": dict(outputs or {})}
        assert self.ok(self.post(f"/api/jobs/{lease_id}/complete", body)) == {}

    def fail(self, lease_id: str, error: str = "boom", *, retryable: bool = False) -> Any:
        body = {"error": error, "retryable": retryable}
        return self.ok(self.post(f"/api/jobs/{lease_id}/fail", body))

    def push_logs(self, lease_id: str, chunks: Iterable[Mapping[str, Any]]) -> int:
        reply = self.post(f"/api/jobs/{lease_id}/logs", {"chunks": list(chunks)})
        accepted = self.ok(reply)
        assert set(accepted) == {"accepted"} and is_int(accepted["accepted"])
        return int(accepted["accepted"])

    def logs(self, workflow_id: str, job_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.ok(
            self.get(f"/api/workflows/{workflow_id}/jobs/{job_id}/logs")
        )
        return found

    def workers(self) -> dict[str, dict[str, Any]]:
        return {worker["worker_id"]: worker for worker in self.ok(self.get("/api/workers"))}

    def wait_job_status(self, workflow_id: str, job_id: str, status: str) -> dict[str, Any]:
        """Waits until the job (in the workflow's latest run) has ``status``."""

        def reached() -> dict[str, Any] | None:
            job = self.jobs(workflow_id)[job_id]
            return job if job["status"] == status else None

        found: dict[str, Any] = wait_until(reached)
        return found


def rest(server: Running) -> Rest:
    """A client signed in as the server's administrator."""
    return Rest(server.rest_url, server.token)


def chunk(sequence: int, data: str, stream: str = "stdout", **extra: Any) -> dict[str, Any]:
    """A log chunk as a worker pushes it."""
    return {"sequence": sequence, "data": data, "stream": stream, **extra}


def assert_error(reply: Reply, http_status: int, grpc_status: str, *fragments: str) -> str:
    """The answer is a JSON error with the documented envelope; returns its message."""
    assert reply.status == http_status, f"{reply.status}: {reply.raw[:500]!r}"
    assert reply.content_type == "application/json"
    body = reply.json
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "status", "message"}, error
    assert error["code"] == http_status and is_int(error["code"])
    assert error["status"] == grpc_status
    message = error["message"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def assert_job_shape(job: Mapping[str, Any]) -> None:
    """A job of a workflow's status with exactly the documented fields and types."""
    assert set(job) == JOB_KEYS, set(job) ^ JOB_KEYS
    assert isinstance(job["id"], str) and job["id"]
    assert isinstance(job["name"], str) and job["name"]
    assert job["status"] in JOB_STATUSES
    assert isinstance(job["command"], str)
    assert job["duration_secs"] is None or is_int(job["duration_secs"])
    assert job["started_at"] is None or is_ms(job["started_at"])
    assert isinstance(job["depends_on"], list)
    assert all(isinstance(parent, str) for parent in job["depends_on"])
    assert job["output"] is None or isinstance(job["output"], str)
    assert isinstance(job["required_labels"], list)
    assert is_int(job["max_retries"]) and is_int(job["attempt"])
    assert set(job["retry_policy"]) == {"max_retries", "backoff"}
    assert job["retry_policy"]["max_retries"] == job["max_retries"]
    assert is_int(job["timeout_secs"]) and is_int(job["delayed_until_ms"])
    assert isinstance(job["outputs"], dict) and isinstance(job["env"], dict)


def assert_workflow_shape(workflow: Mapping[str, Any]) -> None:
    """A workflow of the list or status answer, with each job's shape checked."""
    assert set(workflow) == WORKFLOW_KEYS, set(workflow) ^ WORKFLOW_KEYS
    assert isinstance(workflow["id"], str) and workflow["id"]
    assert isinstance(workflow["name"], str) and isinstance(workflow["trigger"], str)
    assert is_int(workflow["version"]) and workflow["version"] >= 1
    assert isinstance(workflow["run_id"], str)
    if workflow["run_id"]:
        assert workflow["run_state"] in {"running", "success", "failure", "cancelled"}
    else:
        assert workflow["run_state"] is None
    assert isinstance(workflow["env"], dict)
    for job in workflow["jobs"]:
        assert_job_shape(job)


def assert_run_shape(run: Mapping[str, Any], workflow_id: str) -> None:
    assert set(run) == RUN_KEYS
    assert isinstance(run["run_id"], str) and run["run_id"]
    assert run["workflow_id"] == workflow_id
    assert is_int(run["workflow_version"]) and run["workflow_version"] >= 1
    assert run["state"] in {"running", "success", "failure", "cancelled"}
    assert is_ms(run["created_at_ms"]) and is_int(run["finished_at_ms"])


def assert_assignment_shape(assignment: Mapping[str, Any]) -> None:
    """A claim answer ``{job, lease}`` with exactly the documented fields and types."""
    assert set(assignment) == {"job", "lease"}
    job, lease = assignment["job"], assignment["lease"]
    assert set(job) == QUEUED_JOB_KEYS, set(job) ^ QUEUED_JOB_KEYS
    assert set(lease) == LEASE_KEYS, set(lease) ^ LEASE_KEYS
    for key in ("job_id", "workflow_id", "command", "run_id", "name"):
        assert isinstance(job[key], str)
    assert isinstance(job["required_labels"], list)
    assert set(job["retry_policy"]) == {"max_retries", "backoff"}
    assert is_int(job["retry_policy"]["max_retries"])
    assert is_int(job["attempt"]) and is_int(job["timeout_secs"])
    assert isinstance(job["upstream_outputs"], dict)
    for parent, outputs in job["upstream_outputs"].items():
        assert isinstance(parent, str) and isinstance(outputs, dict)
        assert all(isinstance(v, str) for v in outputs.values())
    assert is_ms(job["enqueued_at_ms"]) and is_int(job["delayed_until_ms"])
    for key in ("lease_id", "job_id", "workflow_id", "worker_id", "run_id"):
        assert isinstance(lease[key], str) and lease[key]
    assert is_int(lease["ttl_secs"])
    assert is_ms(lease["granted_at_ms"]) and is_ms(lease["expires_at_ms"])
    assert lease["expires_at_ms"] == lease["granted_at_ms"] + lease["ttl_secs"] * 1000
    assert (lease["job_id"], lease["workflow_id"], lease["run_id"]) == (
        job["job_id"],
        job["workflow_id"],
        job["run_id"],
    )


def assert_chunk_shape(found: Mapping[str, Any]) -> None:
    assert set(found) == CHUNK_KEYS, set(found) ^ CHUNK_KEYS
    assert isinstance(found["workflow_id"], str) and isinstance(found["job_id"], str)
    assert is_int(found["sequence"]) and isinstance(found["data"], str)
    assert is_ms(found["timestamp_ms"]) and found["stream"] in {"stdout", "stderr"}
    assert is_int(found["id"]) and found["id"] > 0
    assert isinstance(found["run_id"], str) and is_int(found["attempt"])


def assert_worker_shape(worker: Mapping[str, Any]) -> None:
    assert set(worker) == WORKER_KEYS, set(worker) ^ WORKER_KEYS
    assert isinstance(worker["worker_id"], str) and isinstance(worker["labels"], list)
    assert is_ms(worker["registered_at_ms"]) and is_ms(worker["last_heartbeat_ms"])
    assert worker["status"] in {"idle", "busy", "offline"}
    if worker["status"] == "busy":
        assert isinstance(worker["current_job"], str)
    else:
        assert worker["current_job"] is None


# --- Server-Sent Events -----------------------------------------------------------------


@dataclass
class Event:
    """One SSE frame: its fields, or only comment lines (a keep-alive)."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    comments: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The frame as sent, without the blank line that ends it."""
        return "\n".join(self.lines)

    @property
    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


class EventStream:
    """An open ``GET .../logs/stream``, read frame by frame with a socket timeout."""

    def __init__(
        self,
        client: Rest,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.connection = client.connection(timeout)
        self.connection.request("GET", path, headers=client.headers(headers))
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = self.response.headers

    def next(self) -> Event | None:
        """The next frame; None once the server has ended the stream."""
        frame = Event()
        while True:
            line = self.response.readline()
            if not line:
                return frame if frame.lines else None
            text = line.decode("utf-8").rstrip("\n")
            if not text:
                if frame.lines:
                    return frame
                continue
            frame.lines.append(text)
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                frame.comments.append(value)
            elif name == "id":
                frame.id = value
            elif name == "event":
                frame.event = value
            elif name == "data":
                frame.data = value if frame.data is None else f"{frame.data}\n{value}"

    def next_event(self) -> Event | None:
        """The next frame that is not a keep-alive comment; None at the end."""
        while True:
            frame = self.next()
            if frame is None or frame.event is not None or frame.data is not None:
                return frame

    def read_json_error(self) -> Reply:
        """The whole answer of a stream refused before it started (an error)."""
        reply = Reply(self.status, self.headers, self.response.read())
        self.close()
        return reply

    def close(self) -> None:
        # The response holds its own reference to the socket: close both to hang up.
        self.response.close()
        self.connection.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_path(workflow_id: str, job_id: str) -> str:
    return f"/api/workflows/{workflow_id}/jobs/{job_id}/logs/stream"


__all__ = [
    "CHUNK_KEYS",
    "HEARTBEAT_KEYS",
    "HTTP_TIMEOUT",
    "JOB_KEYS",
    "LEASE_KEYS",
    "NO_BACKOFF",
    "QUEUED_JOB_KEYS",
    "RUN_KEYS",
    "WORKER_KEYS",
    "WORKFLOW_KEYS",
    "Event",
    "EventStream",
    "Reply",
    "Rest",
    "assert_assignment_shape",
    "assert_chunk_shape",
    "assert_error",
    "assert_job_shape",
    "assert_run_shape",
    "assert_worker_shape",
    "assert_workflow_shape",
    "chunk",
    "is_int",
    "is_ms",
    "rest",
    "stream_path",
    "uid",
]
