"""Claims: the oldest ready jobs a worker can run, marked running and leased
to it in one short transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from trellis.server.core import _sql
from trellis.server.core._sql import Sql, from_json, to_json
from trellis.server.engine._capabilities import Capabilities, Commands, commands_of, required
from trellis.server.engine._machine.common import (
    NO_DEADLINE,
    Effects,
    Events,
    new_id,
)
from trellis.server.engine._machine.common import lock_runs as _lock_runs
from trellis.server.engine._states import JobState, LeaseState, RunEventType


@dataclass(frozen=True)
class Claimed:
    """A job handed to a worker under a fresh lease."""

    job: Mapping[Any, Any]
    lease_id: str
    ttl_secs: int
    granted_at_ms: int
    expires_at_ms: int
    upstream_outputs: Mapping[str, Mapping[str, str]]


_LABEL_KEYS = Sql("SELECT label_key FROM label_sets WHERE org_id = :org")
_UPSERT_WORKER = Sql(
    """INSERT INTO workers (org_id, worker_id, labels, capabilities, registered_at_ms,
        last_heartbeat_ms)
    VALUES (:org, :worker, :labels, :capabilities, :now, :now)
    ON CONFLICT (org_id, worker_id) DO UPDATE
    SET last_heartbeat_ms = excluded.last_heartbeat_ms, labels = excluded.labels,
        capabilities = excluded.capabilities
    WHERE workers.last_heartbeat_ms < :stale_before
        OR CAST(workers.labels AS TEXT) <> CAST(excluded.labels AS TEXT)
        OR COALESCE(CAST(workers.capabilities AS TEXT), 'null')
            <> CAST(excluded.capabilities AS TEXT)"""
)
# The claim picks the oldest claimable jobs and marks them running in one
# statement; on PostgreSQL, rows another claimer holds are skipped, not waited on.
CLAIM_TEMPLATE = f"""UPDATE jobs SET state = '{JobState.RUNNING}', started_at_ms = :now
    WHERE id IN (
        SELECT id FROM jobs
        WHERE org_id = :org AND state = '{JobState.QUEUED}' AND label_key {{keys}}
            AND ready_at_ms <= :now
        ORDER BY id LIMIT :n FOR_UPDATE_SKIP_LOCKED)
    RETURNING id, run_id, workflow_id, "key", name, command, label_key, attempt,
        max_retries, backoff, timeout_secs, env, parents, enqueued_at_ms, ready_at_ms"""
# A worker that covers one label set (the usual case: most jobs need none) walks
# the claimable index in id order and stops at the first rows; with several,
# the candidates of all its sets are sorted. A worker that runs only its
# handlers' commands skips the other jobs; one handler (the usual case) keeps
# the statement free of lists, so that PostgreSQL prepares it.
_CLAIMS = {
    (many_sets, commands): Sql(CLAIM_TEMPLATE.format(keys=keys + only))
    for many_sets, keys in ((False, "= :key"), (True, "IN_LIST(:keys)"))
    for commands, only in (
        ("any", ""),
        ("one", " AND command = :command"),
        ("some", " AND command IN_LIST(:commands)"),
    )
}
# A claim among the jobs of some runs (those a transaction just made ready).
_INSERT_LEASE = _sql.Insert(
    "leases",
    {
        "id": "text",
        "org_id": "text",
        "job_id": "bigint",
        "run_id": "text",
        "workflow_id": "text",
        "job_key": "text",
        "worker_id": "text",
        "attempt": "integer",
        "ttl_secs": "integer",
        "granted_at_ms": "bigint",
        "expires_at_ms": "bigint",
        "deadline_ms": "bigint",
        "owner": "text",
    },
    constants={"state": f"'{LeaseState.ACTIVE}'", "finished_at_ms": "0"},
)
# The inputs of the claimed jobs' runs, read with the leases' writes. (Not in
# the claim's RETURNING: SQLite scans the whole table for a subquery there.)
_RUN_INPUTS = Sql("SELECT id, inputs FROM runs WHERE id IN_LIST(:run_ids) AND inputs IS NOT NULL")
_UPSTREAM = Sql(
    """SELECT e.child_id, j."key", j.outputs FROM job_edges e JOIN jobs j ON j.id = e.parent_id
    WHERE e.child_id IN_LIST(:ids)"""
)


def eligible_label_keys(known: Iterable[str], labels: Sequence[str]) -> list[str]:
    """Which of the ``known`` label sets (as keys) a worker with ``labels`` satisfies."""
    have = set(labels)
    return [k for k in known if required(k) <= have]


def touch_worker(
    batch: _sql.Batch,
    *,
    org: str,
    worker_id: str,
    labels: Sequence[str],
    capabilities: Capabilities | None,
    now: int,
    fresh_ms: int = 0,
) -> None:
    """Records that the worker was seen, with its labels and capabilities.

    A worker seen within the last ``fresh_ms`` that says the same is left
    alone, so a busy claim loop does not rewrite its row on every claim.
    """
    # PostgreSQL's json type has no equality: the upsert compares the stored
    # texts, which one serializer wrote from sorted lists.
    batch.execute(
        _UPSERT_WORKER,
        org=org,
        worker=worker_id,
        labels=to_json(sorted(set(labels))),
        capabilities=to_json(capabilities.to_json() if capabilities else None),
        now=now,
        stale_before=now - fresh_ms if fresh_ms else now + 1,
    )


Draw = tuple[str, tuple[str, ...], Commands, bool]


@dataclass(frozen=True)
class ClaimAsk:
    """One claimer's request: up to ``max_jobs`` ready jobs matching
    ``labels`` and ``capabilities`` (none: any command), leased to
    ``worker_id`` for ``ttl_secs`` on behalf of the principal ``owner``."""

    org: str
    worker_id: str
    labels: tuple[str, ...]
    ttl_secs: int
    max_jobs: int
    owner: str
    capabilities: Capabilities | None = None


def _claim_statement(keys: Sequence[str], commands: Commands) -> tuple[Sql, dict[str, Any]]:
    """The claim of jobs of the label sets ``keys`` running one of ``commands``."""
    params: dict[str, Any] = {"key": keys[0]} if len(keys) == 1 else {"keys": list(keys)}
    if commands is None:
        kind = "any"
    elif len(commands) == 1:
        kind, params["command"] = "one", next(iter(commands))
    else:
        kind, params["commands"] = "some", sorted(commands)
    return _CLAIMS[(len(keys) > 1, kind)], params


def claim(
    conn: Connection, *, is_pg: bool, asks: Sequence[ClaimAsk], now: int, nowait: bool = False
) -> tuple[list[list[Claimed]], Effects]:
    """Claims ready jobs for each of ``asks``, oldest first; returns each
    ask's leases, in the order of ``asks``.

    With ``nowait``, for a transaction that holds locks already: the claim
    waits for none. It locks runs NOWAIT (see ``lock_runs``) and leaves the
    workers' rows alone, since touching one waits for whoever holds it.

    Asks of one org that match the same label sets and run the same commands
    draw from one statement (the first ask takes the oldest jobs), and all
    leases of an org are granted together, so a group of claimers costs a few
    statements, not a few per claimer.
    """
    effects = Effects()
    # (org, label sets, commands, whether the label sets were looked up) ->
    # the asks drawing from one statement
    draws: dict[Draw, list[int]] = defaultdict(list)

    def draw(i: int, keys: tuple[str, ...]) -> None:
        a = asks[i]
        commands = commands_of(a.capabilities)
        if keys and a.max_jobs > 0 and commands != frozenset():
            draws[(a.org, keys, commands, bool(a.labels))].append(i)

    # A worker without labels runs only the jobs that require none: its claim
    # needs no look-up of the label sets and goes in the first round trip.
    for i, a in enumerate(asks):
        if not a.labels:
            draw(i, ("",))
    labelled = sorted({a.org for a in asks if a.labels})
    drawn: dict[Draw, _sql.Pending] = {}
    with _sql.pipelined(conn) as batch:
        for a in asks if not nowait else ():
            touch_worker(
                batch,
                org=a.org,
                worker_id=a.worker_id,
                labels=a.labels,
                capabilities=a.capabilities,
                now=now,
                fresh_ms=1000,
            )
        known = {org: batch.query(_LABEL_KEYS, org=org) for org in labelled}
        for d, takers in draws.items():
            drawn[d] = _draw(batch, d, sum(asks[i].max_jobs for i in takers), now)
    if labelled:
        for i, a in enumerate(asks):
            if a.labels:
                draw(i, tuple(eligible_label_keys((k for (k,) in known[a.org].rows), a.labels)))
        with _sql.pipelined(conn) as batch:
            for d, takers in draws.items():
                if d not in drawn:
                    drawn[d] = _draw(batch, d, sum(asks[i].max_jobs for i in takers), now)
    granted: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for d, takers in draws.items():
        rows = sorted(drawn[d].rows, key=lambda r: r.id)
        taken = 0
        for i in takers:
            share = rows[taken : taken + asks[i].max_jobs]
            taken += len(share)
            granted[d[0]].extend((row, i) for row in share)
    out: list[list[Claimed]] = [[] for _ in asks]
    # Orgs in order, so that two groups lock the runs they share in one order.
    for org in sorted(granted):
        pairs = granted[org]
        if not pairs:
            continue
        claimed = grant(
            conn,
            is_pg=is_pg,
            org=org,
            rows=[row for row, _ in pairs],
            to=[(asks[i].worker_id, asks[i].ttl_secs, asks[i].owner) for _, i in pairs],
            now=now,
            effects=effects,
            lock_runs=True,
            nowait=nowait,
        )
        for lease, (_, i) in zip(claimed, pairs, strict=True):
            out[i].append(lease)
    return out, effects


def _draw(batch: _sql.Batch, draw: Draw, n: int, now: int) -> _sql.Pending:
    """Sends the claim of up to ``n`` jobs of one draw."""
    org, keys, commands, _ = draw
    statement, params = _claim_statement(keys, commands)
    return batch.query(statement, org=org, now=now, n=n, **params)


def grant(
    conn: Connection,
    *,
    is_pg: bool,
    org: str,
    rows: Sequence[Any],
    to: Sequence[tuple[str, int, str]],
    now: int,
    effects: Effects,
    lock_runs: bool,
    nowait: bool = False,
) -> list[Claimed]:
    """Leases the claimed job ``rows`` (already marked running), row ``i`` to
    the worker, TTL and owning principal ``to[i]`` (``nowait``: see
    ``lock_runs``)."""
    decoded = [_decoded(r) for r in rows]
    upstream = _upstream_outputs(conn, [j["id"] for j in decoded if j["parents"]])
    claimed: list[Claimed] = []
    lease_rows = []
    ev = Events(org, now)
    for r, job, (worker_id, ttl_secs, owner) in zip(rows, decoded, to, strict=True):
        deadline = now + r.timeout_secs * 1000 if r.timeout_secs else NO_DEADLINE
        expires = min(now + ttl_secs * 1000, deadline)
        lease_id = new_id()
        # A job starts as its lease is granted: both are recorded, the
        # lease's row naming the lease and its worker.
        ev.add(
            r.run_id,
            RunEventType.JOB_LEASED,
            r.key,
            r.attempt,
            data={"lease_id": lease_id, "worker_id": worker_id},
        )
        ev.add(r.run_id, RunEventType.JOB_STARTED, r.key, r.attempt)
        lease_rows.append(
            {
                "id": lease_id,
                "org_id": org,
                "job_id": r.id,
                "run_id": r.run_id,
                "workflow_id": r.workflow_id,
                "job_key": r.key,
                "worker_id": worker_id,
                "attempt": r.attempt,
                "ttl_secs": ttl_secs,
                "granted_at_ms": now,
                "expires_at_ms": expires,
                "deadline_ms": deadline,
                "owner": owner,
            }
        )
        claimed.append(
            Claimed(
                job=job,
                lease_id=lease_id,
                ttl_secs=ttl_secs,
                granted_at_ms=now,
                expires_at_ms=expires,
                upstream_outputs=upstream.get(r.id, {}),
            )
        )
    with _sql.pipelined(conn) as batch:
        if lock_runs:
            # The runs are locked after the jobs here, while cancel locks its
            # run first: the one cycle this allows (a cancel racing a claim
            # of the same run) is broken by PostgreSQL's deadlock detector and
            # the retry in the service layer.
            _lock_runs(batch, is_pg, {r.run_id for r in rows}, nowait=nowait)
        batch.insert(_INSERT_LEASE, lease_rows)
        ev.flush(batch, effects)
        found = batch.query(_RUN_INPUTS, run_ids=sorted({r.run_id for r in rows}))
    inputs = {run_id: from_json(values) for run_id, values in found.rows}
    for job in decoded:  # the mappings the leases hold
        job["inputs"] = inputs.get(job["run_id"])
    effects.lease_expiry_ms = min([effects.lease_expiry_ms, *(c.expires_at_ms for c in claimed)])
    return claimed


def _decoded(row: Any) -> dict[str, Any]:
    """A claimed job's row as a mapping, its JSON columns decoded."""
    job: dict[str, Any] = row._asdict()
    for col in ("backoff", "env", "parents"):
        job[col] = from_json(job[col])
    return job


def _upstream_outputs(
    conn: Connection, child_ids: Sequence[int]
) -> dict[int, dict[str, dict[str, str]]]:
    out: dict[int, dict[str, dict[str, str]]] = defaultdict(dict)
    if child_ids:
        for child_id, key, outputs in _sql.query(conn, _UPSTREAM, ids=child_ids):
            out[child_id][key] = dict(from_json(outputs) or {})
    return out


__all__ = [
    "CLAIM_TEMPLATE",
    "ClaimAsk",
    "Claimed",
    "claim",
    "eligible_label_keys",
    "grant",
    "touch_worker",
]
