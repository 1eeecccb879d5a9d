"""Storing a workflow's definition: every change is a new version, written in
the transaction of the change, guarded against concurrent edits, and made
known to the workflow's event log from inside that transaction."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, func, select, update

from trellis.server.core import _sql
from trellis.server.core.errors import Aborted
from trellis.server.core.eventlog import EventBatch, EventType, topic_events
from trellis.server.engine._machine import Effects
from trellis.server.engine.definitions import WorkflowDef
from trellis.server.engine.service._base import Base, versions, workflows
from trellis.server.engine.service._triggers import index_triggers


class WorkflowChange(StrEnum):
    """What changed about a workflow."""

    CREATED = "created"
    UPDATED = "updated"
    REVERTED = "reverted"
    CLONED = "cloned"
    IMPORTED = "imported"
    JOB_ADDED = "job_added"
    JOB_UPDATED = "job_updated"
    JOB_RENAMED = "job_renamed"
    JOB_REMOVED = "job_removed"
    EDGE_ADDED = "edge_added"
    EDGE_REMOVED = "edge_removed"
    ENABLED = "enabled"
    DISABLED = "disabled"
    DELETED = "deleted"


_EVENT_TYPES = {
    WorkflowChange.CREATED: EventType.WORKFLOW_CREATED,
    WorkflowChange.ENABLED: EventType.WORKFLOW_ENABLED,
    WorkflowChange.DISABLED: EventType.WORKFLOW_DISABLED,
    WorkflowChange.DELETED: EventType.WORKFLOW_DELETED,
}
"""Every other change is a new version: WORKFLOW_UPDATED."""


class DefinitionStore(Base):
    def _workflow_changed(
        self,
        conn: Connection,
        now: int,
        org: str,
        workflow_id: str,
        version: int,
        change: WorkflowChange,
        *,
        created: bool = False,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Every change of a workflow (a new version of its definition, enabled or
        disabled, deleted) passes here, inside the transaction that makes it and
        only when something did change: the one place where the workflow's event
        is appended to the event log, so that it commits or rolls back with the
        change itself."""
        events = EventBatch(org, now)
        events.add(
            "",
            EventType.WORKFLOW_CREATED
            if created
            else _EVENT_TYPES.get(change, EventType.WORKFLOW_UPDATED),
            workflow_id=workflow_id,
            workflow_version=version,
            data={"change": str(change), **(data or {})},
        )
        with _sql.pipelined(conn) as batch:
            events.write(batch)

    @staticmethod
    def _definition_effects(org: str) -> Effects:
        """The wake-ups of a transaction that may have changed definitions: the
        organization's event followers (a wake-up with nothing new is harmless)."""
        return Effects(topics={topic_events(org)})

    def _locked_workflow(self, conn: Connection, org: str, workflow_id: str) -> Any:
        """The workflow's row, locked against concurrent changes until the
        transaction ends (SQLite's writers are serialised anyway); None when
        there is no such workflow."""
        return conn.execute(
            select(workflows)
            .where(workflows.c.org_id == org, workflows.c.id == workflow_id)
            .with_for_update()
        ).first()

    def _next_version(self, conn: Connection, org: str, workflow_id: str, row: Any) -> int:
        """The number of the workflow's next version. A workflow deleted and
        created again goes on from its last version, which stays stored for
        its runs: a (workflow, version) pair always means one definition."""
        if row is not None:
            return int(row.version) + 1
        last = conn.execute(
            select(func.max(versions.c.version)).where(
                versions.c.org_id == org, versions.c.workflow_id == workflow_id
            )
        ).scalar()
        return int(last or 0) + 1

    def _save_definition(
        self,
        conn: Connection,
        now: int,
        org: str,
        wdef: WorkflowDef,
        *,
        source: str,
        change: WorkflowChange | None = None,
        expected_version: int = 0,
        row: Any = None,
        locked: bool = False,
    ) -> tuple[int, bool]:
        """Stores ``wdef`` as the workflow's current definition; answers its
        version and whether that is a new one (an equal definition stores
        nothing). ``row`` is the workflow's row when the caller has locked it
        already (``locked``). With ``expected_version``, refused (ABORTED)
        unless that is the current version."""
        if not locked:
            row = self._locked_workflow(conn, org, wdef.id)
        if expected_version and (row is None or row.version != expected_version):
            current = "it does not exist" if row is None else f"it is at version {row.version}"
            raise Aborted(
                f"workflow {wdef.id!r} is not at version {expected_version} ({current}); "
                "read it again and retry the change"
            )
        fp = wdef.fingerprint()
        if row is not None and row.fingerprint == fp:
            return int(row.version), False
        version = self._next_version(conn, org, wdef.id, row)
        body = wdef.to_json()
        conn.execute(
            versions.insert().values(
                org_id=org,
                workflow_id=wdef.id,
                version=version,
                fingerprint=fp,
                definition=body,
                created_at_ms=now,
                deleted_at_ms=None,
            )
        )
        values = {
            "name": wdef.name,
            "version": version,
            "fingerprint": fp,
            "definition": body,
            "source": source,
            "updated_at_ms": now,
        }
        if row is None:
            conn.execute(
                workflows.insert().values(
                    org_id=org, id=wdef.id, created_at_ms=now, latest_run_id=None, **values
                )
            )
        else:
            # Compare-and-set: the row is locked on PostgreSQL, but a version
            # that moved on would otherwise be overwritten unseen.
            moved = conn.execute(
                update(workflows)
                .where(
                    workflows.c.org_id == org,
                    workflows.c.id == wdef.id,
                    workflows.c.version == row.version,
                )
                .values(**values)
            )
            if moved.rowcount != 1:
                raise Aborted(f"workflow {wdef.id!r} changed meanwhile; retry the change")
        index_triggers(conn, org, wdef, now)
        if change is None:
            change = WorkflowChange.CREATED if row is None else WorkflowChange.UPDATED
        self._workflow_changed(
            conn,
            now,
            org,
            wdef.id,
            version,
            change,
            created=row is None,
            data={"name": wdef.name, "source": source},
        )
        return version, True


__all__ = ["DefinitionStore", "WorkflowChange"]
