"""A small synchronous client for people and scripts: workflows, runs, logs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from ._channel import Connection
from ._client_events import EventsMixin
from ._client_lifecycle import LifecycleMethods
from ._client_runs import RunsMixin
from ._client_topics import TopicCalls
from ._client_webhooks import WebhookClientMixin
from ._errors import ConnectionLost, DeadlineExceeded, TrellisError, wrap_rpc_error
from ._inputs import to_struct
from ._pb import (
    auth_pb2,
    identity_pb2,
    logs_pb2,
    machine_pb2,
    runs_pb2,
    workers_pb2,
    workflows_pb2,
)

_T = TypeVar("_T")

DEFAULT_TARGET = "localhost:50051"

_TERMINAL_RUN_STATES = frozenset(
    {
        runs_pb2.RUN_STATE_SUCCEEDED,
        runs_pb2.RUN_STATE_FAILED,
        runs_pb2.RUN_STATE_CANCELLED,
        runs_pb2.RUN_STATE_ROLLED_BACK,
        runs_pb2.RUN_STATE_PARTLY_ROLLED_BACK,
        runs_pb2.RUN_STATE_ROLLBACK_FAILED,
    }
)


@dataclass(frozen=True)
class RunRequest:
    """One run for :meth:`Client.run_workflows` to start.

    Attributes:
        workflow_id: the workflow whose current version runs.
        inputs: values of the workflow's declared inputs (JSON-like: str,
            int, float, bool, None, mappings and lists); defaults fill in the
            rest.
        request_id: a caller-chosen id that makes the start safe to retry:
            a later start with the same id answers the first one's run.
    """

    workflow_id: str
    inputs: Mapping[str, Any] | None = None
    request_id: str | None = None


def _run_request(
    workflow_id: str,
    inputs: Mapping[str, Any] | None,
    request_id: str | None,
    where: str = "inputs",
) -> workflows_pb2.RunWorkflowRequest:
    request = workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id, request_id=request_id or "")
    if inputs:
        request.inputs.CopyFrom(to_struct(inputs, where))
    return request


class Client(LifecycleMethods, TopicCalls, EventsMixin, RunsMixin, WebhookClientMixin):
    """Talks to a Trellis server: define and run workflows, watch runs and logs.

    Methods return the ``trellis.v1`` protobuf messages (``Workflow``, ``Run``,
    ``RunDetail``, ``LogChunk``, ...). Failures raise :class:`TrellisError`
    subclasses (:class:`NotFound`, :class:`InvalidArgument`,
    :class:`ConnectionLost`, ...), never raw gRPC errors.

    Args:
        target: ``host:port`` of the Trellis gRPC server; default: the
            ``TRELLIS_TARGET`` environment variable, else ``localhost:50051``.
        token: sent as ``authorization: Bearer <token>`` on every call;
            default: the ``TRELLIS_TOKEN`` environment variable, if set.
        organization_id: sent as ``x-organization-id`` on every call;
            default: ``TRELLIS_ORGANIZATION_ID``.
        timeout: deadline in seconds of each unary call.
        resume_delay: :meth:`follow_logs` and :meth:`wait_for_run` reopen a
            dropped stream after ``resume_delay * 2**n`` seconds (at most 5)
            on the n-th consecutive attempt, and give up after the fifth.
        channel: use this channel (not closed by :meth:`close`) instead of
            opening one to ``target``.

    Use it as a context manager, or call :meth:`close` when done.
    """

    def __init__(
        self,
        target: str | None = None,
        token: str | None = None,
        organization_id: str | None = None,
        *,
        timeout: float = 30.0,
        resume_delay: float = 0.2,
        channel: grpc.Channel | None = None,
    ) -> None:
        target = target or os.environ.get("TRELLIS_TARGET") or DEFAULT_TARGET
        token = token or os.environ.get("TRELLIS_TOKEN") or None
        organization_id = organization_id or os.environ.get("TRELLIS_ORGANIZATION_ID") or None
        self.target = target
        self.timeout = timeout
        self._resume_delay = resume_delay
        self._conn = Connection(
            target, token=token, organization_id=organization_id, channel=channel
        )
        # Set by close(): streams it cut short are not reopened.
        self._closed = False

    def close(self) -> None:
        """Closes the channel (unless it was handed in)."""
        self._closed = True
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Callable[..., _T], request: Any) -> _T:
        try:
            return method(request, timeout=self.timeout, metadata=self._conn.metadata)
        except grpc.RpcError as err:
            raise self._wrap(err) from err

    def _wrap(self, err: grpc.RpcError) -> TrellisError:
        wrapped = wrap_rpc_error(err)
        if wrapped.code is grpc.StatusCode.UNAVAILABLE:
            # gRPC's text nests the reason ("failed to connect to all
            # addresses; last error: ...: Connection refused"): keep the end.
            reason = wrapped.message.rsplit(": ", 1)[-1]
            wrapped.message = f"cannot reach Trellis at {self.target}: {reason}"
        return wrapped

    # -- workflows --------------------------------------------------------

    # -- credentials ----------------------------------------------------

    def login(self, username: str, password: str, mfa_code: str = "") -> str:
        """Signs in; returns a short-lived access token (15 minutes by default)."""
        answer = self._unary(
            self._conn.identity.Login,
            auth_pb2.LoginRequest(username=username, password=password, mfa_code=mfa_code),
        )
        return str(answer.token)

    def create_personal_access_token(
        self, name: str, scopes: Sequence[str] = (), expires_in_days: int = 30
    ) -> str:
        """A personal access token of the calling user (all of its scopes by
        default); the token is returned this once. Send it with the
        organization id (``organization_id``)."""
        answer = self._unary(
            self._conn.identity.CreatePersonalAccessToken,
            identity_pb2.CreatePersonalAccessTokenRequest(
                name=name, scopes=list(scopes), expires_in_days=expires_in_days
            ),
        )
        return str(answer.access_token)

    def create_machine_user(self, username: str, name: str = "") -> str:
        """A machine user (a service account for workers); returns its token,
        this once. Needs the ``admin:users`` scope."""
        answer = self._unary(
            self._conn.identity.CreateMachineUser,
            machine_pb2.CreateMachineUserRequest(username=username, name=name),
        )
        return str(answer.generated_token)

    def create_workflow(
        self,
        definition: str | Mapping[str, Any] | workflows_pb2.Workflow,
        *,
        workflow_id: str | None = None,
    ) -> workflows_pb2.Workflow:
        """Creates a workflow, or a new version of an existing one.

        ``definition`` is the text of a workflow file (YAML or JSON), a mapping
        of the same shape (``{"name": ..., "on": ..., "jobs": {...}}``), or a
        ``trellis.v1.Workflow`` message. ``workflow_id`` names the workflow
        (the server generates one when neither it nor the message has an id).
        Returns the stored ``Workflow``.
        """
        if isinstance(definition, workflows_pb2.Workflow):
            workflow = workflows_pb2.Workflow()
            workflow.CopyFrom(definition)
            if workflow_id:
                workflow.id = workflow_id
            request = workflows_pb2.CreateWorkflowRequest(workflow=workflow)
        else:
            source = definition if isinstance(definition, str) else json.dumps(definition)
            request = workflows_pb2.CreateWorkflowRequest(
                source=source, workflow_id=workflow_id or ""
            )
        return self._unary(self._conn.workflows.CreateWorkflow, request)

    def list_workflows(self) -> list[workflows_pb2.Workflow]:
        """All workflows, each with the job states of its latest run."""
        response = self._unary(
            self._conn.workflows.ListWorkflows, workflows_pb2.ListWorkflowsRequest(limit=_MAX_PAGE)
        )
        return list(response.workflows)

    def get_workflow(self, workflow_id: str) -> workflows_pb2.Workflow:
        """One workflow with the job states of its latest run."""
        return self._unary(
            self._conn.workflows.GetWorkflow,
            workflows_pb2.GetWorkflowRequest(workflow_id=workflow_id),
        )

    def run_workflow(
        self,
        workflow_id: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        parallel_limit: int = 0,
    ) -> runs_pb2.Run:
        """Starts a run of the workflow's current version; returns the ``Run``.

        With ``parallel_limit``, at most that many of the run's jobs are
        leased at once (0: the workflow's own limit, if any).

        ``inputs`` are values of the workflow's declared inputs (JSON-like:
        str, int, float, bool, None, mappings and lists); the server checks
        them whole against the declaration (:class:`InvalidArgument` naming
        the input) and fills in the defaults. With ``request_id`` the call is
        safe to retry: a later call with the same id answers the same run and
        starts none (:class:`AlreadyExists` when it names another workflow or
        other inputs).

        Raises ValueError, before any call, for a value JSON cannot carry
        (or a number beyond ±2**53, which would lose digits).
        """
        request = _run_request(workflow_id, inputs, request_id)
        request.parallel_limit = parallel_limit
        return self._unary(self._conn.workflows.RunWorkflow, request)

    def run_workflows(self, requests: Iterable[RunRequest]) -> list[runs_pb2.Run]:
        """Starts one run per :class:`RunRequest`, all in one transaction;
        returns the ``Run`` of each, in the order of the requests.

        All or nothing: when the server refuses one item, no run starts and
        the error names the item's index. Each item is checked as
        :meth:`run_workflow` checks its arguments (a ValueError names
        ``requests[i]``). No requests: no call, and no runs.
        """
        batch = workflows_pb2.BatchRunWorkflowsRequest()
        for i, item in enumerate(requests):
            if not isinstance(item, RunRequest):
                raise TypeError(f"requests[{i}]: expected a RunRequest, got {type(item).__name__}")
            batch.requests.append(
                _run_request(
                    item.workflow_id, item.inputs, item.request_id, f"requests[{i}].inputs"
                )
            )
        if not batch.requests:
            return []
        response = self._unary(self._conn.workflows.BatchRunWorkflows, batch)
        return list(response.runs)

    def cancel_workflow(self, workflow_id: str) -> runs_pb2.Run:
        """Cancels the workflow's active run; returns that ``Run``."""
        return self._unary(
            self._conn.workflows.CancelWorkflow,
            workflows_pb2.CancelWorkflowRequest(workflow_id=workflow_id),
        )

    # -- runs -------------------------------------------------------------

    def get_run(self, run_id: str) -> runs_pb2.RunDetail:
        """The run with the state of each of its jobs (a ``RunDetail``)."""
        return self._unary(self._conn.runs.GetRun, runs_pb2.GetRunRequest(run_id=run_id))

    def list_runs(self, workflow_id: str | None = None, *, limit: int = 50) -> list[runs_pb2.Run]:
        """Runs (``Run``), newest first: at most ``limit`` of them, of every
        workflow or of ``workflow_id`` only (none for an unknown id)."""
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit}")
        found: list[runs_pb2.Run] = []
        token = ""
        while len(found) < limit:
            page = self._unary(
                self._conn.runs.ListRuns,
                runs_pb2.ListRunsRequest(
                    workflow_id=workflow_id or "",
                    page_size=min(limit - len(found), _MAX_PAGE),
                    page_token=token,
                ),
            )
            found.extend(page.runs)
            token = page.next_page_token
            if not token:
                break
        return found[:limit]

    def cancel_run(self, run_id: str) -> runs_pb2.Run:
        """Cancels a run: queued jobs are cancelled, running ones told to stop."""
        return self._unary(self._conn.runs.CancelRun, runs_pb2.CancelRunRequest(run_id=run_id))

    def stream_run_events(
        self, run_id: str, *, after_id: int = 0, timeout: float | None = None
    ) -> Iterator[runs_pb2.RunEvent]:
        """The run's events (``RunEvent``) after ``after_id``, then live ones
        until the run is terminal."""
        call = self._conn.runs.StreamRunEvents(
            runs_pb2.StreamRunEventsRequest(run_id=run_id, after_id=after_id),
            timeout=timeout,
            metadata=self._conn.metadata,
        )
        try:
            yield from call
        except grpc.RpcError as err:
            raise self._wrap(err) from err
        finally:
            call.cancel()

    def wait_for_run(
        self,
        run_id: str,
        timeout: float | None = None,
        *,
        on_event: Callable[[runs_pb2.RunEvent], None] | None = None,
    ) -> runs_pb2.RunDetail:
        """Waits until the run is terminal and returns its ``RunDetail``.

        Follows ``StreamRunEvents`` (passing each event to ``on_event``) until
        RUN_FINISHED, resuming after a dropped connection. Raises
        :class:`DeadlineExceeded` after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        late = DeadlineExceeded(
            f"run {run_id} did not finish within {timeout or 0:g} s",
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        after_id = 0
        reconnects = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise late
            finished = False
            try:
                for event in self.stream_run_events(run_id, after_id=after_id, timeout=remaining):
                    after_id = max(after_id, event.id)
                    reconnects = 0
                    if on_event is not None:
                        on_event(event)
                    if event.type == runs_pb2.RUN_EVENT_TYPE_RUN_FINISHED:
                        finished = True
                        break
                # Inside the try: a stopping server ends its streams cleanly
                # and then refuses this call, which must resume like a break.
                detail = self.get_run(run_id)
            except DeadlineExceeded:
                raise late from None
            except TrellisError as err:
                # A broken stream is resumed; anything else (unknown run, no
                # permission) is the caller's to handle.
                if not self._resumable(err) or reconnects >= _MAX_RESUMES:
                    raise
                reconnects += 1
                _pause(self._backoff(reconnects), deadline)
                continue
            # Without RUN_FINISHED the stream may have ended because the run
            # was already terminal when it was opened; otherwise resume it.
            if finished or detail.run.state in _TERMINAL_RUN_STATES:
                return detail
            _pause(0.2, deadline)

    def _backoff(self, attempt: int) -> float:
        """The pause before the ``attempt``-th consecutive reopening of a stream."""
        return min(self._resume_delay * 2.0**attempt, _MAX_RESUME_DELAY)

    def _resumable(self, err: TrellisError) -> bool:
        """Whether a stream that failed with ``err`` should be reopened."""
        return err.code in _RESUMABLE_CODES and not self._closed

    # -- workers ----------------------------------------------------------

    def list_workers(self) -> list[workers_pb2.Worker]:
        """The organization's workers (``Worker``), each with its labels, its
        ``status`` (idle, busy or offline), the job it holds, if any, and when
        it was last heard from."""
        response = self._unary(self._conn.workers.ListWorkers, workers_pb2.ListWorkersRequest())
        return list(response.workers)

    # -- logs -------------------------------------------------------------

    def list_logs(
        self, workflow_id: str, job_id: str, run_id: str | None = None
    ) -> list[logs_pb2.LogChunk]:
        """The job's log chunks so far, in the latest run or in ``run_id``."""
        response = self._unary(
            self._conn.logs.ListLogs,
            logs_pb2.ListLogsRequest(workflow_id=workflow_id, job_id=job_id, run_id=run_id or ""),
        )
        return list(response.chunks)

    def follow_logs(
        self,
        workflow_id: str,
        job_id: str,
        run_id: str | None = None,
        *,
        after_id: int = 0,
        timeout: float | None = None,
    ) -> Iterator[logs_pb2.LogChunk]:
        """The job's log chunks (``LogChunk``): its history, then live ones until
        the job is terminal, resuming (without repeats) after a dropped
        connection or a server restart. Raises :class:`DeadlineExceeded`
        when the job is still running ``timeout`` seconds after the first
        chunk was asked for (resumes included)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        late = DeadlineExceeded(
            f"log of {workflow_id}/{job_id} did not end within {timeout or 0:g} s",
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )
        resumes = 0
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise late
            call = self._conn.logs.FollowLogs(
                logs_pb2.FollowLogsRequest(
                    workflow_id=workflow_id,
                    job_id=job_id,
                    run_id=run_id or "",
                    after_id=after_id,
                ),
                timeout=remaining,
                metadata=self._conn.metadata,
            )
            try:
                for response in call:
                    for chunk in response.chunks:
                        after_id = max(after_id, chunk.id)
                        # Resume in the run being followed, not a newer one.
                        run_id = run_id or chunk.run_id or None
                        resumes = 0
                        yield chunk
                    if response.job_finished:
                        return
                # Ended without `job_finished`: the server is stopping (it
                # ends streams cleanly) and the job may still be running.
                error: TrellisError | None = None
            except grpc.RpcError as err:
                error = self._wrap(err)
                error.__cause__ = err
            finally:
                call.cancel()
            if isinstance(error, DeadlineExceeded) and deadline is not None:
                raise late from None
            if error is not None and not self._resumable(error):
                raise error
            if resumes >= _MAX_RESUMES:
                raise error or ConnectionLost(
                    f"log stream of {workflow_id}/{job_id} keeps ending early",
                    grpc.StatusCode.UNAVAILABLE,
                )
            resumes += 1
            _pause(self._backoff(resumes), deadline)


# The largest page a listing RPC answers.
_MAX_PAGE = 1000

# Codes after which a stream is reopened: the server went away or restarted.
# CANCELLED too: unless the client was closed, it never cancels a call it
# still reads, so the server (shutting down) cancelled it.
_RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# Consecutive reopenings without progress before giving up (~11 s in all
# with the default resume_delay).
_MAX_RESUMES = 5
_MAX_RESUME_DELAY = 5.0


def _pause(delay: float, deadline: float | None) -> None:
    """Sleeps ``delay`` seconds, but not past ``deadline`` (monotonic)."""
    if deadline is not None:
        delay = min(delay, max(0.0, deadline - time.monotonic()))
    time.sleep(delay)
