"""Workflows: stored with a version per change of definition, listed and read
with their latest run's jobs."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, exists, or_, select, update

from trellis.server.core import _sql
from trellis.server.core.errors import InvalidArgument, NotFound
from trellis.server.core.eventlog import EventType
from trellis.server.core.pagination import after_key
from trellis.server.core.principal import Principal
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects, Events, jobs, new_id, runs
from trellis.server.engine._states import AuditAction
from trellis.server.engine.definitions import (
    DefinitionError,
    WorkflowDef,
    load_dir,
    parse_request,
)
from trellis.server.engine.service._base import Audit, Base, versions, workflows
from trellis.v1 import jobs_pb2, workflows_pb2

# The documented default of GET /api/workflows, and every listing's cap.
WORKFLOWS_PAGE_SIZE = 100
MAX_WORKFLOWS_PAGE = 1000

log = logging.getLogger(__name__)


class WorkflowOps(Base):
    def load_workflows(self, org: str, directory: Path) -> list[DefinitionError]:
        """Stores each valid file of ``directory`` (a new version when changed)."""
        defs, errors = load_dir(directory)
        for wdef in defs:
            self._store_workflow(org, wdef, source=f"file:{directory / wdef.id}")
        for err in errors:
            log.error("workflow not loaded: %s", err)
        return errors

    def _store_workflow(
        self, org: str, wdef: WorkflowDef, *, source: str, audit: Audit | None = None
    ) -> workflows_pb2.Workflow:
        """Creates the workflow or, when its definition changed, a new version."""

        def tx(conn: Connection, now: int) -> tuple[int, Effects]:
            fp = wdef.fingerprint()
            row = conn.execute(
                select(workflows.c.version, workflows.c.fingerprint).where(
                    workflows.c.org_id == org, workflows.c.id == wdef.id
                )
            ).first()
            if row is not None and row.fingerprint == fp:
                return row.version, Effects()
            version = 1 if row is None else row.version + 1
            body = wdef.to_json()
            conn.execute(
                versions.insert().values(
                    org_id=org,
                    workflow_id=wdef.id,
                    version=version,
                    fingerprint=fp,
                    definition=body,
                    created_at_ms=now,
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
                conn.execute(
                    update(workflows)
                    .where(workflows.c.org_id == org, workflows.c.id == wdef.id)
                    .values(**values)
                )
            effects = Effects()
            ev = Events(org, now)
            ev.add(
                "",
                EventType.WORKFLOW_CREATED if row is None else EventType.WORKFLOW_UPDATED,
                workflow_id=wdef.id,
                workflow_version=version,
                data={"name": wdef.name, "source": source},
            )
            with _sql.pipelined(conn) as batch:
                ev.flush(batch, effects)
            return version, effects

        version = self._write(tx, audit)
        # Runs started here from now on are of this version.
        self._see_version(org, wdef.id, version)
        return self._get_workflow(org, wdef.id)

    def create_workflow(
        self,
        principal: Principal,
        request: workflows_pb2.CreateWorkflowRequest,
        *,
        ip: str = "",
    ) -> workflows_pb2.Workflow:
        """Validates a definition whole and stores it; nothing is stored on error."""
        try:
            wdef = parse_request(request, new_id=new_id)
        except DefinitionError as exc:
            raise InvalidArgument(str(exc)) from exc
        audit = Audit(principal, ip, AuditAction.WORKFLOW_CREATE, f"workflow:{wdef.id}")
        return self._store_workflow(principal.org_id, wdef, source="api", audit=audit)

    def list_workflows(
        self,
        principal: Principal,
        *,
        status: str = "",
        limit: int | None = None,
        offset: int = 0,
        page_size: int = 0,
        page_token: str = "",
    ) -> workflows_pb2.ListWorkflowsResponse:
        """The org's workflows by id, a page at a time: either by ``limit`` and
        ``offset`` (the documented REST paging) or by signed page tokens bound
        to the org and ``status``, which workflows created meanwhile cannot shift."""
        org = principal.org_id
        if status and status not in render.STATUS_FILTER:
            raise InvalidArgument(
                f"status: unknown job status {status!r}; expected one of "
                + ", ".join(render.STATUS_FILTER)
            )
        if page_token and (limit is not None or offset):
            raise InvalidArgument("page_token: not together with limit or offset")
        if limit is not None:
            size = min(limit, MAX_WORKFLOWS_PAGE)
        else:
            size = self._page_size(page_size, WORKFLOWS_PAGE_SIZE, MAX_WORKFLOWS_PAGE)
        scope = f"workflows\x00{org}\x00{status}"
        after = self._after(scope, page_token)

        def tx(conn: Connection, now: int) -> workflows_pb2.ListWorkflowsResponse:
            q = select(workflows).where(workflows.c.org_id == org)
            if status:
                has = exists().where(
                    jobs.c.run_id == workflows.c.latest_run_id,
                    jobs.c.state.in_(render.STATUS_FILTER[status]),
                )
                q = q.where(
                    or_(has, workflows.c.latest_run_id.is_(None)) if status == "queued" else has
                )
            if after is not None:
                q = q.where(after_key([workflows.c.id], after, descending=[False]))
            q = q.order_by(workflows.c.id).limit(size + 1).offset(max(0, offset))
            rows = conn.execute(q).all()
            found = self._render_workflows(conn, org, rows[:size], now)
            resp = workflows_pb2.ListWorkflowsResponse(workflows=found)
            if len(rows) > size and limit is None:
                resp.next_page_token = self._tokens().encode(scope, (str(rows[size - 1].id),))
            return resp

        return self._read(tx)

    def get_workflow(self, principal: Principal, workflow_id: str) -> workflows_pb2.Workflow:
        return self._get_workflow(principal.org_id, workflow_id)

    def _get_workflow(self, org: str, workflow_id: str) -> workflows_pb2.Workflow:
        def tx(conn: Connection, now: int) -> workflows_pb2.Workflow:
            row = conn.execute(
                select(workflows).where(workflows.c.org_id == org, workflows.c.id == workflow_id)
            ).first()
            if row is None:
                raise NotFound(f"workflow {workflow_id!r} not found")
            return self._render_workflows(conn, org, [row], now)[0]

        return self._read(tx)

    def _render_workflows(
        self, conn: Connection, org: str, rows: Sequence[Any], now: int
    ) -> list[workflows_pb2.Workflow]:
        run_ids = [r.latest_run_id for r in rows if r.latest_run_id]
        jobs_by_run: dict[str, list[jobs_pb2.Job]] = {}
        run_states: dict[str, str] = {}
        if run_ids:
            found = conn.execute(
                select(jobs)
                .where(jobs.c.run_id.in_(run_ids))
                .order_by(jobs.c.run_id, jobs.c.position)
            ).mappings()
            for job, row in self._jobs_of(conn, now, org, found):
                jobs_by_run.setdefault(row["run_id"], []).append(job)
            run_states = dict(
                conn.execute(select(runs.c.id, runs.c.state).where(runs.c.id.in_(run_ids))).all()
            )
        out = []
        for r in rows:
            wdef = self._definition(
                r.org_id, r.id, r.version, functools.partial(dict, r.definition)
            )
            msg = workflows_pb2.Workflow(
                id=r.id,
                name=wdef.name,
                trigger=wdef.trigger,
                version=r.version,
                env=dict(wdef.env),
                inputs=render.workflow_inputs(wdef.inputs),
            )
            if r.latest_run_id:
                msg.run_id = r.latest_run_id
                msg.run_state = render.RUN_STATES[run_states[r.latest_run_id]]
                msg.jobs.extend(jobs_by_run.get(r.latest_run_id, []))
            else:
                msg.jobs.extend(render.job_from_def(j) for j in wdef.jobs)
            out.append(msg)
        return out


__all__ = ["WorkflowOps"]
