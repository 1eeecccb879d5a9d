"""Runs beyond their first try: retried as a next attempt, started from an
inline definition (ad hoc), and measured against earlier runs (progress)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from trellis.server.core import _sql
from trellis.server.core.errors import FailedPrecondition, Forbidden, InvalidArgument
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects, NewRun, jobs, new_id
from trellis.server.engine._machine.recovery import retry_run, rollback_run, stored_definition
from trellis.server.engine._states import TERMINAL, AuditAction, JobState, RunState
from trellis.server.engine.definitions import (
    DefinitionError,
    InputError,
    parse_message,
    parse_text,
)
from trellis.server.engine.service._base import Audit, Base, versions, workflows
from trellis.server.engine.service._runs import _run_row
from trellis.server.engine.service._starts import check_parallel_limit
from trellis.v1 import runs_pb2, workflows_pb2

# The prefix of the workflow id an ad-hoc run's definition is stored under.
ADHOC_PREFIX = "adhoc-"
# What defining a workflow takes (CreateWorkflow's scope).
WRITE_SCOPE = "workflows:write"
# How many of the latest succeeded runs of a workflow version the estimate of
# a run's time left draws on.
ESTIMATE_RUNS = 20

_SUCCEEDED_RUNS = _sql.Sql(
    f"""SELECT id FROM runs
    WHERE org_id = :org AND workflow_id = :workflow_id AND workflow_version = :version
        AND state = '{RunState.SUCCEEDED}' AND id <> :run_id
    ORDER BY created_at_ms DESC LIMIT :n"""
)
_DURATIONS = _sql.Sql(
    f"""SELECT "key", finished_at_ms - started_at_ms AS ms FROM jobs
    WHERE run_id IN_LIST(:run_ids) AND state = '{JobState.SUCCEEDED}' AND started_at_ms > 0"""
)


class RecoveryOps(Base):
    def retry_run(self, principal: Principal, run_id: str, *, ip: str = "") -> runs_pb2.Run:
        """Starts the next attempt of a finished run (see ``machine.retry_run``)."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> tuple[runs_pb2.Run, Effects]:
            # A retry runs the workflow again: a disabled one may not (an
            # ad-hoc run has no workflow to disable).
            disabled = conn.execute(
                select(workflows.c.id).where(
                    workflows.c.org_id == org,
                    workflows.c.id == _run_row(conn, org, run_id)["workflow_id"],
                    workflows.c.enabled.is_(False),
                )
            ).first()
            if disabled is not None:
                raise FailedPrecondition(
                    f"workflow {disabled.id!r} is disabled; enable it to retry its runs"
                )
            _, effects = retry_run(conn, is_pg=self.db.is_postgres, org=org, run_id=run_id, now=now)
            return render.run_from_row(_run_row(conn, org, run_id)), effects

        return self._write(tx, Audit(principal, ip, AuditAction.RUN_RETRY, f"run:{run_id}"))

    def rollback_run(
        self, principal: Principal, run_id: str, job_ids: Sequence[str] = (), *, ip: str = ""
    ) -> runs_pb2.Run:
        """Starts a rollback of a finished run: of its succeeded jobs' compensations,
        or of ``job_ids``' alone (see ``machine.start_rollback``)."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> tuple[runs_pb2.Run, Effects]:
            def definition(run: Any) -> Any:
                return self._definition(
                    org,
                    run.workflow_id,
                    run.workflow_version,
                    lambda: stored_definition(conn, org, run).to_json(),
                )

            effects = rollback_run(
                conn,
                is_pg=self.db.is_postgres,
                org=org,
                run_id=run_id,
                job_keys=list(job_ids),
                now=now,
                definition=definition,
            )
            return render.run_from_row(_run_row(conn, org, run_id)), effects

        return self._write(tx, Audit(principal, ip, AuditAction.RUN_ROLLBACK, f"run:{run_id}"))

    def create_adhoc_run(
        self,
        principal: Principal,
        workflow: workflows_pb2.Workflow | str | None,
        inputs: Mapping[str, Any],
        *,
        parallel_limit: int = 0,
        ip: str = "",
    ) -> runs_pb2.Run:
        """Starts a run of an inline definition, checked whole first.

        The definition is stored as version 1 of the workflow ``adhoc-<run
        id>`` in the versions table alone: every reader of runs finds it, and
        no listing of workflows shows it. Nothing is stored when it is refused.
        """
        org = principal.org_id
        # An ad-hoc run defines what it runs: the right to run stored
        # workflows (the method's scope) is not enough.
        if not principal.allows(WRITE_SCOPE):
            raise Forbidden(f"an ad-hoc run defines a workflow: it needs {WRITE_SCOPE} too")
        check_parallel_limit(parallel_limit)
        if workflow is None:
            raise InvalidArgument("workflow: required (or source)")
        run_id = new_id()
        workflow_id = ADHOC_PREFIX + run_id
        try:
            if isinstance(workflow, str):
                wdef = parse_text(workflow, source="api", workflow_id=workflow_id)
            else:
                given = workflows_pb2.Workflow()
                given.CopyFrom(workflow)
                given.ClearField("id")
                wdef = parse_message(given, workflow_id=workflow_id)
            resolved = wdef.resolve_inputs(inputs)
        except (DefinitionError, InputError) as exc:
            raise InvalidArgument(str(exc)) from exc
        audit = Audit(principal, ip, AuditAction.WORKFLOW_RUN, f"workflow:{workflow_id}")

        def tx(conn: Connection, now: int) -> tuple[dict[str, Any], Effects]:
            conn.execute(
                versions.insert().values(
                    org_id=org,
                    workflow_id=workflow_id,
                    version=1,
                    fingerprint=wdef.fingerprint(),
                    definition=wdef.to_json(),
                    created_at_ms=now,
                )
            )
            new = NewRun(
                wdef,
                1,
                resolved or None,
                parallel_limit=parallel_limit or wdef.parallel_limit,
                run_id=run_id,
            )
            created, effects = machine.create_runs(conn, org=org, new=[new], now=now)
            return created[0], effects

        return render.run_from_row(self._write(tx, audit))

    def run_progress(self, principal: Principal, run_id: str) -> runs_pb2.RunProgress:
        """The run's jobs done of all, its current jobs, and the time left as
        the longest chain of its unfinished jobs, each at its median duration
        in the last ``ESTIMATE_RUNS`` succeeded runs of the same version."""
        org = principal.org_id

        def tx(conn: Connection, now: int) -> runs_pb2.RunProgress:
            run = _run_row(conn, org, run_id)
            rows = conn.execute(
                select(jobs.c.key, jobs.c.state, jobs.c.parents, jobs.c.started_at_ms)
                .where(jobs.c.run_id == run_id)
                .order_by(jobs.c.position)
            ).all()
            out = runs_pb2.RunProgress(
                run_id=run_id,
                state=render.RUN_STATES[run["state"]],
                attempt=run["attempt"],
                jobs_total=len(rows),
                jobs_done=sum(1 for r in rows if r.state in TERMINAL),
                jobs_succeeded=sum(1 for r in rows if r.state == JobState.SUCCEEDED),
                jobs_failed=sum(1 for r in rows if r.state == JobState.FAILED),
                running_jobs=[r.key for r in rows if r.state == JobState.RUNNING],
                queued_jobs=[r.key for r in rows if r.state == JobState.QUEUED],
            )
            earlier = [
                r.id
                for r in _sql.query(
                    conn,
                    _SUCCEEDED_RUNS,
                    org=org,
                    workflow_id=run["workflow_id"],
                    version=run["workflow_version"],
                    run_id=run_id,
                    n=ESTIMATE_RUNS,
                )
            ]
            out.estimate_sample_runs = len(earlier)
            if earlier and run["state"] == RunState.RUNNING:
                durations: dict[str, list[int]] = defaultdict(list)
                for key, ms in _sql.query(conn, _DURATIONS, run_ids=earlier):
                    durations[key].append(int(ms))
                medians = {k: statistics.median(v) for k, v in durations.items()}
                left = _time_left(rows, medians, now)
                if left is not None:
                    out.estimated_secs_left = round(left / 1000)
            return out

        return self._read(tx)


def _time_left(rows: Sequence[Any], medians: Mapping[str, float], now: int) -> float | None:
    """Milliseconds until the last of the unfinished jobs ends, each starting
    when its parents end and taking its median (a running one: less the time
    it has run); None when a job has no median."""
    by_key = {r.key: r for r in rows}
    children: dict[str, list[str]] = defaultdict(list)
    waiting = {r.key: len(r.parents) for r in rows}
    for r in rows:
        for parent in r.parents:
            children[parent].append(r.key)
    starts: dict[str, float] = defaultdict(float)
    ready = [r.key for r in rows if not r.parents]
    latest = 0.0
    while ready:
        key = ready.pop()
        row = by_key[key]
        if row.state in TERMINAL:
            ends = 0.0
        else:
            median = medians.get(key)
            if median is None:
                return None
            if row.state == JobState.RUNNING:
                ends = max(0.0, median - (now - row.started_at_ms))
            else:
                ends = starts[key] + median
        latest = max(latest, ends)
        for child in children[key]:
            starts[child] = max(starts[child], ends)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return latest


__all__ = ["ADHOC_PREFIX", "RecoveryOps"]
