"""The service layer: every operation of Trellis, over one database.

The gRPC servicers (and through them the REST bridge) are thin edges over
this class. Each state change is one transaction; wake-ups are fired only
after it commits. Results are the contract's messages.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, exists, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from trellis.server.core import _sql
from trellis.server.core._group_commit import GroupCommit, Member
from trellis.server.core.db import Database
from trellis.server.core.errors import InvalidArgument, NotFound, TrellisError, Unavailable
from trellis.server.core.models import WorkflowRow, WorkflowVersionRow, table
from trellis.server.engine import _render as render
from trellis.server.engine import _scheduler as sched
from trellis.server.engine._capabilities import (
    MAX_HANDLER_CHARS,
    MAX_HANDLERS,
    Capabilities,
    Fleet,
    commands_of,
)
from trellis.server.engine._expiry import ExpiryAlarm
from trellis.server.engine._notify import Mailbox, Notifier, Subscription
from trellis.server.engine.definitions import (
    DefinitionError,
    WorkflowDef,
    load_dir,
    parse_request,
)
from trellis.v1 import jobs_pb2, logs_pb2, runs_pb2, workers_pb2, workflows_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

workflows = table(WorkflowRow)
versions = table(WorkflowVersionRow)
jobs, runs, leases, events = sched.jobs, sched.runs, sched.leases, sched.events
workers, log_chunks = sched.workers, sched.log_chunks

DEFAULT_TTL_SECS = 30
MAX_TTL_SECS = 3600
MAX_WAIT_SECS = 60
MAX_BATCH = 500
MAX_SLOTS = 1000
MAX_CHUNK_BYTES = 1 << 20
DEFINITION_CACHE_SIZE = 256
STREAM_NAMES = {logs_pb2.LOG_STREAM_STDOUT: "stdout", logs_pb2.LOG_STREAM_STDERR: "stderr"}
_RETRYABLE_PG_CODES = {"40001", "40P01"}  # serialization failure, deadlock
_OFFSET_TOKEN = re.compile(r"[0-9]{1,19}")

_WORKFLOW_VERSION = _sql.Sql(
    "SELECT version FROM workflows WHERE org_id = :org AND id = :workflow_id"
)
_SET_LATEST_RUN = _sql.Sql(
    "UPDATE workflows SET latest_run_id = :run_id WHERE org_id = :org AND id = :workflow_id"
)
_LEASE_STATES = _sql.Sql("SELECT id, state FROM leases WHERE id IN_LIST(:ids)")
# The tries at a run's jobs: their leases, but for those handed back
# undelivered (which never reached a worker).
_ATTEMPTS_OF_RUN = _sql.Sql(
    """SELECT job_id, id, attempt, worker_id, granted_at_ms, finished_at_ms, state, error
    FROM leases WHERE job_id IN (SELECT id FROM jobs WHERE run_id = :run_id)
        AND state <> 'released'
    ORDER BY job_id, attempt"""
)


@dataclass(frozen=True)
class _Reports:
    """Results reported in one call, by the principal ``owner`` of ``org``."""

    org: str
    owner: str
    results: Sequence[sched.Result]


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, for the audit log."""

    subject: str
    kind: str
    ip: str = ""


_INSERT_AUDIT = _sql.Insert(
    "audit_events",
    {
        "org_id": "text",
        "at_ms": "bigint",
        "actor": "text",
        "actor_kind": "text",
        "action": "text",
        "resource": "text",
        "result": "text",
        "ip": "text",
        "detail": "json",
    },
)


@dataclass(frozen=True)
class _Audit:
    org: str
    actor: Actor
    action: str
    resource: str

    def row(self, now: int, result: str, detail: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "org_id": self.org,
            "at_ms": now,
            "actor": self.actor.subject[:200],
            "actor_kind": self.actor.kind[:16],
            "action": self.action,
            "resource": self.resource[:300],
            "result": result,
            "ip": self.actor.ip[:64],
            "detail": _sql.to_json(dict(detail)),
        }


