"""The lifecycle methods of :class:`~trellis.worker_sdk.Client`: versions, copies,
enabling and disabling, deletion, one-job and one-edge edits, export and import."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from google.protobuf import field_mask_pb2

from ._channel import Connection
from ._pb import jobs_pb2, workflows_pb2

_T = TypeVar("_T")


class LifecycleMethods:
    """Mixed into :class:`Client`. Edits take ``expected_version``: when given,
    the edit raises :class:`Aborted` unless that is still the current version,
    so that two editors cannot overwrite each other unseen. A refused
    definition raises :class:`InvalidArgument` with the server's reason."""

    _conn: Connection

    def _unary(self, method: Callable[..., _T], request: Any) -> _T:
        raise NotImplementedError  # provided by Client

    # -- versions ---------------------------------------------------------

    def list_workflow_versions(self, workflow_id: str) -> Iterator[workflows_pb2.WorkflowVersion]:
        """Every version of the workflow, newest first (fetched a page at a time)."""
        token = ""
        while True:
            page = self._unary(
                self._conn.workflows.ListWorkflowVersions,
                workflows_pb2.ListWorkflowVersionsRequest(
                    workflow_id=workflow_id, page_token=token
                ),
            )
            yield from page.versions
            token = page.next_page_token
            if not token:
                return

    def get_workflow_version(self, workflow_id: str, version: int) -> workflows_pb2.WorkflowVersion:
        """One version of the workflow's definition (still readable after the
        workflow is deleted, for its runs)."""
        return self._unary(
            self._conn.workflows.GetWorkflowVersion,
            workflows_pb2.GetWorkflowVersionRequest(workflow_id=workflow_id, version=version),
        )

    def revert_workflow(
        self, workflow_id: str, to_version: int, *, expected_version: int = 0
    ) -> workflows_pb2.WorkflowVersion:
        """Makes the definition of ``to_version`` current again, as a new version."""
        return self._unary(
            self._conn.workflows.RevertWorkflow,
            workflows_pb2.RevertWorkflowRequest(
                workflow_id=workflow_id, to_version=to_version, expected_version=expected_version
            ),
        )

    # -- whole workflows ----------------------------------------------------

    def clone_workflow(
        self, workflow_id: str, new_workflow_id: str, *, name: str = ""
    ) -> workflows_pb2.Workflow:
        """A new workflow ``new_workflow_id`` with the current definition of
        ``workflow_id`` (and ``name``, when given)."""
        return self._unary(
            self._conn.workflows.CloneWorkflow,
            workflows_pb2.CloneWorkflowRequest(
                workflow_id=workflow_id, new_workflow_id=new_workflow_id, name=name
            ),
        )

    def enable_workflow(self, workflow_id: str) -> workflows_pb2.Workflow:
        """Lets runs of the workflow be started again."""
        return self._unary(
            self._conn.workflows.EnableWorkflow,
            workflows_pb2.EnableWorkflowRequest(workflow_id=workflow_id),
        )

    def disable_workflow(self, workflow_id: str) -> workflows_pb2.Workflow:
        """Refuses new runs of the workflow; those running go on."""
        return self._unary(
            self._conn.workflows.DisableWorkflow,
            workflows_pb2.DisableWorkflowRequest(workflow_id=workflow_id),
        )

    def delete_workflow(
        self, workflow_id: str, *, purge_runs: bool = False
    ) -> workflows_pb2.DeleteWorkflowResponse:
        """Deletes the workflow; its runs stay readable unless ``purge_runs``
        deletes them too (refused while one of them is running)."""
        return self._unary(
            self._conn.workflows.DeleteWorkflow,
            workflows_pb2.DeleteWorkflowRequest(workflow_id=workflow_id, purge_runs=purge_runs),
        )

    # -- jobs and edges -------------------------------------------------------

    def list_workflow_jobs(self, workflow_id: str) -> list[jobs_pb2.Job]:
        """The jobs of the workflow's current definition, in definition order."""
        answer = self._unary(
            self._conn.workflows.ListWorkflowJobs,
            workflows_pb2.ListWorkflowJobsRequest(workflow_id=workflow_id),
        )
        return list(answer.jobs)

    def add_workflow_job(
        self, workflow_id: str, job: jobs_pb2.Job, *, expected_version: int = 0
    ) -> workflows_pb2.WorkflowVersion:
        """Adds ``job`` after the others; the new definition is validated whole."""
        return self._unary(
            self._conn.workflows.AddWorkflowJob,
            workflows_pb2.AddWorkflowJobRequest(
                workflow_id=workflow_id, job=job, expected_version=expected_version
            ),
        )

    def update_workflow_job(
        self,
        workflow_id: str,
        job_id: str,
        job: jobs_pb2.Job,
        fields: Sequence[str] = (),
        *,
        expected_version: int = 0,
    ) -> workflows_pb2.WorkflowVersion:
        """Sets the ``fields`` of the job (``command``, ``depends_on``, ...) to
        their values in ``job``; with no ``fields``, replaces the whole job."""
        return self._unary(
            self._conn.workflows.UpdateWorkflowJob,
            workflows_pb2.UpdateWorkflowJobRequest(
                workflow_id=workflow_id,
                job_id=job_id,
                job=job,
                update_mask=field_mask_pb2.FieldMask(paths=list(fields)),
                expected_version=expected_version,
            ),
        )

    def rename_workflow_job(
        self, workflow_id: str, job_id: str, new_job_id: str, *, expected_version: int = 0
    ) -> workflows_pb2.WorkflowVersion:
        """Gives the job a new id; the jobs that need it need the new id."""
        return self._unary(
            self._conn.workflows.RenameWorkflowJob,
            workflows_pb2.RenameWorkflowJobRequest(
                workflow_id=workflow_id,
                job_id=job_id,
                new_job_id=new_job_id,
                expected_version=expected_version,
            ),
        )

    def remove_workflow_job(
        self, workflow_id: str, job_id: str, *, cascade: bool = False, expected_version: int = 0
    ) -> workflows_pb2.WorkflowVersion:
        """Removes the job; refused while others need it, unless ``cascade``
        removes their dependencies on it too."""
        return self._unary(
            self._conn.workflows.RemoveWorkflowJob,
            workflows_pb2.RemoveWorkflowJobRequest(
                workflow_id=workflow_id,
                job_id=job_id,
                cascade=cascade,
                expected_version=expected_version,
            ),
        )

    def add_workflow_edge(
        self, workflow_id: str, from_job: str, to_job: str, *, expected_version: int = 0
    ) -> workflows_pb2.WorkflowVersion:
        """Makes ``to_job`` depend on ``from_job``; a cycle is refused."""
        return self._unary(
            self._conn.workflows.AddWorkflowEdge,
            workflows_pb2.AddWorkflowEdgeRequest(
                workflow_id=workflow_id,
                from_job=from_job,
                to_job=to_job,
                expected_version=expected_version,
            ),
        )

    def remove_workflow_edge(
        self, workflow_id: str, from_job: str, to_job: str, *, expected_version: int = 0
    ) -> workflows_pb2.WorkflowVersion:
        """Removes the dependency of ``to_job`` on ``from_job``."""
        return self._unary(
            self._conn.workflows.RemoveWorkflowEdge,
            workflows_pb2.RemoveWorkflowEdgeRequest(
                workflow_id=workflow_id,
                from_job=from_job,
                to_job=to_job,
                expected_version=expected_version,
            ),
        )

    # -- export and import ------------------------------------------------

    def export_workflows(self, workflow_id: str = "") -> str:
        """The current definition of one workflow, or of all of them, as YAML
        documents of the workflow file format (each with its ``id``)."""
        answer = self._unary(
            self._conn.workflows.ExportWorkflows,
            workflows_pb2.ExportWorkflowsRequest(workflow_id=workflow_id),
        )
        return str(answer.text)

    def import_workflows(
        self, text: str, *, dry_run: bool = False
    ) -> list[workflows_pb2.ImportedWorkflow]:
        """Stores the workflows of an export, all of them or none (a bad one
        raises ``InvalidArgument`` naming each bad workflow and job);
        ``dry_run`` only answers what would be done."""
        answer = self._unary(
            self._conn.workflows.ImportWorkflows,
            workflows_pb2.ImportWorkflowsRequest(text=text, dry_run=dry_run),
        )
        return list(answer.workflows)


__all__ = ["LifecycleMethods"]
