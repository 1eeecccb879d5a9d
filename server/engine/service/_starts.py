"""Starting runs: one, or a batch all or nothing, each checked whole (its
workflow, its inputs, its request id) before anything is written.

Starts that arrive at the same time share one transaction (group commit, as
claims and reports do): a client that enqueues runs from many threads pays
one commit per group, not per run. A refused start is refused alone; the
others of its group go on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import SQLAlchemyError

from trellis.server.core import _sql
from trellis.server.core._group_commit import GroupCommit, Member
from trellis.server.core.audit import AUDIT_INSERT
from trellis.server.core.errors import (
    Conflict,
    InvalidArgument,
    NotFound,
    TrellisError,
    Unavailable,
)
from trellis.server.core.principal import Principal
from trellis.server.engine import _machine as machine
from trellis.server.engine import _render as render
from trellis.server.engine._machine import Effects, NewRun
from trellis.server.engine._states import AuditAction
from trellis.server.engine.definitions import InputError
from trellis.server.engine.service._base import Audit, Base, versions
from trellis.v1 import runs_pb2

log = logging.getLogger(__name__)

MAX_BATCH_RUNS = 1000
MAX_REQUEST_ID_LENGTH = 200
# Groups made again because a workflow changed meanwhile (each try reads afresh).
_MAX_STALE_RETRIES = 10

_WORKFLOW_VERSION = _sql.Sql(
    "SELECT version FROM workflows WHERE org_id = :org AND id = :workflow_id"
)
_WORKFLOW_VERSIONS = _sql.Sql(
    "SELECT id, version FROM workflows WHERE org_id = :org AND id IN_LIST(:workflow_ids)"
)
# Also the check that the version a start took as current still is.
_SET_LATEST_RUN = _sql.Sql(
    """UPDATE workflows SET latest_run_id = :run_id
    WHERE org_id = :org AND id = :workflow_id AND version = :version RETURNING id"""
)
_RUNS_OF_REQUESTS = _sql.Sql(
    "SELECT * FROM runs WHERE org_id = :org AND request_id IN_LIST(:request_ids)"
)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A start of a run of ``workflow_id`` with ``inputs`` (as given, before
    defaults), retried safely under the caller's ``request_id`` when set."""

    workflow_id: str
    inputs: Mapping[str, Any] = field(default_factory=dict)
    request_id: str = ""

    def digest(self) -> str:
        """What the request asks for, to tell a retry from a reuse of its id
        (3 and 3.0 are one number: a Struct carries every number as a double)."""
        canonical = json.dumps(
            [self.workflow_id, _whole(self.inputs)], sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _whole(value: Any) -> Any:
    """``value`` with whole floats as ints, through mappings and lists."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_whole(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Start:
    """One caller's start: its requests, all of them or none (``batch``: the
    errors name the item)."""

    principal: Principal
    requests: Sequence[RunRequest]
    ip: str
    batch: bool

    def where(self, i: int) -> str:
        return f"requests[{i}]: " if self.batch else ""

    def audit(self) -> Audit:
        only = self.requests[0].workflow_id if len(self.requests) == 1 else "*"
        return Audit(self.principal, self.ip, AuditAction.WORKFLOW_RUN, f"workflow:{only}")


# An answer: a run read before (a replay), or the index of a run to create.
_Answer = Mapping[str, Any] | int


class _StaleVersions(Exception):
    """Workflows whose version a start took as current had changed: the
    group is rolled back and made again."""

    def __init__(self, org: str, workflow_ids: list[str]) -> None:
        super().__init__(", ".join(workflow_ids))
        self.org = org
        self.workflow_ids = workflow_ids


class StartOps(Base):
    _starts: GroupCommit[Start, list[Mapping[str, Any]]]

    def run_workflow(
        self, principal: Principal, request: RunRequest, *, ip: str = ""
    ) -> runs_pb2.Run:
        """Starts a run of the workflow's current version; a request id seen
        before answers that request's run instead."""
        return self._start(Start(principal, [request], ip, batch=False))[0]

    def run_workflows(
        self, principal: Principal, requests: Sequence[RunRequest], *, ip: str = ""
    ) -> list[runs_pb2.Run]:
        """Starts many runs in one transaction: all of them, or none when one
        request is refused (its error names its index)."""
        if not requests:
            raise InvalidArgument("requests: give at least one run to start")
        if len(requests) > MAX_BATCH_RUNS:
            raise InvalidArgument(
                f"requests: at most {MAX_BATCH_RUNS} runs at once, got {len(requests)}"
            )
        return self._start(Start(principal, requests, ip, batch=True))

    def _start(self, start: Start) -> list[runs_pb2.Run]:
        for i, req in enumerate(start.requests):
            if len(req.request_id) > MAX_REQUEST_ID_LENGTH:
                raise InvalidArgument(
                    f"{start.where(i)}request_id: at most {MAX_REQUEST_ID_LENGTH} characters"
                )
        # The runs as created: what a re-read right after the commit would show.
        return [render.run_from_row(row) for row in self._starts.submit(start)]

    def _start_group(self, members: Sequence[Member[Start, list[Mapping[str, Any]]]]) -> None:
        """Runs a group of starts in one transaction; refuses each bad one alone."""
        refused: list[tuple[Member[Start, list[Mapping[str, Any]]], Exception]] = []
        for _ in range(_MAX_STALE_RETRIES):
            try:
                self._write(functools.partial(self._start_all, members=members, refused=refused))
            except _StaleVersions as exc:
                # Changed (or gone) since last seen: read again.
                for workflow_id in exc.workflow_ids:
                    self._see_version(exc.org, workflow_id, None)
                continue
            for member, error in refused:
                member.fail(error)
                if isinstance(error, TrellisError):
                    self._audit_refusal(member.work.audit(), error)
            return
        raise Unavailable("the workflow changed during every try to start it; try again")

    def _start_all(
        self,
        conn: Connection,
        now: int,
        members: Sequence[Member[Start, list[Mapping[str, Any]]]],
        refused: list[tuple[Member[Start, list[Mapping[str, Any]]], Exception]],
    ) -> tuple[None, Effects]:
        refused.clear()  # a transaction run again judges its starts again
        effects = Effects()
        per_org: dict[str, list[Member[Start, list[Mapping[str, Any]]]]] = defaultdict(list)
        for member in members:
            per_org[member.work.principal.org_id].append(member)
        for org in sorted(per_org):
            effects.merge(self._start_in_org(conn, now, org, per_org[org], refused))
        return None, effects

    def _start_in_org(
        self,
        conn: Connection,
        now: int,
        org: str,
        members: Sequence[Member[Start, list[Mapping[str, Any]]]],
        refused: list[tuple[Member[Start, list[Mapping[str, Any]]], Exception]],
    ) -> Effects:
        requests = [req for m in members for req in m.work.requests]
        asked = sorted({req.request_id for req in requests if req.request_id})
        # By request id: the digest of its request and its answer.
        prior: dict[str, tuple[str, _Answer]] = {}
        if asked:
            for row in _sql.query(conn, _RUNS_OF_REQUESTS, org=org, request_ids=asked):
                prior[row.request_id] = (row.request_digest, row._asdict())
        current = self._current_versions(conn, org, {req.workflow_id for req in requests})
        new: list[NewRun] = []
        owners: list[Start] = []  # whose start each new run is
        answers: dict[int, list[_Answer]] = {}  # by member, in the order of its requests
        for m, member in enumerate(members):
            try:
                mine, theirs = self._check(conn, org, member.work, current, prior, len(new))
            except TrellisError as exc:
                refused.append((member, exc))
                continue
            except SQLAlchemyError:
                raise  # the transaction's, not the start's (and maybe to be retried)
            except Exception as exc:  # a fault in one start is that start's alone
                log.exception("a start of %s failed", member.work.audit().resource)
                refused.append((member, exc))
                continue
            for run in mine:
                new.append(run)
                owners.append(member.work)
            answers[m] = theirs
        created: list[dict[str, Any]] = []
        effects = Effects()
        if new:
            checks: dict[str, _sql.Pending] = {}

            def also(batch: _sql.Batch, rows: list[dict[str, Any]]) -> None:
                # The last run started of each workflow becomes its latest, if
                # the workflow is still at the version the runs were made of.
                # In id order: two groups lock the workflows they share in one order.
                latest = {row["workflow_id"]: row["id"] for row in rows}
                for workflow_id, run_id in sorted(latest.items()):
                    checks[workflow_id] = batch.query(
                        _SET_LATEST_RUN,
                        run_id=run_id,
                        org=org,
                        workflow_id=workflow_id,
                        version=current[workflow_id],
                    )
                # In the pipeline that stores the runs: no round trip of its own.
                batch.insert(
                    AUDIT_INSERT,
                    [
                        Audit(
                            owner.principal,
                            owner.ip,
                            AuditAction.WORKFLOW_RUN,
                            f"workflow:{row['workflow_id']}",
                        ).row(now, "success", {"run_id": row["id"]})
                        for row, owner in zip(rows, owners, strict=True)
                    ],
                )

            created, effects = machine.create_runs(conn, org=org, new=new, now=now, also=also)
            stale = sorted(wf for wf, check in checks.items() if not check.rows)
            if stale:
                raise _StaleVersions(org, stale)
        for m, theirs in answers.items():
            members[m].succeed([created[a] if isinstance(a, int) else a for a in theirs])
        return effects

    def _check(
        self,
        conn: Connection,
        org: str,
        start: Start,
        current: Mapping[str, int],
        prior: dict[str, tuple[str, _Answer]],
        offset: int,
    ) -> tuple[list[NewRun], list[_Answer]]:
        """The runs ``start`` makes (to be numbered from ``offset``) and its
        answers; raises for a refused request, leaving ``prior`` as it was."""
        new: list[NewRun] = []
        answers: list[_Answer] = []
        seen: dict[str, tuple[str, _Answer]] = {}  # this start's, until it passes
        for i, req in enumerate(start.requests):
            digest = req.digest() if req.request_id else None
            earlier = seen.get(req.request_id) or prior.get(req.request_id)
            if earlier is not None:
                if earlier[0] != digest:
                    raise Conflict(
                        f"{start.where(i)}request_id {req.request_id!r} was given to another "
                        "start (of another workflow or with other inputs)"
                    )
                answers.append(earlier[1])
                continue
            version = current.get(req.workflow_id)
            if version is None:
                raise NotFound(f"{start.where(i)}workflow {req.workflow_id!r} not found")
            wdef = self._definition(
                org,
                req.workflow_id,
                version,
                functools.partial(_stored, conn, org, req.workflow_id, version),
            )
            try:
                inputs = wdef.resolve_inputs(req.inputs)
            except InputError as exc:
                raise InvalidArgument(f"{start.where(i)}{exc}") from None
            index = offset + len(new)
            if digest is not None:
                seen[req.request_id] = (digest, index)
            answers.append(index)
            new.append(
                NewRun(
                    wdef,
                    version,
                    inputs or None,
                    req.request_id or None,
                    digest,
                    created_by=start.principal.subject,
                )
            )
        prior.update(seen)
        return new, answers

    def _current_versions(
        self, conn: Connection, org: str, workflow_ids: set[str]
    ) -> dict[str, int]:
        """The current version of each workflow that exists: as last seen
        here, or read (the start's own write checks a version taken as seen)."""
        found = {wf: self._seen_version(org, wf) for wf in workflow_ids}
        unseen = sorted(wf for wf, version in found.items() if version is None)
        if len(unseen) == 1:
            rows = _sql.query(conn, _WORKFLOW_VERSION, org=org, workflow_id=unseen[0])
            read = {unseen[0]: rows[0].version} if rows else {}
        elif unseen:
            read = dict(_sql.query(conn, _WORKFLOW_VERSIONS, org=org, workflow_ids=unseen))
        else:
            read = {}
        for wf, version in read.items():
            self._see_version(org, wf, version)
        return {wf: v for wf, v in ({**found, **read}).items() if v is not None}


def _stored(conn: Connection, org: str, workflow_id: str, version: int) -> Any:
    """The stored definition of one version of a workflow."""
    return conn.execute(
        select(versions.c.definition).where(
            versions.c.org_id == org,
            versions.c.workflow_id == workflow_id,
            versions.c.version == version,
        )
    ).scalar_one()


__all__ = ["MAX_BATCH_RUNS", "RunRequest", "Start", "StartOps"]