class Service:
    """All of Trellis' behaviour; safe to call from many threads at once."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        *,
        poll_interval: float = 2.0,
        offline_after_ms: int = 60_000,
        max_lost_leases: int = 3,
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.poll_interval = poll_interval
        self.offline_after_ms = offline_after_ms
        self.max_lost_leases = max_lost_leases
        self._expiry = ExpiryAlarm()
        self._closing = threading.Event()
        self._defs: OrderedDict[tuple[str, str, int], WorkflowDef] = OrderedDict()
        self._defs_lock = threading.Lock()
        # Concurrent claims, and concurrent reports, share transactions.
        self._claims = GroupCommit(self._claim_group)
        self._reports = GroupCommit(self._report_group)

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Ends every stream and long poll this service is serving."""
        self._closing.set()
        self.notifier.wake_all()
        self._expiry.close()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def _write(
        self,
        fn: Callable[[Connection, int], tuple[T, sched.Effects]],
        audit: _Audit | None = None,
        *,
        audited: bool = False,
    ) -> T:
        """Runs ``fn`` in one write transaction, then fires its wake-ups.

        Jobs the transaction made ready are first offered to waiting claimers
        of this replica, leased to them in the same transaction (``_dispatch``)
        and delivered once it has committed. With ``audit``, the change and
        its audit event commit together (``fn`` writes it itself when
        ``audited``); a refused change is audited on its own.
        """
        for attempt in range(5):
            promised: list[Subscription] = []
            try:
                with self.db.write() as conn:
                    now = self.db.now_ms(conn)
                    result, effects = fn(conn, now)
                    if audit is not None and not audited:
                        _sql.insert(conn, _INSERT_AUDIT, [audit.row(now, "success", {})])
                    handed = self._dispatch(conn, now, effects, promised)
                break
            except TrellisError as exc:
                self._unreserve(promised)
                if audit is not None:
                    # After the rollback: SQLite has one writer at a time.
                    self._audit_refusal(audit, exc)
                raise
            except DBAPIError as exc:
                self._unreserve(promised)
                code = getattr(exc.orig, "sqlstate", None)
                if code in _RETRYABLE_PG_CODES and attempt < 4:
                    continue
                if isinstance(exc, OperationalError):
                    log.warning("database unavailable: %s", exc.orig)
                    raise Unavailable("database unavailable; try again") from exc
                raise
            except BaseException:
                self._unreserve(promised)
                raise
        self._fire(effects, now)
        self._deliver(promised, handed)
        return result

    def _claim_group(self, members: Sequence[Member[sched.ClaimAsk, list[sched.Claimed]]]) -> None:
        """Runs a group of claims in one transaction (see ``_group_commit``)."""
        asks = [m.work for m in members]
        granted = self._write(
            lambda conn, now: sched.claim(conn, is_pg=self.db.is_postgres, asks=asks, now=now)
        )
        for member, claimed in zip(members, granted, strict=True):
            member.succeed(claimed)

    def _report_group(self, members: Sequence[Member[_Reports, list[sched.Verdict]]]) -> None:
        """Runs a group of reports in one transaction, one judgement per org."""
        per_org: dict[str, list[Member[_Reports, list[sched.Verdict]]]] = defaultdict(list)
        for member in members:
            per_org[member.work.org].append(member)
        answers: dict[str, list[sched.Verdict]] = {}  # per org, in the order of its members

        def tx(conn: Connection, now: int) -> tuple[None, sched.Effects]:
            effects = sched.Effects()
            for org in sorted(per_org):
                group = per_org[org]
                verdicts, more = sched.report_results(
                    conn,
                    is_pg=self.db.is_postgres,
                    org=org,
                    reports=[(m.work.owner, res) for m in group for res in m.work.results],
                    now=now,
                )
                effects.merge(more)
                answers[org] = verdicts
            return None, effects

        self._write(tx)
        for org, group in per_org.items():
            start = 0
            for m in group:
                m.succeed(answers[org][start : start + len(m.work.results)])
                start += len(m.work.results)

    def _audit_refusal(self, audit: _Audit, exc: TrellisError) -> None:
        """Records a refused change in a transaction of its own (the caller's
        is about to roll back)."""
        try:
            with self.db.write() as conn:
                row = audit.row(self.db.now_ms(conn), "failure", {"error": str(exc)[:500]})
                _sql.insert(conn, _INSERT_AUDIT, [row])
        except Exception:
            log.warning("could not audit a refused %s", audit.action, exc_info=True)

    def _dispatch(
        self,
        conn: Connection,
        now: int,
        effects: sched.Effects,
        promised: list[Subscription],
    ) -> list[tuple[Subscription, sched.Claimed]]:
        """Leases the ready jobs of ``effects`` to claimers waiting here with
        free slots; ``promised`` collects the reservations made (released by
        the caller if the transaction fails)."""
        handed: list[tuple[Subscription, sched.Claimed]] = []
        if not effects.ready_runs:
            return handed
        for (org, key, command), n in list(effects.ready.items()):
            subs = self.notifier.reserve((org, key, command), n)
            if not subs:
                continue
            promised.extend(subs)
            to = [
                (sub.mailbox.worker_id, sub.mailbox.ttl_secs, sub.mailbox.owner)
                for sub in subs
                if sub.mailbox
            ]
            claimed = sched.dispatch(
                conn,
                is_pg=self.db.is_postgres,
                org=org,
                key=key,
                command=command,
                runs=effects.ready_runs,
                to=to,
                now=now,
                effects=effects,
            )
            handed.extend(zip(subs, claimed, strict=False))
        return handed

    def _unreserve(self, promised: list[Subscription]) -> None:
        for sub in promised:
            self.notifier.unreserve(sub)
        promised.clear()

    def _deliver(
        self, promised: list[Subscription], handed: list[tuple[Subscription, sched.Claimed]]
    ) -> None:
        """Puts committed hand-offs in their claimers' mailboxes (and settles
        the reservations that found no job); hands back what a claimer that
        has left meanwhile can no longer take."""
        if not promised:
            return
        per_sub: dict[Subscription, list[sched.Claimed]] = {sub: [] for sub in promised}
        for sub, claimed in handed:
            per_sub[sub].append(claimed)
        for sub, items in per_sub.items():
            undelivered = self.notifier.deliver(sub, promised.count(sub), items)
            if undelivered and sub.mailbox is not None:
                self._hand_back(sub.mailbox.org, undelivered)

    def _hand_back(self, org: str, undelivered: Sequence[sched.Claimed]) -> None:
        """Queues again jobs leased to a claimer that left before taking them."""
        if not undelivered:
            return
        try:
            self._write(
                lambda conn, now: (
                    None,
                    sched.release(
                        conn,
                        is_pg=self.db.is_postgres,
                        org=org,
                        lease_ids=[c.lease_id for c in undelivered],
                        now=now,
                    ),
                )
            )
        except Exception:  # the leases then expire and the reaper retries them
            log.warning(
                "could not hand back %d undelivered job(s)", len(undelivered), exc_info=True
            )

    def _read(self, fn: Callable[[Connection, int], T]) -> T:
        try:
            with self.db.read() as conn:
                return fn(conn, self.db.now_ms(conn))
        except OperationalError as exc:
            log.warning("database unavailable: %s", exc.orig)
            raise Unavailable("database unavailable; try again") from exc

    def _fire(self, effects: sched.Effects, now: int) -> None:
        self.notifier.fire(effects.topics, effects.ready)
        self._expiry.announce(effects.lease_expiry_ms)
        for ready_at, org, label_key, command in effects.timers:
            when = time.monotonic() + max(0, ready_at - now) / 1000
            self.notifier.fire_at(when, (org, label_key, command))

    # ------------------------------------------------------------ workflows

    def _definition(
        self, org: str, workflow_id: str, version: int, load: Callable[[], Any]
    ) -> WorkflowDef:
        """The parsed definition of one workflow version.

        A version never changes once stored, so parsed definitions are kept
        (a few hundred at most) rather than re-read and re-validated per run.
        """
        key = (org, workflow_id, version)
        with self._defs_lock:
            wdef = self._defs.get(key)
            if wdef is not None:
                self._defs.move_to_end(key)
                return wdef
        wdef = WorkflowDef.from_json(load())
        with self._defs_lock:
            self._defs[key] = wdef
            while len(self._defs) > DEFINITION_CACHE_SIZE:
                self._defs.popitem(last=False)
        return wdef

    def load_workflows(self, org: str, directory: Path) -> list[DefinitionError]:
        """Stores each valid file of ``directory`` (a new version when changed)."""
        defs, errors = load_dir(directory)
        for wdef in defs:
            self.store_workflow(org, wdef, source=f"file:{directory / wdef.id}")
        for err in errors:
            log.error("workflow not loaded: %s", err)
        return errors

    def store_workflow(
        self, org: str, wdef: WorkflowDef, *, source: str, actor: Actor | None = None
    ) -> workflows_pb2.Workflow:
        """Creates the workflow or, when its definition changed, a new version."""

        def tx(conn: Connection, now: int) -> tuple[int, sched.Effects]:
            fp = wdef.fingerprint()
            row = conn.execute(
                select(workflows.c.version, workflows.c.fingerprint).where(
                    workflows.c.org_id == org, workflows.c.id == wdef.id
                )
            ).first()
            if row is not None and row.fingerprint == fp:
                return row.version, sched.Effects()
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
            return version, sched.Effects()

        audit = _Audit(org, actor, "workflow.create", f"workflow:{wdef.id}") if actor else None
        self._write(tx, audit)
        return self.get_workflow(org, wdef.id)

    def create_workflow(
        self,
        org: str,
        request: workflows_pb2.CreateWorkflowRequest,
        *,
        actor: Actor | None = None,
    ) -> workflows_pb2.Workflow:
        """Validates a definition whole and stores it; nothing is stored on error."""
        try:
            wdef = parse_request(request, new_id=sched.new_id)
        except DefinitionError as exc:
            raise InvalidArgument(str(exc)) from exc
        return self.store_workflow(org, wdef, source="api", actor=actor)

    def list_workflows(
        self, org: str, *, limit: int = 100, offset: int = 0, status: str = ""
    ) -> list[workflows_pb2.Workflow]:
        limit = min(limit, 1000)
        if status and status not in render.STATUS_FILTER:
            raise InvalidArgument(
                f"status: unknown job status {status!r}; expected one of "
                + ", ".join(render.STATUS_FILTER)
            )

        def tx(conn: Connection, now: int) -> list[workflows_pb2.Workflow]:
            q = select(workflows).where(workflows.c.org_id == org)
            if status:
                has = exists().where(
                    jobs.c.run_id == workflows.c.latest_run_id,
                    jobs.c.state.in_(render.STATUS_FILTER[status]),
                )
                q = q.where(
                    or_(has, workflows.c.latest_run_id.is_(None)) if status == "queued" else has
                )
            rows = conn.execute(
                q.order_by(workflows.c.id).limit(limit).offset(max(0, offset))
            ).all()
            return self._render_workflows(conn, org, rows, now)

        return self._read(tx)

    def get_workflow(self, org: str, workflow_id: str) -> workflows_pb2.Workflow:
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
                id=r.id, name=wdef.name, trigger=wdef.trigger, version=r.version, env=dict(wdef.env)
            )
            if r.latest_run_id:
                msg.run_id = r.latest_run_id
                msg.run_state = render.RUN_STATES[run_states[r.latest_run_id]]
                msg.jobs.extend(jobs_by_run.get(r.latest_run_id, []))
            else:
                msg.jobs.extend(render.job_from_def(j) for j in wdef.jobs)
            out.append(msg)
        return out

    def _jobs_of(
        self, conn: Connection, now: int, org: str, rows: Iterable[Mapping[Any, Any]]
    ) -> list[tuple[jobs_pb2.Job, Mapping[Any, Any]]]:
        """The jobs of ``rows`` (of ``org``) as messages, each with its row;
        a queued job that no live worker can run says why it waits."""
        out = [(render.job_from_row(row, now), row) for row in rows]
        queued = [(msg, row) for msg, row in out if row["state"] == "queued"]
        if queued:
            live = conn.execute(
                select(workers.c.labels, workers.c.capabilities).where(
                    workers.c.org_id == org,
                    workers.c.last_heartbeat_ms >= now - self.offline_after_ms,
                )
            )
            fleet = Fleet((labels, Capabilities.from_json(caps)) for labels, caps in live)
            for msg, row in queued:
                msg.waiting_reason = fleet.waiting_reason(row["label_key"], row["command"])
        return out

    def run_workflow(
        self, org: str, workflow_id: str, *, actor: Actor | None = None
    ) -> runs_pb2.Run:
        def tx(conn: Connection, now: int) -> tuple[dict[str, Any], sched.Effects]:
            found = _sql.query(conn, _WORKFLOW_VERSION, org=org, workflow_id=workflow_id)
            if not found:
                raise NotFound(f"workflow {workflow_id!r} not found")
            version = found[0].version
            wdef = self._definition(
                org,
                workflow_id,
                version,
                lambda: conn.execute(
                    select(versions.c.definition).where(
                        versions.c.org_id == org,
                        versions.c.workflow_id == workflow_id,
                        versions.c.version == version,
                    )
                ).scalar_one(),
            )
            return sched.create_run(
                conn,
                org=org,
                wdef=wdef,
                version=version,
                now=now,
                also=lambda batch, run_id: also(batch, run_id, now),
            )

        def also(batch: _sql.Batch, run_id: str, now: int) -> None:
            batch.execute(_SET_LATEST_RUN, run_id=run_id, org=org, workflow_id=workflow_id)
            if audit is not None:
                # In the pipeline that stores the run: no round trip of its own.
                batch.insert(_INSERT_AUDIT, [audit.row(now, "success", {"run_id": run_id})])

        audit = _Audit(org, actor, "workflow.run", f"workflow:{workflow_id}") if actor else None
        # The run as created: what a re-read right after the commit would show.
        return render.run_from_row(self._write(tx, audit, audited=True))

    def cancel_workflow(
        self, org: str, workflow_id: str, *, actor: Actor | None = None
    ) -> runs_pb2.Run:
        """Cancels the workflow's latest run (a finished run is left as it is)."""
        latest = self._read(
            lambda conn, _now: conn.execute(
                select(workflows.c.latest_run_id).where(
                    workflows.c.org_id == org, workflows.c.id == workflow_id
                )
            ).first()
        )
        run_id = latest.latest_run_id if latest is not None else None
        if run_id is None:
            missing = NotFound(
                f"workflow {workflow_id!r} not found"
                if latest is None
                else f"workflow {workflow_id!r} has no run to cancel"
            )
            if actor is not None:
                self._audit_refusal(
                    _Audit(org, actor, "run.cancel", f"workflow:{workflow_id}"), missing
                )
            raise missing
        return self.cancel_run(org, run_id, actor=actor)

    # ------------------------------------------------------------ runs

    def get_run(self, org: str, run_id: str) -> runs_pb2.RunDetail:
        def tx(conn: Connection, now: int) -> runs_pb2.RunDetail:
            row = (
                conn.execute(select(runs).where(runs.c.id == run_id, runs.c.org_id == org))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            detail = runs_pb2.RunDetail(run=render.run_from_row(row))
            attempts: dict[int, list[jobs_pb2.JobAttempt]] = defaultdict(list)
            for lease in _sql.query(conn, _ATTEMPTS_OF_RUN, run_id=run_id):
                attempts[lease.job_id].append(render.attempt(lease))
            found = conn.execute(
                select(jobs).where(jobs.c.run_id == run_id).order_by(jobs.c.position)
            ).mappings()
            for msg, job in self._jobs_of(conn, now, org, found):
                msg.attempts.extend(attempts.get(job["id"], ()))
                detail.jobs.append(msg)
            return detail

        return self._read(tx)

    def list_runs(
        self, org: str, *, workflow_id: str = "", page_size: int = 50, page_token: str = ""
    ) -> runs_pb2.ListRunsResponse:
        page_size = max(1, min(page_size or 50, 1000))
        # Tokens are offsets; anything else, a negative one or one past the
        # databases' integers included, came from no previous response.
        offset = 0
        if page_token:
            offset = int(page_token) if _OFFSET_TOKEN.fullmatch(page_token) else -1
        if not 0 <= offset < 2**63:
            raise InvalidArgument("page_token: not a token from a previous response")

        def tx(conn: Connection, _now: int) -> runs_pb2.ListRunsResponse:
            q = select(runs).where(runs.c.org_id == org)
            if workflow_id:
                q = q.where(runs.c.workflow_id == workflow_id)
            rows = (
                conn.execute(
                    q.order_by(runs.c.created_at_ms.desc(), runs.c.id)
                    .limit(page_size + 1)
                    .offset(offset)
                )
                .mappings()
                .all()
            )
            resp = runs_pb2.ListRunsResponse(
                runs=[render.run_from_row(r) for r in rows[:page_size]]
            )
            if len(rows) > page_size:
                resp.next_page_token = str(offset + page_size)
            return resp

        return self._read(tx)

    def cancel_run(self, org: str, run_id: str, *, actor: Actor | None = None) -> runs_pb2.Run:
        def tx(conn: Connection, now: int) -> tuple[bool, sched.Effects]:
            exists_ = conn.execute(
                select(runs.c.id).where(runs.c.id == run_id, runs.c.org_id == org)
            ).first()
            if exists_ is None:
                raise NotFound(f"run {run_id!r} not found")
            return sched.cancel_run(conn, org=org, run_id=run_id, now=now)

        self._write(tx, _Audit(org, actor, "run.cancel", f"run:{run_id}") if actor else None)
        return self._run(org, run_id)

    def _run(self, org: str, run_id: str) -> runs_pb2.Run:
        def tx(conn: Connection, _now: int) -> runs_pb2.Run:
            row = (
                conn.execute(select(runs).where(runs.c.id == run_id, runs.c.org_id == org))
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"run {run_id!r} not found")
            return render.run_from_row(row)

        return self._read(tx)

    def run_events(
        self,
        org: str,
        run_id: str,
        *,
        after_id: int = 0,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[runs_pb2.RunEvent]:
        """Replays events after ``after_id`` and follows until the run finishes."""
        self._run(org, run_id)  # NOT_FOUND before the stream starts
        with self.notifier.subscribe(sched.topic_run(run_id)) as sub:
            while is_active() and not self.closing:
                rows = self._read(functools.partial(_events_after, run_id=run_id, after=after_id))
                for row in rows:
                    after_id = row["id"]
                    yield render.run_event(row)
                    if row["type"] == "RUN_FINISHED":
                        return
                if not rows:
                    sub.wait(self.poll_interval)

    # ------------------------------------------------------------ workers

    def register_worker(
        self,
        org: str,
        worker_id: str,
        labels: Sequence[str],
        capabilities: Capabilities | None = None,
    ) -> workers_pb2.Worker:
        _check_worker(worker_id, labels, capabilities)

        def tx(conn: Connection, now: int) -> tuple[None, sched.Effects]:
            with _sql.pipelined(conn) as batch:
                sched.touch_worker(
                    batch,
                    org=org,
                    worker_id=worker_id,
                    labels=labels,
                    capabilities=capabilities,
                    now=now,
                )
            return None, sched.Effects()

        self._write(tx)
        (worker,) = self._read(lambda conn, now: self._workers(conn, now, org, worker_id))
        return worker

    def list_workers(self, org: str) -> list[workers_pb2.Worker]:
        return self._read(lambda conn, now: self._workers(conn, now, org))

    def _workers(
        self, conn: Connection, now: int, org: str, worker_id: str | None = None
    ) -> list[workers_pb2.Worker]:
        """The org's workers (or one of them), idle, busy or offline."""
        held_q = select(leases.c.worker_id, leases.c.workflow_id, leases.c.job_key).where(
            leases.c.org_id == org, leases.c.state == "active"
        )
        workers_q = select(workers).where(workers.c.org_id == org)
        if worker_id is not None:
            held_q = held_q.where(leases.c.worker_id == worker_id)
            workers_q = workers_q.where(workers.c.worker_id == worker_id)
        held: dict[str, str] = {}
        for holder, wf, key in conn.execute(held_q):
            held.setdefault(holder, f"{wf}/{key}")
        out = []
        for row in conn.execute(workers_q.order_by(workers.c.worker_id)):
            msg = workers_pb2.Worker(
                worker_id=row.worker_id,
                labels=row.labels,
                registered_at_ms=row.registered_at_ms,
                last_heartbeat_ms=row.last_heartbeat_ms,
            )
            capabilities = Capabilities.from_json(row.capabilities)
            if capabilities is not None:
                msg.capabilities.handlers.extend(capabilities.handlers)
                msg.capabilities.shell = capabilities.shell
            if row.worker_id in held:
                msg.current_job = held[row.worker_id]
                msg.status = workers_pb2.WORKER_STATUS_BUSY
            elif now - row.last_heartbeat_ms > self.offline_after_ms:
                msg.status = workers_pb2.WORKER_STATUS_OFFLINE
            else:
                msg.status = workers_pb2.WORKER_STATUS_IDLE
            out.append(msg)
        return out

    def claim(
        self,
        org: str,
        worker_id: str,
        labels: Sequence[str],
        *,
        ttl_secs: int | None = None,
        max_jobs: int = 1,
        wait_secs: float = 0,
        is_active: Callable[[], bool] = lambda: True,
        owner: str = "",
        capabilities: Capabilities | None = None,
    ) -> list[workers_pb2.Assignment]:
        """Claims up to ``max_jobs`` jobs that the worker can run, waiting up
        to ``wait_secs`` for one; the leases are bound to the principal
        ``owner``."""
        _check_worker(worker_id, labels, capabilities)
        ttl = _ttl(ttl_secs)
        if not 1 <= max_jobs <= MAX_BATCH:
            raise InvalidArgument(f"max_jobs: must be between 1 and {MAX_BATCH}")
        if not 0 <= wait_secs <= MAX_WAIT_SECS:
            raise InvalidArgument(f"wait_secs: must be between 0 and {MAX_WAIT_SECS}")
        deadline = time.monotonic() + wait_secs
        with self.notifier.subscribe(work=(org, labels), commands=commands_of(capabilities)) as sub:
            while True:
                work = self.notifier.take_work(sub)
                got = self._claim(org, worker_id, labels, ttl, max_jobs, owner, capabilities)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0 or self.closing or not is_active():
                    if len(got) == max_jobs:
                        # Full: ready work given to this caller may be left.
                        sub.accepting = False
                        self.notifier.pass_on(sub, work)
                    return got
                sub.wait(min(remaining, self.poll_interval))

    def _claim(
        self,
        org: str,
        worker_id: str,
        labels: Sequence[str],
        ttl: int,
        max_jobs: int,
        owner: str,
        capabilities: Capabilities | None,
    ) -> list[workers_pb2.Assignment]:
        claimed = self._claims.submit(
            sched.ClaimAsk(org, worker_id, tuple(labels), ttl, max_jobs, owner, capabilities)
        )
        return [render.assignment(c, worker_id) for c in claimed]

    def assignments(
        self,
        org: str,
        worker_id: str,
        labels: Sequence[str],
        *,
        slots: int = 1,
        ttl_secs: int | None = None,
        is_active: Callable[[], bool] = lambda: True,
        owner: str = "",
        capabilities: Capabilities | None = None,
    ) -> Iterator[workers_pb2.StreamAssignmentsResponse]:
        """Pushes ready jobs that one connected worker can run, never more
        than ``slots`` unfinished at once, and tells it which of its leases
        were cancelled."""
        _check_worker(worker_id, labels, capabilities)
        ttl = _ttl(ttl_secs)
        slots = slots or 1
        if not 1 <= slots <= MAX_SLOTS:
            raise InvalidArgument(f"slots: must be between 1 and {MAX_SLOTS}")
        self.register_worker(org, worker_id, labels, capabilities)
        held: set[str] = set()
        mailbox = Mailbox(org, worker_id, ttl, owner)
        with self.notifier.subscribe(
            sched.topic_worker(org, worker_id),
            work=(org, labels),
            mailbox=mailbox,
            commands=commands_of(capabilities),
        ) as sub:
            try:
                while is_active() and not self.closing:
                    handed = self.notifier.take_delivered(sub)
                    if handed:
                        # Leased by the transaction that made them ready.
                        held.update(c.lease_id for c in handed)
                        yield workers_pb2.StreamAssignmentsResponse(
                            assignments=[render.assignment(c, worker_id) for c in handed]
                        )
                        continue
                    cancelled = self._settle(held) if held else []
                    # The slots this claim may fill are taken out of the
                    # mailbox's room first, so that a hand-off cannot fill
                    # them at the same time.
                    free = self.notifier.claim_budget(sub, slots - len(held))
                    work = self.notifier.take_work(sub)
                    got = (
                        self._claim(org, worker_id, labels, ttl, free, owner, capabilities)
                        if free > 0
                        else []
                    )
                    held.update(a.lease.lease_id for a in got)
                    sub.accepting = len(held) < slots
                    self.notifier.set_free(sub, slots - len(held))
                    if work and not sub.accepting:
                        # Full: ready work given to this stream may be left over.
                        self.notifier.pass_on(sub, work)
                    if got or cancelled:
                        yield workers_pb2.StreamAssignmentsResponse(
                            assignments=got, cancelled_lease_ids=cancelled
                        )
                        # Slots freed while the batch was on its way are
                        # filled at once, which keeps batches large under load.
                        continue
                    sub.wait(self.poll_interval)
            finally:
                self._hand_back(org, self.notifier.close_mailbox(sub))

    def _settle(self, held: set[str]) -> list[str]:
        """Drops finished leases from ``held``; returns those cancelled."""
        states = dict(
            self._read(lambda conn, _now: _sql.query(conn, _LEASE_STATES, ids=sorted(held)))
        )
        cancelled = [lid for lid in held if states.get(lid) == "cancelled"]
        held.intersection_update(lid for lid in held if states.get(lid) == "active")
        return cancelled

    def heartbeat(
        self, org: str, lease_id: str, ttl_secs: int | None = None, *, owner: str = ""
    ) -> workers_pb2.HeartbeatResponse:
        if not lease_id:
            raise InvalidArgument("lease_id: required")
        ttl = _ttl(ttl_secs) if ttl_secs else None
        expires, cancelled = self._write(
            lambda conn, now: (
                sched.heartbeat(
                    conn, org=org, owner=owner, lease_id=lease_id, ttl_secs=ttl, now=now
                ),
                sched.Effects(),
            )
        )
        # A shorter TTL may bring the lease's expiry before the reaper's wake.
        self._expiry.announce(expires)
        return workers_pb2.HeartbeatResponse(
            lease_id=lease_id, expires_at_ms=expires, cancelled=cancelled
        )

    def report(
        self, org: str, results: Sequence[sched.Result], *, owner: str = ""
    ) -> list[sched.Verdict]:
        """Applies completions and failures in one transaction; only leases of
        the principal ``owner`` count."""
        for i, res in enumerate(results):
            if not res.lease_id:
                raise InvalidArgument("lease_id: required")
            _check_text(res.error, f"results[{i}].error")
            for key, value in res.outputs.items():
                _check_text(key, f"results[{i}].outputs")
                _check_text(value, f"results[{i}].outputs[{key!r}]")
            if len(res.error) > 64 * 1024:
                raise InvalidArgument("error: longer than 64 KiB")
            if sum(len(k) + len(v) for k, v in res.outputs.items()) > 1 << 20:
                raise InvalidArgument("outputs: larger than 1 MiB")
        if len(results) > MAX_BATCH:
            raise InvalidArgument(f"results: at most {MAX_BATCH} at once")
        if not results:
            return []
        return self._reports.submit(_Reports(org, owner, results))

    def is_job_cancelled(self, org: str, workflow_id: str, job_id: str, run_id: str = "") -> bool:
        def tx(conn: Connection, _now: int) -> bool:
            ref = self._job_ref(conn, org, workflow_id, job_id, run_id)
            return ref is not None and bool(ref.state == "cancelled")

        return self._read(tx)

    def _latest_run(self, conn: Connection, org: str, workflow_id: str, job_id: str) -> str | None:
        """The workflow's latest run; NOT_FOUND for an unknown workflow or job."""
        row = conn.execute(
            select(workflows.c.latest_run_id, workflows.c.definition).where(
                workflows.c.org_id == org, workflows.c.id == workflow_id
            )
        ).first()
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        if row.latest_run_id is None:
            if not any(j.get("id") == job_id for j in row.definition.get("jobs", ())):
                raise NotFound(f"job {job_id!r} not found in workflow {workflow_id!r}")
            return None
        return str(row.latest_run_id)

    def reap(self) -> int:
        """One pass of the lease reaper; returns how many leases expired."""
        total = 0
        while True:
            n = self._write(
                lambda conn, now: sched.reap(
                    conn, is_pg=self.db.is_postgres, now=now, max_lost_leases=self.max_lost_leases
                )
            )
            total += n
            if n < 500:
                return total

    def wait_for_expiry(self, max_secs: float) -> None:
        """Sleeps until the earliest active lease expires, at most ``max_secs``.

        A lease granted or extended on this replica meanwhile that expires
        sooner shortens the sleep; ``close`` ends it. Leases of other
        replicas are seen when this one next reads the database.
        """
        self._expiry.reading()
        now, earliest = self._read(lambda conn, now: (now, sched.next_expiry(conn)))
        until = now + int(max_secs * 1000)
        self._expiry.sleep(now, until if earliest is None else min(until, earliest))

    # ------------------------------------------------------------ logs

    def push_logs(
        self, org: str, lease_id: str, chunks: Sequence[logs_pb2.LogChunk], *, owner: str = ""
    ) -> int:
        if not lease_id:
            raise InvalidArgument("lease_id: required")
        rows = []
        for i, c in enumerate(chunks):
            stream = STREAM_NAMES.get(c.stream) if c.stream else "stdout"
            if stream is None:
                raise InvalidArgument(f"chunks[{i}].stream: must be stdout or stderr")
            if len(c.data) > MAX_CHUNK_BYTES:
                raise InvalidArgument(f"chunks[{i}].data: larger than 1 MiB")
            _check_text(c.data, f"chunks[{i}].data")
            rows.append(
                {
                    "stream": stream,
                    "sequence": c.sequence,
                    "data": c.data,
                    "timestamp_ms": c.timestamp_ms,
                }
            )
        return self._write(
            lambda conn, now: sched.push_logs(
                conn, org=org, owner=owner, lease_id=lease_id, chunks=rows, now=now
            )
        )

    def _job_ref(
        self, conn: Connection, org: str, workflow_id: str, job_id: str, run_id: str
    ) -> Any:
        run = run_id or self._latest_run(conn, org, workflow_id, job_id)
        if run is None:
            return None
        # The workflow is part of the key: a run id of another workflow that
        # has a job of the same name must not answer for this one.
        row = conn.execute(
            select(jobs.c.id, jobs.c.run_id, jobs.c.state).where(
                jobs.c.run_id == run,
                jobs.c.workflow_id == workflow_id,
                jobs.c.key == job_id,
                jobs.c.org_id == org,
            )
        ).first()
        if row is None:
            raise NotFound(f"job {job_id!r} not found in run {run!r} of workflow {workflow_id!r}")
        return row

    def list_logs(
        self, org: str, workflow_id: str, job_id: str, *, run_id: str = "", after_id: int = 0
    ) -> logs_pb2.ListLogsResponse:
        def tx(conn: Connection, _now: int) -> logs_pb2.ListLogsResponse:
            ref = self._job_ref(conn, org, workflow_id, job_id, run_id)
            if ref is None:
                return logs_pb2.ListLogsResponse()
            rows = conn.execute(
                select(log_chunks)
                .where(log_chunks.c.job_id == ref.id, log_chunks.c.id > after_id)
                .order_by(log_chunks.c.id)
            ).mappings()
            return logs_pb2.ListLogsResponse(
                run_id=ref.run_id, chunks=[render.log_chunk(r) for r in rows]
            )

        return self._read(tx)

    def follow_logs(
        self,
        org: str,
        workflow_id: str,
        job_id: str,
        *,
        run_id: str = "",
        after_id: int = 0,
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[logs_pb2.FollowLogsResponse]:
        """Replays chunks after ``after_id`` and follows until the job is over.

        The job's state is read before its chunks: a worker can only push
        while it holds an active lease, so once a terminal state is seen, the
        chunk read that follows holds everything there will ever be. (The one
        exception, what a cancelled job prints while it stops, lands in the
        history after the follower has ended.)
        """
        ref = self._read(lambda conn, _now: self._job_ref(conn, org, workflow_id, job_id, run_id))
        if ref is None:
            raise NotFound(f"workflow {workflow_id!r} has no run yet")
        with self.notifier.subscribe(sched.topic_logs(ref.id)) as sub:
            while is_active() and not self.closing:

                def tx(conn: Connection, _now: int, after: int = after_id) -> tuple[str, list[Any]]:
                    state = conn.execute(
                        select(jobs.c.state).where(jobs.c.id == ref.id)
                    ).scalar_one()
                    rows = (
                        conn.execute(
                            select(log_chunks)
                            .where(log_chunks.c.job_id == ref.id, log_chunks.c.id > after)
                            .order_by(log_chunks.c.id)
                            .limit(1000)
                        )
                        .mappings()
                        .all()
                    )
                    return state, list(rows)

                state, rows = self._read(tx)
                if rows:
                    after_id = rows[-1]["id"]
                    yield logs_pb2.FollowLogsResponse(chunks=[render.log_chunk(r) for r in rows])
                    continue
                if state in sched.TERMINAL:
                    yield logs_pb2.FollowLogsResponse(
                        job_finished=True,
                        job_state=render.JOB_STATES[state],
                    )
                    return
                sub.wait(self.poll_interval)


def _events_after(conn: Connection, _now: int, *, run_id: str, after: int) -> list[Any]:
    q = select(events).where(events.c.run_id == run_id, events.c.id > after)
    return list(conn.execute(q.order_by(events.c.id).limit(1000)).mappings())


def _ttl(ttl_secs: int | None) -> int:
    if ttl_secs is None or ttl_secs == 0:
        return DEFAULT_TTL_SECS
    if not 1 <= ttl_secs <= MAX_TTL_SECS:
        raise InvalidArgument(f"lease_ttl_secs: must be between 1 and {MAX_TTL_SECS}")
    return ttl_secs


def _check_text(value: str, field: str) -> None:
    # PostgreSQL text cannot hold NUL; refusing it on every backend keeps the
    # two alike instead of storing on one what the other rejects.
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains a NUL character")


def _check_worker(
    worker_id: str, labels: Sequence[str], capabilities: Capabilities | None = None
) -> None:
    if not worker_id:
        raise InvalidArgument("worker_id: required")
    _check_text(worker_id, "worker_id")
    if len(worker_id) > 200:
        raise InvalidArgument("worker_id: longer than 200 characters")
    for i, label in enumerate(labels):
        if not label or "," in label or len(label) > 64 or "\x00" in label:
            raise InvalidArgument(f"labels[{i}]: must be 1-64 characters without commas")
    if capabilities is None:
        return
    if len(capabilities.handlers) > MAX_HANDLERS:
        raise InvalidArgument(f"capabilities.handlers: at most {MAX_HANDLERS}")
    for i, name in enumerate(capabilities.handlers):
        if not name or len(name) > MAX_HANDLER_CHARS or "\x00" in name:
            raise InvalidArgument(
                f"capabilities.handlers[{i}]: must be 1-{MAX_HANDLER_CHARS} characters without NUL"
            )


__all__ = ["Service"]
