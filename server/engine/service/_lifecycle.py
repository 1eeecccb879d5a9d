"""A workflow's life after its creation: its versions (listed, read, reverted
to), copies, enabling and disabling, deletion, edits of one job or edge at a
time, and export and import in the file format.

Every edit builds the whole new definition and validates it as a created one
is, then stores it as a new version in one transaction that holds the
workflow's row (compare-and-set on its version; a caller's
``expected_version`` that is no longer current is ABORTED).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import field_mask_pb2
from sqlalchemy import Connection, delete, func, select, update

from trellis.server.core.errors import (
    Aborted,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from trellis.server.core.pagination import after_key
from trellis.server.core.principal import Principal
from trellis.server.core.times import timestamp
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects, jobs, leases, log_chunks, runs
from trellis.server.engine._machine.common import edges
from trellis.server.engine._states import AuditAction, RunState
from trellis.server.engine.definitions import (
    DefinitionError,
    WorkflowDef,
    dump_documents,
    parse_api_mapping,
    parse_documents,
    to_api_mapping,
)
from trellis.server.engine.definitions._api import plain
from trellis.server.engine.service._base import Audit, versions, workflows
from trellis.server.engine.service._store import WorkflowChange
from trellis.server.engine.service._triggers import drop_triggers
from trellis.server.engine.service._workflows import WorkflowOps
from trellis.v1 import jobs_pb2, workflows_pb2

VERSIONS_PAGE_SIZE = 50
MAX_VERSIONS_PAGE = 1000
# Runs deleted per round of a purge: each round is a few statements with
# bounded lists of ids, all in the one transaction of the deletion.
PURGE_BATCH = 500
# The fields of a job an update may name; its id is changed by a rename.
JOB_FIELDS = (
    "name",
    "command",
    "depends_on",
    "required_labels",
    "max_retries",
    "retry_policy",
    "timeout_secs",
    "env",
)

_Edit = Callable[[dict[str, Any]], None]


class LifecycleOps(WorkflowOps):
    # ------------------------------------------------------------ versions

    def list_workflow_versions(
        self, principal: Principal, workflow_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> workflows_pb2.ListWorkflowVersionsResponse:
        """The workflow's versions, newest first, a page at a time."""
        org = principal.org_id
        size = self._page_size(page_size, VERSIONS_PAGE_SIZE, MAX_VERSIONS_PAGE)
        scope = f"workflow-versions\x00{org}\x00{workflow_id}"
        after = self._after(scope, page_token)

        def tx(conn: Connection, now: int) -> workflows_pb2.ListWorkflowVersionsResponse:
            enabled = bool(self._require(conn, org, workflow_id).enabled)
            q = select(versions).where(
                versions.c.org_id == org,
                versions.c.workflow_id == workflow_id,
                versions.c.deleted_at_ms.is_(None),
            )
            if after is not None:
                if not isinstance(after[0], int):
                    raise InvalidArgument("page_token: not a token from a previous response")
                q = q.where(after_key([versions.c.version], after, descending=[True]))
            rows = conn.execute(q.order_by(versions.c.version.desc()).limit(size + 1)).all()
            resp = workflows_pb2.ListWorkflowVersionsResponse(
                versions=[self._version_of(row, enabled) for row in rows[:size]]
            )
            if len(rows) > size:
                resp.next_page_token = self._tokens().encode(scope, (int(rows[size - 1].version),))
            return resp

        return self._read(tx)

    def get_workflow_version(
        self, principal: Principal, workflow_id: str, version: int
    ) -> workflows_pb2.WorkflowVersion:
        """One version, also of a deleted workflow (its runs' versions stay readable)."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> workflows_pb2.WorkflowVersion:
            row = self._version_row(conn, org, workflow_id, version, deleted_too=True)
            return self._version_of(row, self._enabled(conn, org, workflow_id))

        return self._read(tx)

    def revert_workflow(
        self,
        principal: Principal,
        workflow_id: str,
        to_version: int,
        *,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Makes the definition of ``to_version`` current as a new version."""
        org = principal.org_id
        if to_version <= 0:
            raise InvalidArgument("to_version: give the version to revert to (1 or more)")

        def tx(conn: Connection, now: int) -> tuple[int, Effects]:
            row = self._locked(conn, org, workflow_id, expected_version)
            old = self._version_row(conn, org, workflow_id, to_version)
            wdef = self._definition(org, workflow_id, to_version, lambda: old.definition)
            version, _ = self._save_definition(
                conn,
                now,
                org,
                wdef,
                source="api",
                change=WorkflowChange.REVERTED,
                row=row,
                locked=True,
            )
            return version, self._definition_effects(org)

        return self._changed(principal, ip, workflow_id, tx)

    # ------------------------------------------------------------ whole workflows

    def clone_workflow(
        self,
        principal: Principal,
        workflow_id: str,
        new_workflow_id: str,
        *,
        name: str = "",
        ip: str = "",
    ) -> workflows_pb2.Workflow:
        """A new workflow with the current definition of ``workflow_id``."""
        org = principal.org_id
        if not new_workflow_id:
            raise InvalidArgument("new_workflow_id: required")

        def tx(conn: Connection, now: int) -> tuple[int, Effects]:
            source = self._current_definition(conn, org, workflow_id)
            data = to_api_mapping(source)
            data["id"] = new_workflow_id
            if name:
                data["name"] = name
            copy = _parsed(data, new_workflow_id, source)
            if self._locked_workflow(conn, org, new_workflow_id) is not None:
                raise Conflict(f"workflow {new_workflow_id!r} already exists")
            version, _ = self._save_definition(
                conn, now, org, copy, source="api", change=WorkflowChange.CLONED, locked=True
            )
            return version, self._definition_effects(org)

        audit = Audit(principal, ip, AuditAction.WORKFLOW_CREATE, f"workflow:{new_workflow_id}")
        version = self._write(tx, audit)
        self._see_version(org, new_workflow_id, version)
        return self._get_workflow(org, new_workflow_id)

    def set_workflow_enabled(
        self, principal: Principal, workflow_id: str, enabled: bool, *, ip: str = ""
    ) -> workflows_pb2.Workflow:
        """Enables or disables the workflow; a disabled one's runs cannot be
        started, and those running go on."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> tuple[None, Effects]:
            row = self._locked(conn, org, workflow_id)
            if bool(row.enabled) != enabled:
                conn.execute(
                    update(workflows)
                    .where(workflows.c.org_id == org, workflows.c.id == workflow_id)
                    .values(enabled=enabled, updated_at_ms=now)
                )
                change = WorkflowChange.ENABLED if enabled else WorkflowChange.DISABLED
                self._workflow_changed(conn, now, org, workflow_id, int(row.version), change)
            return None, self._definition_effects(org)

        action = AuditAction.WORKFLOW_ENABLE if enabled else AuditAction.WORKFLOW_DISABLE
        self._write(tx, Audit(principal, ip, action, f"workflow:{workflow_id}"))
        # Starts here read the workflow again (those elsewhere find out in their own writes).
        self._see_version(org, workflow_id, None)
        return self._get_workflow(org, workflow_id)

    def delete_workflow(
        self, principal: Principal, workflow_id: str, *, purge_runs: bool = False, ip: str = ""
    ) -> workflows_pb2.DeleteWorkflowResponse:
        """Deletes the workflow. Its versions leave every listing but stay
        stored (hidden) for the runs made of them, which stay readable; with
        ``purge_runs`` the runs go too, with their jobs, leases and logs, in
        rounds inside this one transaction. Their events stay: the event log
        is append-only (retention alone shortens it), so that no follower's
        cursor loses its place and SQLite never reuses an event id."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> tuple[int, Effects]:
            row = self._locked(conn, org, workflow_id)
            purged = 0
            if purge_runs:
                running = conn.execute(
                    select(func.count())
                    .select_from(runs)
                    .where(
                        runs.c.org_id == org,
                        runs.c.workflow_id == workflow_id,
                        runs.c.state.in_((RunState.RUNNING, RunState.ROLLING_BACK)),
                    )
                ).scalar_one()
                if running:
                    raise FailedPrecondition(
                        f"workflow {workflow_id!r} has {running} running or rolling-back "
                        "run(s); cancel them or let them finish before purging its runs"
                    )
                purged = _purge_runs(conn, org, workflow_id)
            conn.execute(
                update(versions)
                .where(
                    versions.c.org_id == org,
                    versions.c.workflow_id == workflow_id,
                    versions.c.deleted_at_ms.is_(None),
                )
                .values(deleted_at_ms=now)
            )
            conn.execute(
                delete(workflows).where(workflows.c.org_id == org, workflows.c.id == workflow_id)
            )
            drop_triggers(conn, org, workflow_id)
            self._workflow_changed(
                conn, now, org, workflow_id, int(row.version), WorkflowChange.DELETED
            )
            return purged, self._definition_effects(org)

        audit = Audit(principal, ip, AuditAction.WORKFLOW_DELETE, f"workflow:{workflow_id}")
        purged = self._write(tx, audit)
        self._see_version(org, workflow_id, None)
        return workflows_pb2.DeleteWorkflowResponse(workflow_id=workflow_id, purged_runs=purged)

    # ------------------------------------------------------------ jobs and edges

    def list_workflow_jobs(
        self, principal: Principal, workflow_id: str
    ) -> workflows_pb2.ListWorkflowJobsResponse:
        """The jobs of the current definition, in definition order."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> workflows_pb2.ListWorkflowJobsResponse:
            row = self._require(conn, org, workflow_id)
            wdef = self._definition(org, workflow_id, row.version, lambda: row.definition)
            return workflows_pb2.ListWorkflowJobsResponse(
                jobs=[render.job_from_def(job) for job in wdef.jobs], version=row.version
            )

        return self._read(tx)

    def get_workflow_job(self, principal: Principal, workflow_id: str, job_id: str) -> jobs_pb2.Job:
        for job in self.list_workflow_jobs(principal, workflow_id).jobs:
            if job.id == job_id:
                return job
        raise NotFound(f"job {job_id!r} not found in workflow {workflow_id!r}")

    def add_workflow_job(
        self,
        principal: Principal,
        workflow_id: str,
        job: jobs_pb2.Job,
        *,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Adds ``job`` after the others."""

        def edit(data: dict[str, Any]) -> None:
            if not job.id:
                raise InvalidArgument("job.id: required")
            if _find(data, job.id, workflow_id, missing_ok=True) is not None:
                raise Conflict(f"job {job.id!r} already exists in workflow {workflow_id!r}")
            data["jobs"].append(plain(job))

        return self._edit(
            principal, workflow_id, WorkflowChange.JOB_ADDED, edit, expected_version, ip
        )

    def update_workflow_job(
        self,
        principal: Principal,
        workflow_id: str,
        job_id: str,
        job: jobs_pb2.Job,
        update_mask: field_mask_pb2.FieldMask | None = None,
        *,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Sets the fields of the job that ``update_mask`` names (all when empty);
        a named field that ``job`` leaves unset is cleared."""
        paths = list(update_mask.paths) if update_mask is not None else []
        for path in paths:
            if path not in JOB_FIELDS:
                raise InvalidArgument(
                    f"update_mask: {path!r} is not a field of a job that can be updated; "
                    "expected some of " + ", ".join(JOB_FIELDS)
                )
        if job.id and job.id != job_id:
            raise InvalidArgument(
                f"job.id: {job.id!r} is not the job {job_id!r}; rename a job with RenameWorkflowJob"
            )

        def edit(data: dict[str, Any]) -> None:
            index = _index(data, job_id, workflow_id)
            given = plain(job)
            given["id"] = job_id
            if not paths:
                data["jobs"][index] = given
                return
            current = data["jobs"][index]
            for path in paths:
                if path in given:
                    current[path] = given[path]
                else:
                    current.pop(path, None)
            # The count lives in two places; the one named by the mask wins.
            policy = current.get("retry_policy")
            if "max_retries" in paths and isinstance(policy, dict):
                policy.pop("max_retries", None)
            if "retry_policy" in paths and isinstance(policy, dict) and policy.get("max_retries"):
                current.pop("max_retries", None)

        return self._edit(
            principal, workflow_id, WorkflowChange.JOB_UPDATED, edit, expected_version, ip
        )

    def rename_workflow_job(
        self,
        principal: Principal,
        workflow_id: str,
        job_id: str,
        new_job_id: str,
        *,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Gives the job a new id, in the dependencies of the jobs that need it too."""
        if not new_job_id:
            raise InvalidArgument("new_job_id: required")

        def edit(data: dict[str, Any]) -> None:
            index = _index(data, job_id, workflow_id)
            if new_job_id != job_id and _find(data, new_job_id, workflow_id, missing_ok=True):
                raise Conflict(f"job {new_job_id!r} already exists in workflow {workflow_id!r}")
            data["jobs"][index]["id"] = new_job_id
            for other in data["jobs"]:
                other["depends_on"] = [
                    new_job_id if parent == job_id else parent
                    for parent in other.get("depends_on", [])
                ]

        return self._edit(
            principal, workflow_id, WorkflowChange.JOB_RENAMED, edit, expected_version, ip
        )

    def remove_workflow_job(
        self,
        principal: Principal,
        workflow_id: str,
        job_id: str,
        *,
        cascade: bool = False,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Removes the job; refused while others need it, unless ``cascade``
        removes their dependencies on it as well."""

        def edit(data: dict[str, Any]) -> None:
            index = _index(data, job_id, workflow_id)
            needing = [j["id"] for j in data["jobs"] if job_id in j.get("depends_on", [])]
            if needing and not cascade:
                raise FailedPrecondition(
                    f"job {job_id!r} is needed by "
                    + ", ".join(repr(j) for j in needing)
                    + "; remove those edges first, or remove it with cascade"
                )
            del data["jobs"][index]
            for other in data["jobs"]:
                other["depends_on"] = [p for p in other.get("depends_on", []) if p != job_id]

        return self._edit(
            principal, workflow_id, WorkflowChange.JOB_REMOVED, edit, expected_version, ip
        )

    def add_workflow_edge(
        self,
        principal: Principal,
        workflow_id: str,
        from_job: str,
        to_job: str,
        *,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Makes ``to_job`` depend on ``from_job``; a cycle is refused."""

        def edit(data: dict[str, Any]) -> None:
            _index(data, from_job, workflow_id)
            child = data["jobs"][_index(data, to_job, workflow_id)]
            needs = list(child.get("depends_on", []))
            if from_job not in needs:
                child["depends_on"] = [*needs, from_job]

        return self._edit(
            principal, workflow_id, WorkflowChange.EDGE_ADDED, edit, expected_version, ip
        )

    def remove_workflow_edge(
        self,
        principal: Principal,
        workflow_id: str,
        from_job: str,
        to_job: str,
        *,
        expected_version: int = 0,
        ip: str = "",
    ) -> workflows_pb2.WorkflowVersion:
        """Removes the dependency of ``to_job`` on ``from_job``."""

        def edit(data: dict[str, Any]) -> None:
            child = data["jobs"][_index(data, to_job, workflow_id)]
            needs = list(child.get("depends_on", []))
            if from_job not in needs:
                raise NotFound(
                    f"job {to_job!r} of workflow {workflow_id!r} does not depend on {from_job!r}"
                )
            child["depends_on"] = [p for p in needs if p != from_job]

        return self._edit(
            principal, workflow_id, WorkflowChange.EDGE_REMOVED, edit, expected_version, ip
        )

    # ------------------------------------------------------------ export and import

    def export_workflows(
        self, principal: Principal, workflow_id: str = ""
    ) -> workflows_pb2.ExportWorkflowsResponse:
        """The current definitions (one, or all of the org by id) as YAML documents."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> list[WorkflowDef]:
            q = select(workflows.c.id, workflows.c.version, workflows.c.definition).where(
                workflows.c.org_id == org
            )
            if workflow_id:
                q = q.where(workflows.c.id == workflow_id)
            rows = conn.execute(q.order_by(workflows.c.id)).all()
            if workflow_id and not rows:
                raise NotFound(f"workflow {workflow_id!r} not found")
            return [
                self._definition(org, r.id, r.version, functools.partial(dict, r.definition))
                for r in rows
            ]

        found = self._read(tx)
        return workflows_pb2.ExportWorkflowsResponse(text=dump_documents(found), count=len(found))

    def import_workflows(
        self, principal: Principal, text: str, *, dry_run: bool = False, ip: str = ""
    ) -> workflows_pb2.ImportWorkflowsResponse:
        """Validates every document whole; stores all of them in one
        transaction or, when one is refused, none (the error names each bad
        workflow and job). ``dry_run`` answers what would be done."""
        org = principal.org_id
        try:
            found, errors = parse_documents(text, source="text")
        except DefinitionError as exc:
            raise InvalidArgument(str(exc)) from None
        if errors:
            raise InvalidArgument("; ".join(str(exc) for exc in errors))

        def plan(conn: Connection) -> list[workflows_pb2.ImportedWorkflow]:
            out = []
            for wdef in found:
                row = conn.execute(
                    select(workflows.c.version, workflows.c.fingerprint).where(
                        workflows.c.org_id == org, workflows.c.id == wdef.id
                    )
                ).first()
                if row is not None and row.fingerprint == wdef.fingerprint():
                    action, version = workflows_pb2.IMPORT_ACTION_UNCHANGED, int(row.version)
                else:
                    action = (
                        workflows_pb2.IMPORT_ACTION_CREATED
                        if row is None
                        else workflows_pb2.IMPORT_ACTION_UPDATED
                    )
                    version = self._next_version(conn, org, wdef.id, row)
                out.append(
                    workflows_pb2.ImportedWorkflow(
                        workflow_id=wdef.id, action=action, version=version
                    )
                )
            return out

        if dry_run:
            answer = self._read(lambda conn, _now: plan(conn))
            return workflows_pb2.ImportWorkflowsResponse(workflows=answer, dry_run=True)

        def tx(conn: Connection, now: int) -> tuple[list[workflows_pb2.ImportedWorkflow], Effects]:
            out: dict[str, workflows_pb2.ImportedWorkflow] = {}
            # In id order: two transactions lock the workflows they share in one order.
            for wdef in sorted(found, key=lambda w: w.id):
                row = self._locked_workflow(conn, org, wdef.id)
                version, new = self._save_definition(
                    conn,
                    now,
                    org,
                    wdef,
                    source="import",
                    change=WorkflowChange.IMPORTED,
                    row=row,
                    locked=True,
                )
                if not new:
                    action = workflows_pb2.IMPORT_ACTION_UNCHANGED
                elif row is None:
                    action = workflows_pb2.IMPORT_ACTION_CREATED
                else:
                    action = workflows_pb2.IMPORT_ACTION_UPDATED
                out[wdef.id] = workflows_pb2.ImportedWorkflow(
                    workflow_id=wdef.id, action=action, version=version
                )
            return [out[wdef.id] for wdef in found], self._definition_effects(org)

        done = self._write(tx, Audit(principal, ip, AuditAction.WORKFLOW_IMPORT, "workflow:*"))
        for item in done:
            self._see_version(org, item.workflow_id, item.version)
        return workflows_pb2.ImportWorkflowsResponse(workflows=done, dry_run=False)

    # ------------------------------------------------------------ shared

    def _require(self, conn: Connection, org: str, workflow_id: str) -> Any:
        row = conn.execute(
            select(workflows).where(workflows.c.org_id == org, workflows.c.id == workflow_id)
        ).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return row

    def _locked(
        self, conn: Connection, org: str, workflow_id: str, expected_version: int = 0
    ) -> Any:
        """The workflow's row, held until the transaction ends; ABORTED when
        ``expected_version`` is given and is not the current version."""
        row = self._locked_workflow(conn, org, workflow_id)
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        if expected_version and row.version != expected_version:
            raise Aborted(
                f"workflow {workflow_id!r} is at version {row.version}, not "
                f"{expected_version}; read it again and retry the change"
            )
        return row

    def _current_definition(self, conn: Connection, org: str, workflow_id: str) -> WorkflowDef:
        row = self._require(conn, org, workflow_id)
        return self._definition(org, workflow_id, row.version, lambda: row.definition)

    def _version_row(
        self,
        conn: Connection,
        org: str,
        workflow_id: str,
        version: int,
        *,
        deleted_too: bool = False,
    ) -> Any:
        q = select(versions).where(
            versions.c.org_id == org,
            versions.c.workflow_id == workflow_id,
            versions.c.version == version,
        )
        if not deleted_too:
            q = q.where(versions.c.deleted_at_ms.is_(None))
        row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"version {version} of workflow {workflow_id!r} not found")
        return row

    def _enabled(self, conn: Connection, org: str, workflow_id: str) -> bool:
        """Whether the workflow exists and is enabled."""
        found = conn.execute(
            select(workflows.c.enabled).where(
                workflows.c.org_id == org, workflows.c.id == workflow_id
            )
        ).scalar()
        return bool(found)

    def _version_of(self, row: Any, enabled: bool) -> workflows_pb2.WorkflowVersion:
        wdef = self._definition(row.org_id, row.workflow_id, row.version, lambda: row.definition)
        found = workflows_pb2.WorkflowVersion(
            workflow_id=row.workflow_id,
            version=row.version,
            workflow=_workflow_message(wdef, row.version),
            created_at=timestamp(row.created_at_ms),
        )
        found.workflow.enabled = enabled
        return found

    def _edit(
        self,
        principal: Principal,
        workflow_id: str,
        change: WorkflowChange,
        edit: _Edit,
        expected_version: int,
        ip: str,
    ) -> workflows_pb2.WorkflowVersion:
        """Applies ``edit`` to the API form of the current definition and
        stores the result, validated whole, as a new version."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> tuple[int, Effects]:
            row = self._locked(conn, org, workflow_id, expected_version)
            current = self._definition(org, workflow_id, row.version, lambda: row.definition)
            data = to_api_mapping(current)
            edit(data)
            version, _ = self._save_definition(
                conn,
                now,
                org,
                _parsed(data, workflow_id, current),
                source="api",
                change=change,
                row=row,
                locked=True,
            )
            return version, self._definition_effects(org)

        return self._changed(principal, ip, workflow_id, tx)

    def _changed(
        self,
        principal: Principal,
        ip: str,
        workflow_id: str,
        tx: Callable[[Connection, int], tuple[int, Effects]],
    ) -> workflows_pb2.WorkflowVersion:
        org = principal.org_id
        audit = Audit(principal, ip, AuditAction.WORKFLOW_UPDATE, f"workflow:{workflow_id}")
        version = self._write(tx, audit)
        # Runs started here from now on are of this version.
        self._see_version(org, workflow_id, version)
        return self._read(
            lambda conn, _now: self._version_of(
                self._version_row(conn, org, workflow_id, version),
                self._enabled(conn, org, workflow_id),
            )
        )


def _parsed(data: dict[str, Any], workflow_id: str, base: WorkflowDef) -> WorkflowDef:
    """The edited API form ``data`` of ``base``, validated whole. The API form has no
    place for topic patterns and schedules (only event names, in ``trigger``): they are
    carried over from ``base``, which the edit leaves as they were."""
    try:
        parsed = parse_api_mapping(
            data, source=f"workflow {workflow_id!r}", workflow_id=workflow_id
        )
    except DefinitionError as exc:
        raise InvalidArgument(str(exc)) from None
    if parsed.trigger == base.trigger:
        parsed = dataclasses.replace(parsed, triggers=base.triggers)
    return parsed


def _find(
    data: dict[str, Any], job_id: str, workflow_id: str, *, missing_ok: bool = False
) -> dict[str, Any] | None:
    for job in data["jobs"]:
        if job["id"] == job_id:
            found: dict[str, Any] = job
            return found
    if missing_ok:
        return None
    raise NotFound(f"job {job_id!r} not found in workflow {workflow_id!r}")


def _index(data: dict[str, Any], job_id: str, workflow_id: str) -> int:
    for index, job in enumerate(data["jobs"]):
        if job["id"] == job_id:
            return index
    raise NotFound(f"job {job_id!r} not found in workflow {workflow_id!r}")


def _workflow_message(wdef: WorkflowDef, version: int) -> workflows_pb2.Workflow:
    return workflows_pb2.Workflow(
        id=wdef.id,
        name=wdef.name,
        trigger=wdef.trigger,
        version=version,
        env=dict(wdef.env),
        inputs=render.workflow_inputs(wdef.inputs),
        jobs=[render.job_from_def(job) for job in wdef.jobs],
    )


def _purge_runs(conn: Connection, org: str, workflow_id: str) -> int:
    """Deletes the workflow's runs and everything of theirs, a round of runs at a time."""
    purged = 0
    while True:
        run_ids: Sequence[str] = (
            conn.execute(
                select(runs.c.id)
                .where(runs.c.org_id == org, runs.c.workflow_id == workflow_id)
                .limit(PURGE_BATCH)
            )
            .scalars()
            .all()
        )
        if not run_ids:
            return purged
        job_ids = select(jobs.c.id).where(jobs.c.run_id.in_(run_ids))
        conn.execute(delete(log_chunks).where(log_chunks.c.run_id.in_(run_ids)))
        conn.execute(delete(leases).where(leases.c.run_id.in_(run_ids)))
        conn.execute(delete(edges).where(edges.c.child_id.in_(job_ids)))
        conn.execute(delete(jobs).where(jobs.c.run_id.in_(run_ids)))
        conn.execute(delete(runs).where(runs.c.id.in_(run_ids)))
        purged += len(run_ids)


__all__ = ["LifecycleOps"]
