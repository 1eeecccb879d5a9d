"""The one validation pass: a draft of any source in, a frozen :class:`WorkflowDef` out."""

from __future__ import annotations

from collections.abc import Mapping

from trellis.server.engine.definitions._checks import (
    env,
    id_list,
    labels,
    mapping,
    optional_int,
    reject_unknown,
    required,
    text,
)
from trellis.server.engine.definitions._draft import Dialect, Draft, DraftJob
from trellis.server.engine.definitions._errors import quote, show
from trellis.server.engine.definitions._graph import check_graph
from trellis.server.engine.definitions._inputs import declared_inputs
from trellis.server.engine.definitions._model import (
    MAX_JOBS,
    MAX_PARALLEL_LIMIT,
    MAX_RETRIES,
    Backoff,
    JobDef,
    WorkflowDef,
)
from trellis.server.engine.definitions._steps import fold_steps

_RETRY_POLICY_KEYS = ("max_retries", "backoff")


def build(draft: Draft) -> WorkflowDef:
    """Check every value of ``draft`` and the graph of its jobs; the first problem is raised."""
    where, dialect = draft.where, draft.dialect
    name = text(required(draft.name, "name", where), "`name`", where)
    trigger = dialect.trigger(draft.trigger, where)
    wf_env = env(draft.env, "`env`", where, strings_only=not dialect.scalar_env)
    inputs = declared_inputs(draft.inputs, where)
    # An `on:` problem names the workflow: one text may come from the API, not a file.
    triggers = dialect.triggers(draft.triggers, where.within(f"workflow {quote(draft.id)}"))

    count, drafts = draft.jobs()
    if count == 0:
        where.fail("`jobs` must not be empty")
    if count > MAX_JOBS:
        where.fail(f"too many jobs ({count}); at most {MAX_JOBS} are allowed")

    jobs: list[JobDef] = []
    first_at: dict[str, int | None] = {}
    for job in drafts:
        if dialect.duplicates_first and job.id in first_at:
            job.at.fail("defined more than once")
        built = _job(job, dialect, wf_env)
        if job.id in first_at:
            job.at.fail(
                f"defined more than once (jobs[{first_at[job.id]}] and jobs[{job.position}])"
            )
        first_at[job.id] = job.position
        jobs.append(built)
    check_graph(jobs, dialect.needs_verb, where)
    if draft.rollback not in (None, "", "on_failure"):
        where.fail(f"`rollback` must be on_failure, got {show(draft.rollback)}")
    limit = optional_int(draft.parallel_limit, "`parallel_limit`", 0, MAX_PARALLEL_LIMIT, where)
    return WorkflowDef(
        id=draft.id,
        name=name,
        trigger=trigger,
        env=wf_env,
        jobs=tuple(jobs),
        inputs=inputs,
        triggers=triggers,
        rollback="on_failure" if draft.rollback else "",
        parallel_limit=limit,
    )


def _job(job: DraftJob, dialect: Dialect, wf_env: Mapping[str, str]) -> JobDef:
    at = job.at
    name = dialect.job_name(job.name, job.id, at)
    if job.command is not None and job.steps is not None:
        at.fail(f"give either `{dialect.command}` or `steps`, not both")
    if job.command is not None:
        command = text(job.command, f"`{dialect.command}`", at)
    elif job.steps is not None:
        command = fold_steps(job.steps, at)
    else:
        at.fail(dialect.missing_command)

    if dialect.retries_first:
        retries, backoff = _retries(job, dialect)
    depends_on = id_list(job.depends_on, f"`{dialect.needs}`", at, one_ok=dialect.needs_one_ok)
    required_labels = labels(job.required_labels, f"`{dialect.labels}`", at)
    if not dialect.retries_first:
        retries, backoff = _retries(job, dialect)
    timeout_secs = dialect.timeout(job.timeout, at)
    job_env = env(job.env, "`env`", at, strings_only=not dialect.scalar_env)
    compensate, compensate_retries = _compensate(job, dialect)
    return JobDef(
        id=job.id,
        name=name,
        command=command,
        depends_on=depends_on,
        required_labels=required_labels,
        max_retries=retries,
        backoff=backoff,
        timeout_secs=timeout_secs,
        env={**wf_env, **job_env} if dialect.merge_env else job_env,
        compensate=compensate,
        compensate_retries=compensate_retries,
    )


def _compensate(job: DraftJob, dialect: Dialect) -> tuple[str, int]:
    """The job's compensation: a command alone, or with its retries."""
    value, at = job.compensate, job.at
    if value is None or value == {}:
        return "", 0
    if isinstance(value, str):
        return text(value, "`compensate`", at), 0
    body = mapping(value, "`compensate`", at)
    within = at.within("`compensate`")
    reject_unknown(body, (dialect.command, dialect.retries), within)
    command = text(
        required(body.get(dialect.command), dialect.command, within), f"`{dialect.command}`", within
    )
    retries = optional_int(
        body.get(dialect.retries), f"`{dialect.retries}`", 0, MAX_RETRIES, within
    )
    return command, retries


def _retries(job: DraftJob, dialect: Dialect) -> tuple[int, Backoff]:
    at = job.at
    retries = optional_int(job.max_retries, f"`{dialect.retries}`", 0, MAX_RETRIES, at)
    raw_backoff, backoff_at = job.backoff, at
    if job.retry_policy is not None:
        policy_at = at.within("`retry_policy`")
        policy = mapping(job.retry_policy, "`retry_policy`", at)
        reject_unknown(policy, _RETRY_POLICY_KEYS, policy_at)
        policy_retries = optional_int(
            policy.get("max_retries"), "`max_retries`", 0, MAX_RETRIES, policy_at
        )
        # Proto3 renders an unset count as 0, so only two different non-zero counts conflict.
        if retries and policy_retries and retries != policy_retries:
            at.fail(
                f"`{dialect.retries}` ({retries}) and `retry_policy.max_retries` "
                f"({policy_retries}) disagree"
            )
        retries = retries or policy_retries
        raw_backoff, backoff_at = policy.get("backoff"), policy_at
    return retries, dialect.backoff(raw_backoff, backoff_at)
