"""The client's calls on runs beyond their first try: retry, rollback,
progress, and runs of a definition given inline."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ._channel import Connection
from ._inputs import to_struct
from ._pb import runs_pb2, workflows_pb2

_T = TypeVar("_T")


class RunsMixin:
    """Part of :class:`Client`: the calls on runs that go past their first try."""

    _conn: Connection

    def _unary(self, method: Callable[..., _T], request: Any) -> _T:
        raise NotImplementedError  # Client's own

    def retry_run(self, run_id: str) -> runs_pb2.Run:
        """Starts the next attempt of a finished run: its failed, cancelled
        and skipped jobs run again, those that succeeded keep their outputs.
        Returns the ``Run`` (``attempt`` one higher).

        Raises :class:`FailedPrecondition` for a run that is still running,
        that succeeded whole, or that was rolled back.
        """
        return self._unary(self._conn.runs.RetryRun, runs_pb2.RetryRunRequest(run_id=run_id))

    def rollback_run(self, run_id: str, job_ids: Iterable[str] = ()) -> runs_pb2.Run:
        """Rolls a finished run back: the compensations of its succeeded jobs
        (of ``job_ids`` alone, when given) run as jobs of their own, each after
        those of the jobs that depend on it. Returns the ``Run``, rolling back.
        """
        return self._unary(
            self._conn.runs.RollbackRun,
            runs_pb2.RollbackRunRequest(run_id=run_id, job_ids=list(job_ids)),
        )

    def run_progress(self, run_id: str) -> runs_pb2.RunProgress:
        """How far the run is (a ``RunProgress``): jobs done of all, the
        running and queued ones, and ``estimated_secs_left`` when earlier
        succeeded runs of its workflow version give an estimate."""
        return self._unary(
            self._conn.runs.GetRunProgress, runs_pb2.GetRunProgressRequest(run_id=run_id)
        )

    def run_adhoc(
        self,
        definition: str | Mapping[str, Any] | workflows_pb2.Workflow,
        *,
        inputs: Mapping[str, Any] | None = None,
        parallel_limit: int = 0,
    ) -> runs_pb2.Run:
        """Starts a run of a definition that is not stored as a workflow:
        the text of a workflow file, a mapping of that shape, or a
        ``trellis.v1.Workflow`` message. The run's ``workflow_id`` is
        ``adhoc-<run id>``. Returns the ``Run``.

        Raises :class:`InvalidArgument` for a definition CreateWorkflow would
        refuse, or inputs it does not declare; nothing is stored then.
        """
        request = workflows_pb2.CreateRunRequest(parallel_limit=parallel_limit)
        if isinstance(definition, workflows_pb2.Workflow):
            request.workflow.CopyFrom(definition)
        else:
            request.source = definition if isinstance(definition, str) else json.dumps(definition)
        if inputs:
            request.inputs.CopyFrom(to_struct(inputs, "inputs"))
        return self._unary(self._conn.workflows.CreateRun, request)


__all__ = ["RunsMixin"]
