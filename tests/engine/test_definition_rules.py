"""Each validation rule stated once as a workflow file and once as a ``Workflow`` message.

Both go through the one validation pass, so each rule must fire for both at the same job,
in the words of each source (`needs` in files, `depends_on` in messages).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from trellis.server.engine.definitions import (
    MAX_JOBS,
    Backoff,
    DefinitionError,
    JobDef,
    WorkflowDef,
    parse_message,
    parse_text,
)
from trellis.v1 import jobs_pb2, runs_pb2, workflows_pb2
from trellis.v1.jobs_pb2 import Job


def from_file(text: str, workflow_id: str = "wf") -> WorkflowDef:
    return parse_text(textwrap.dedent(text), source="wf.yml", workflow_id=workflow_id)


def from_message(*jobs: Job, workflow_id: str = "wf", **fields: Any) -> WorkflowDef:
    workflow = workflows_pb2.Workflow(name=fields.pop("name", "Demo"), jobs=jobs, **fields)
    return parse_message(workflow, workflow_id=workflow_id)


def rejection(parse: Any, *args: Any, **kwargs: Any) -> tuple[str | None, str]:
    with pytest.raises(DefinitionError) as caught:
        parse(*args, **kwargs)
    return caught.value.job_id, caught.value.problem


def file_jobs(*lines: str) -> str:
    return "name: Demo\non: push\njobs:\n" + "".join(f"  {line}\n" for line in lines)


def retry(max_retries: int = 0, backoff: jobs_pb2.Backoff | None = None) -> jobs_pb2.RetryPolicy:
    return jobs_pb2.RetryPolicy(max_retries=max_retries, backoff=backoff)


EXPONENTIAL_2_1 = jobs_pb2.Backoff(
    exponential=jobs_pb2.Backoff.Exponential(base_secs=2, max_secs=1)
)
LONG_LABEL = "l" * 65
SHOWN_LABEL = "'" + "l" * 57 + "...'"
ID_RULE = "may only contain letters, digits, '_', '.' and '-', and must not start with '.' or '-'"

# rule: (file text, message jobs, file's (job, problem), message's (job, problem))
RULES: dict[str, tuple[str, list[Job], tuple[str | None, str], tuple[str | None, str]]] = {
    "unknown dependency": (
        file_jobs("a: {run: x}", "b: {run: x, needs: [a, z]}"),
        [Job(id="a", command="x"), Job(id="b", command="x", depends_on=["a", "z"])],
        ("b", "needs unknown job 'z'"),
        ("b", "depends on unknown job 'z'"),
    ),
    "dependency on itself": (
        file_jobs("a: {run: x, needs: a}"),
        [Job(id="a", command="x", depends_on=["a"])],
        ("a", "needs itself"),
        ("a", "depends on itself"),
    ),
    "repeated dependency": (
        file_jobs("a: {run: x}", "b: {run: x, needs: [a, a]}"),
        [Job(id="a", command="x"), Job(id="b", command="x", depends_on=["a", "a"])],
        ("b", "needs 'a' more than once"),
        ("b", "depends on 'a' more than once"),
    ),
    "cycle": (
        file_jobs("a: {run: x, needs: c}", "b: {run: x, needs: a}", "c: {run: x, needs: b}"),
        [
            Job(id="a", command="x", depends_on=["c"]),
            Job(id="b", command="x", depends_on=["a"]),
            Job(id="c", command="x", depends_on=["b"]),
        ],
        (None, "cycle: a -> c -> b -> a"),
        (None, "cycle: a -> c -> b -> a"),
    ),
    "duplicate job id": (
        file_jobs("a: {run: x}", "a: {run: y}"),
        [Job(id="a", command="x"), Job(id="a", command="y")],
        ("a", "defined more than once (line 5)"),
        ("a", "defined more than once (jobs[0] and jobs[1])"),
    ),
    "bad job id": (
        file_jobs("a b: {run: x}"),
        [Job(id="a b", command="x")],
        (None, f"job id 'a b' {ID_RULE}"),
        (None, f"jobs[0]: `id` 'a b' {ID_RULE}"),
    ),
    "no command": (
        file_jobs("a: {name: A}"),
        [Job(id="a", name="A")],
        ("a", "needs a `run` command or `steps`"),
        ("a", "missing required key `command`"),
    ),
    "NUL in a command": (
        file_jobs('a: {run: "x\\0"}'),
        [Job(id="a", command="x\x00")],
        ("a", "`run` contains a NUL character"),
        ("a", "`command` contains a NUL character"),
    ),
    "retries out of range": (
        file_jobs("a: {run: x, retries: 101}"),
        [Job(id="a", command="x", max_retries=101)],
        ("a", "`retries` must be an integer from 0 to 100, got 101"),
        ("a", "`max_retries` must be an integer from 0 to 100, got 101"),
    ),
    "exponential backoff capped below its base": (
        file_jobs("a: {run: x, backoff: {exponential: {base_secs: 2, max_secs: 1}}}"),
        [Job(id="a", command="x", retry_policy=retry(1, EXPONENTIAL_2_1))],
        ("a", "backoff max_secs (1) must be at least base_secs (2)"),
        ("a", "`retry_policy`: backoff max_secs (1) must be at least base_secs (2)"),
    ),
    "fixed backoff too long": (
        file_jobs("a: {run: x, backoff: {fixed: 86401}}"),
        [
            Job(
                id="a",
                command="x",
                retry_policy=retry(backoff=jobs_pb2.Backoff(fixed={"delay_secs": 86_401})),
            )
        ],
        ("a", "backoff delay_secs must be an integer from 0 to 86400, got 86401"),
        ("a", "`retry_policy`: backoff delay_secs must be an integer from 0 to 86400, got 86401"),
    ),
    "timeout too long": (
        file_jobs("a: {run: x, timeout: 604801}"),
        [Job(id="a", command="x", timeout_secs=604_801)],
        (
            "a",
            "`timeout` must be a number of seconds or a duration such as '90s', '5m' or '1h', "
            "more than 0 and at most 7 days, got 604801",
        ),
        ("a", "`timeout_secs` must be an integer from 0 to 604800, got 604801"),
    ),
    "label with a comma": (
        file_jobs("a: {run: x, labels: ['x,y']}"),
        [Job(id="a", command="x", required_labels=["x,y"])],
        ("a", "label 'x,y' must not contain a comma"),
        ("a", "label 'x,y' must not contain a comma"),
    ),
    "label too long": (
        file_jobs(f"a: {{run: x, labels: [{LONG_LABEL}]}}"),
        [Job(id="a", command="x", required_labels=[LONG_LABEL])],
        ("a", f"label {SHOWN_LABEL} is longer than 64 characters"),
        ("a", f"label {SHOWN_LABEL} is longer than 64 characters"),
    ),
    "bad env name": (
        file_jobs("a: {run: x, env: {A-B: y}}"),
        [Job(id="a", command="x", env={"A-B": "y"})],
        ("a", "`env` name 'A-B' must be letters, digits and '_', not starting with a digit"),
        ("a", "`env` name 'A-B' must be letters, digits and '_', not starting with a digit"),
    ),
    "no jobs": (
        "name: Demo\non: push\njobs: {}\n",
        [],
        (None, "`jobs` must not be empty"),
        (None, "`jobs` must not be empty"),
    ),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_fires_for_files_and_messages(rule: str) -> None:
    text, jobs, file_problem, message_problem = RULES[rule]
    assert rejection(from_file, text) == file_problem
    assert rejection(from_message, *jobs) == message_problem


def test_retries_given_twice_must_agree_in_a_message() -> None:
    disagree = Job(id="a", command="x", max_retries=1, retry_policy=retry(2))
    assert rejection(from_message, disagree) == (
        "a",
        "`max_retries` (1) and `retry_policy.max_retries` (2) disagree",
    )
    agree = Job(id="a", command="x", max_retries=2, retry_policy=retry(2))
    assert from_message(agree).jobs[0].max_retries == 2


def test_a_retry_policy_with_an_empty_backoff_is_rejected() -> None:
    job_id, problem = rejection(
        from_message, Job(id="a", command="x", retry_policy=retry(1, jobs_pb2.Backoff()))
    )
    assert (job_id, problem.split(", got ")[-1]) == ("a", "a mapping")
    assert problem.startswith('`retry_policy`: `backoff` must be "None", {"Fixed": ')


def test_workflow_level_rules_for_files_and_messages() -> None:
    assert rejection(from_file, "on: push\njobs:\n  a: {run: x}\n") == (
        None,
        "missing required key `name`",
    )
    # An unset string field is absent from the message, as a missing key is from a file.
    assert rejection(from_message, Job(id="a", command="x"), name="") == (
        None,
        "missing required key `name`",
    )
    file_problem = rejection(from_file, file_jobs("a: {run: x}"), workflow_id="w w")
    message_problem = rejection(from_message, Job(id="a", command="x"), workflow_id="w w")
    assert file_problem == message_problem == (None, f"workflow id 'w w' {ID_RULE}")
    assert rejection(from_message, Job(id="a", command="x"), env={"1X": "y"}) == (
        None,
        "`env` name '1X' must be letters, digits and '_', not starting with a digit",
    )


def test_too_many_jobs_in_a_message() -> None:
    jobs = [Job(id=f"j{i}", command="x") for i in range(MAX_JOBS + 1)]
    assert rejection(from_message, *jobs) == (
        None,
        f"too many jobs ({MAX_JOBS + 1}); at most {MAX_JOBS} are allowed",
    )


def test_a_file_and_a_message_of_one_definition_are_equal() -> None:
    text = file_jobs(
        "a: {run: echo a, labels: [linux, gpu], timeout: 1m}",
        "b: {name: Bee, run: echo b, needs: a, retries: 2, backoff: {fixed: 3}, env: {K: v}}",
    ).replace("on: push", "on: push\nenv: {W: w}")
    message = from_message(
        Job(id="a", command="echo a", required_labels=["linux", "gpu"], timeout_secs=60),
        Job(
            id="b",
            name="Bee",
            command="echo b",
            depends_on=["a"],
            retry_policy=retry(2, jobs_pb2.Backoff(fixed={"delay_secs": 3})),
            env={"K": "v"},
        ),
        trigger="push",
        env={"W": "w"},
    )
    assert from_file(text) == message
    assert message.jobs[1] == JobDef(
        id="b",
        name="Bee",
        command="echo b",
        depends_on=("a",),
        required_labels=(),
        max_retries=2,
        backoff=Backoff("fixed", delay_secs=3),
        timeout_secs=0,
        env={"W": "w", "K": "v"},
    )
    assert from_file(text).fingerprint() == message.fingerprint()


def test_output_only_fields_of_a_fetched_message_are_ignored() -> None:
    fetched = Job(
        id="a",
        command="x",
        status=jobs_pb2.JOB_STATE_FAILED,
        attempt=3,
        output="boom",
        outputs={"k": "v"},
        delayed_until={"seconds": 5},
        started_at={"seconds": 4},
        attempts=[jobs_pb2.JobAttempt(attempt=0, lease_id="l1")],
    )
    wf = from_message(fetched, version=4, run_id="r1", run_state=runs_pb2.RUN_STATE_FAILED)
    assert wf.jobs == (JobDef("a", "a", "x", (), (), 0, Backoff(), 0, {}),)
