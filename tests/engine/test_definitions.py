"""Tests for workflow definition parsing and validation."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import subprocess
import textwrap
import time
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from trellis.server.engine.definitions import (
    MAX_JOBS,
    Backoff,
    DefinitionError,
    JobDef,
    WorkflowDef,
    load_dir,
    parse_api_mapping,
    parse_file,
    parse_file_mapping,
    parse_text,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE = "workflows/ci.yml"


def from_yaml(text: str, workflow_id: str = "ci") -> WorkflowDef:
    return parse_text(textwrap.dedent(text), source=SOURCE, workflow_id=workflow_id)


def yaml_error(text: str, workflow_id: str = "ci") -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        from_yaml(text, workflow_id)
    return caught.value


def one_job(body: str) -> str:
    """A workflow file whose only job `a` has the given (indented) body lines."""
    return "name: Demo\non: push\njobs:\n  a:\n" + textwrap.indent(textwrap.dedent(body), "    ")


def api(jobs: list[dict[str, Any]], **top: Any) -> WorkflowDef:
    return parse_api_mapping({"name": "Demo", "jobs": jobs, **top}, workflow_id="wf")


def api_error(jobs: Any, **top: Any) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        api(jobs, **top)
    return caught.value


def run_sh(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )


# --------------------------------------------------------------------------- file format


def test_minimal_file_gets_defaults() -> None:
    wf = from_yaml(one_job("run: echo a"))
    assert wf.id == "ci"
    assert wf.name == "Demo"
    assert wf.trigger == "push"
    assert wf.env == {}
    assert wf.jobs == (
        JobDef(
            id="a",
            name="a",
            command="echo a",
            depends_on=(),
            required_labels=(),
            max_retries=0,
            backoff=Backoff(),
            timeout_secs=0,
            env={},
        ),
    )


def test_reference_example_parses() -> None:
    wf = from_yaml(
        """
        name: Demo
        on: push
        jobs:
          a: {run: echo a, retries: 1}
          b: {needs: a, labels: [linux], run: echo b}
        """
    )
    a, b = wf.jobs
    assert (a.id, a.max_retries, a.depends_on) == ("a", 1, ())
    assert (b.id, b.depends_on, b.required_labels) == ("b", ("a",), ("linux",))


@pytest.mark.parametrize(
    ("on", "trigger"),
    [
        ("on: push", "push"),
        ('"on": push', "push"),
        ("on: [push, pull_request]", "push, pull_request"),
        (
            "on:\n  push:\n    branches: [main]\n  schedule:\n    - cron: '0 0 * * *'",
            "push, schedule",
        ),
        ("on: {workflow_dispatch: }", "workflow_dispatch"),
    ],
)
def test_on_spellings(on: str, trigger: str) -> None:
    wf = parse_text(f"name: Demo\n{on}\njobs:\n  a: {{run: x}}\n", source=SOURCE, workflow_id="w")
    assert wf.trigger == trigger


def test_json_file_format() -> None:
    text = json.dumps(
        {
            "name": "Demo",
            "on": ["push"],
            "env": {"N": 1.10},
            "jobs": {"a": {"run": "echo a"}, "b": {"needs": ["a"], "run": "echo b"}},
        }
    ).replace("1.1", "1.10")
    wf = parse_text(text, source="workflows/demo.json", workflow_id="demo", fmt="json")
    assert [job.id for job in wf.jobs] == ["a", "b"]
    assert wf.env == {"N": "1.10"}
    assert wf.trigger == "push"


def test_needs_string_or_list() -> None:
    wf = from_yaml(
        """
        name: Demo
        on: push
        jobs:
          a: {run: x}
          b: {run: x, needs: a}
          c: {run: x, needs: [a, b]}
        """
    )
    assert [job.depends_on for job in wf.jobs] == [(), ("a",), ("a", "b")]


@pytest.mark.parametrize(
    ("timeout", "secs"),
    [
        ("30", 30),
        ("'45'", 45),
        ("90s", 90),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172_800),
        ("604800", 604_800),
        ("7d", 604_800),
    ],
)
def test_timeout_spellings(timeout: str, secs: int) -> None:
    assert from_yaml(one_job(f"run: x\ntimeout: {timeout}")).jobs[0].timeout_secs == secs


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("none", Backoff()),
        ("None", Backoff()),
        ("{none: {}}", Backoff()),
        ("{fixed: 5}", Backoff("fixed", delay_secs=5)),
        ("{fixed: 0}", Backoff("fixed", delay_secs=0)),
        ("{fixed: {delay_secs: 5}}", Backoff("fixed", delay_secs=5)),
        ("{Fixed: {delay_secs: 86400}}", Backoff("fixed", delay_secs=86_400)),
        (
            "{exponential: {base_secs: 2, max_secs: 60}}",
            Backoff("exponential", base_secs=2, max_secs=60),
        ),
        (
            "{Exponential: {base_secs: 1, max_secs: 1}}",
            Backoff("exponential", base_secs=1, max_secs=1),
        ),
    ],
)
def test_backoff_spellings_in_files(backoff: str, expected: Backoff) -> None:
    job = from_yaml(one_job(f"run: x\nretries: 3\nbackoff: {backoff}")).jobs[0]
    assert job.backoff == expected
    assert job.max_retries == 3


@pytest.mark.parametrize("retries", [0, 1, 100])
def test_retries_bounds_accepted(retries: int) -> None:
    assert from_yaml(one_job(f"run: x\nretries: {retries}")).jobs[0].max_retries == retries


def test_labels_sorted_and_deduplicated() -> None:
    job = from_yaml(one_job("run: x\nlabels: [linux, gpu, linux, arm64]")).jobs[0]
    assert job.required_labels == ("arm64", "gpu", "linux")


def test_env_merges_with_job_winning_and_keeps_yaml_spelling() -> None:
    wf = from_yaml(
        """
        name: Demo
        on: push
        env: {SHARED: wf, VERSION: 1.10, MODE: 0755, BIG: 1_000, FLAG: yes, DAY: 2024-01-01}
        jobs:
          a:
            run: x
            env: {SHARED: job, OWN: own, COUNT: 3, RATIO: 2.50, QUIET: off, EMPTY: ''}
          b: {run: x}
        """
    )
    assert wf.env == {
        "SHARED": "wf",
        "VERSION": "1.10",
        "MODE": "0755",
        "BIG": "1_000",
        "FLAG": "true",
        "DAY": "2024-01-01",
    }
    a, b = wf.jobs
    assert a.env == {
        **wf.env,
        "SHARED": "job",
        "OWN": "own",
        "COUNT": "3",
        "RATIO": "2.50",
        "QUIET": "false",
        "EMPTY": "",
    }
    assert b.env == wf.env


def test_yaml_anchors_and_merge_keys() -> None:
    wf = from_yaml(
        """
        name: Demo
        on: push
        jobs:
          base: &defaults {run: z, retries: 2, timeout: 1m}
          a: {<<: *defaults, run: x}
          b: {<<: *defaults, run: y, retries: 5}
        """
    )
    jobs = {job.id: job for job in wf.jobs}
    assert (jobs["a"].max_retries, jobs["a"].timeout_secs, jobs["a"].command) == (2, 60, "x")
    assert (jobs["b"].max_retries, jobs["b"].command) == (5, "y")


def test_name_defaults_to_id_and_can_be_given() -> None:
    wf = from_yaml(
        """
        name: Demo
        on: push
        jobs:
          a: {run: x}
          b: {name: Build it, run: x}
        """
    )
    assert [job.name for job in wf.jobs] == ["a", "Build it"]


def test_unusual_but_valid_ids() -> None:
    wf = from_yaml(
        """
        name: Demo
        on: push
        jobs:
          _x: {run: x}
          9.lives-left_: {run: x, needs: _x}
        """,
        workflow_id="ci-1.v2_x",
    )
    assert wf.id == "ci-1.v2_x"
    assert [job.id for job in wf.jobs] == ["_x", "9.lives-left_"]
    long_id = "j" * 100
    assert from_yaml(one_job("run: x").replace("  a:", f"  {long_id}:")).jobs[0].id == long_id


# --------------------------------------------------------------------------- steps


def steps_job(steps: str, env: str = "") -> JobDef:
    return from_yaml(one_job(f"{env}steps:\n{textwrap.indent(textwrap.dedent(steps), '  ')}")).jobs[
        0
    ]


def test_steps_run_in_order_with_their_own_env(tmp_path: Path) -> None:
    job = steps_job(
        """
        - id: first
          env: {GREETING: "hello 'quoted' \\"world\\" $HOME `id` \\\\ done", ONLY: one}
          run: printf '%s|%s|%s\\n' "$GREETING" "$ONLY" "$JOBVAR"
        - name: second
          run: |
            echo "only=[${ONLY-unset}] job=$JOBVAR"
            echo 'single '"'"'quotes'"'"' and $(not expanded)'
        """,
        env="env: {JOBVAR: from-job}\n",
    )
    result = run_sh(job.command, dict(job.env), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "hello 'quoted' \"world\" $HOME `id` \\ done|one|from-job",
        "only=[unset] job=from-job",
        "single 'quotes' and $(not expanded)",
    ]
    # The step env lives in the command, not in the job's env.
    assert job.env == {"JOBVAR": "from-job"}


def test_steps_fail_fast_with_the_failing_exit_code(tmp_path: Path) -> None:
    job = steps_job(
        """
        - run: echo one
        - run: |
            echo two
            exit 3
        - run: echo three
        """
    )
    result = run_sh(job.command, {}, tmp_path)
    assert result.returncode == 3
    assert result.stdout.splitlines() == ["one", "two"]


def test_each_step_has_its_own_shell(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    job = steps_job(
        """
        - run: cd sub && X=1 && pwd
        - run: pwd && echo "x=${X-unset}"
        """
    )
    result = run_sh(job.command, {}, tmp_path)
    assert result.returncode == 0, result.stderr
    first, second, x = result.stdout.splitlines()
    assert first.endswith("/sub")
    assert not second.endswith("/sub")
    assert x == "x=unset"


def test_step_labels_cannot_break_out_of_their_comment(tmp_path: Path) -> None:
    job = steps_job(
        """
        - name: "line one\\nexit 7"
          run: echo ran
        - id: check
          run: echo again
        """
    )
    assert "# step 1: line one exit 7" in job.command
    assert "# step 2: check" in job.command
    result = run_sh(job.command, {}, tmp_path)
    assert (result.returncode, result.stdout) == (0, "ran\nagain\n")


# --------------------------------------------------------------------------- file rejections


def test_unknown_need_message() -> None:
    err = yaml_error(
        """
        name: Demo
        on: push
        jobs:
          test: {run: x}
          build: {run: x, needs: [test, tset]}
        """
    )
    assert str(err) == "workflows/ci.yml: job 'build': needs unknown job 'tset'"
    assert (err.source, err.job_id, err.problem) == (SOURCE, "build", "needs unknown job 'tset'")


def test_cycle_message_has_the_path() -> None:
    err = yaml_error(
        """
        name: Demo
        on: push
        jobs:
          a: {run: x, needs: b}
          b: {run: x, needs: a}
        """
    )
    assert str(err) == "workflows/ci.yml: cycle: a -> b -> a"
    assert err.job_id is None


def test_longer_cycle_starts_at_the_first_defined_job() -> None:
    err = yaml_error(
        """
        name: Demo
        on: push
        jobs:
          root: {run: x}
          c: {run: x, needs: [root, b]}
          a: {run: x, needs: c}
          b: {run: x, needs: a}
          after: {run: x, needs: a}
        """
    )
    assert err.problem == "cycle: c -> b -> a -> c"


@pytest.mark.parametrize(
    ("jobs", "job_id", "problem"),
    [
        ("a: {run: x, needs: a}", "a", "needs itself"),
        ("a: {run: x}\n  b: {run: x, needs: [a, a]}", "b", "needs 'a' more than once"),
        ("a: {run: x, needs: 5}", "a", "`needs` must be a job id or a list of job ids, got 5"),
        ("a: {run: x, needs: [true]}", "a", "`needs` entry 1 must be a job id, got true"),
    ],
)
def test_bad_needs(jobs: str, job_id: str, problem: str) -> None:
    err = yaml_error(f"name: Demo\non: push\njobs:\n  {jobs}\n")
    assert (err.job_id, err.problem) == (job_id, problem)


def test_duplicate_job_ids_in_yaml() -> None:
    err = yaml_error(
        """
        name: Demo
        on: push
        jobs:
          build: {run: x}
          test: {run: y}
          build: {run: z}
        """
    )
    assert err.job_id == "build"
    assert str(err) == "workflows/ci.yml: job 'build': defined more than once (line 7)"


def test_duplicate_keys_elsewhere_in_yaml() -> None:
    err = yaml_error(one_job("run: x\nenv: {A: 1, A: 2}"))
    assert (err.job_id, err.problem) == ("a", "duplicate key 'A' in env (line 6)")
    err = yaml_error("name: A\nname: B\non: push\njobs:\n  a: {run: x}\n")
    assert err.problem == "duplicate key 'name' (line 2)"
    err = yaml_error("name: A\non: push\non: pull\njobs:\n  a: {run: x}\n")
    assert err.problem == "duplicate key 'on' (line 3)"
    err = yaml_error("name: A\non: {push: {branches: [a], branches: [b]}}\njobs:\n  a: {run: x}\n")
    assert err.problem == "duplicate key 'branches' in on.push (line 2)"


def test_duplicate_keys_in_json() -> None:
    text = '{"name": "x", "on": "push", "jobs": {"a": {"run": "x"}, "a": {"run": "y"}}}'
    with pytest.raises(DefinitionError) as caught:
        parse_text(text, source="w.json", workflow_id="w", fmt="json")
    assert str(caught.value) == "w.json: job 'a': defined more than once"
    text = '{"name": "x", "on": "push", "jobs": {"a": {"run": "x", "env": {"K": "1", "K": "2"}}}}'
    with pytest.raises(DefinitionError) as caught:
        parse_text(text, source="w.json", workflow_id="w", fmt="json")
    assert (caught.value.job_id, caught.value.problem) == ("a", "duplicate key 'K' in env")


def test_on_given_both_bare_and_quoted() -> None:
    err = yaml_error('name: A\non: push\n"on": pull\njobs:\n  a: {run: x}\n')
    assert err.problem == "`on` is given twice"


@pytest.mark.parametrize("retries", ["-1", "101", "'3'", "true", "1.5", "[1]", "null_", "1e3"])
def test_bad_retries(retries: str) -> None:
    err = yaml_error(one_job(f"run: x\nretries: {retries}"))
    assert err.job_id == "a"
    assert err.problem.startswith("`retries` must be an integer from 0 to 100, got")


@pytest.mark.parametrize(
    ("backoff", "fragment"),
    [
        ("sometimes", "`backoff` must be none, {fixed: N}"),
        ("fixed", "`backoff` must be"),
        ("[fixed]", "got a list"),
        ("5", "got 5"),
        ("{fixed: -1}", "backoff delay_secs must be an integer from 0 to 86400, got -1"),
        ("{fixed: 86401}", "delay_secs must be an integer from 0 to 86400"),
        ("{fixed: true}", "backoff `fixed` must be a mapping, got true"),
        ("{fixed: {delay: 5}}", "unknown key 'delay'"),
        ("{fixed: {delay_secs: '5'}}", "delay_secs must be an integer"),
        ("{exponential: {base_secs: 0, max_secs: 5}}", "base_secs must be an integer from 1"),
        ("{exponential: {base_secs: 10, max_secs: 5}}", "max_secs (5) must be at least base_secs"),
        ("{exponential: {base_secs: 1}}", "max_secs must be an integer from 1 to 86400, got 0"),
        ("{exponential: {base_secs: 1, max_secs: 90000}}", "max_secs must be an integer"),
        ("{exponential: 5}", "backoff `exponential` must be a mapping"),
        ("{fixed: 1, exponential: {base_secs: 1, max_secs: 2}}", "`backoff` must be"),
        ("{none: 5}", "backoff `none` takes no settings"),
        ("{FIXED: 5}", "`backoff` must be"),
        ("{}", "`backoff` must be"),
    ],
)
def test_bad_backoff(backoff: str, fragment: str) -> None:
    err = yaml_error(one_job(f"run: x\nretries: 1\nbackoff: {backoff}"))
    assert err.job_id == "a"
    assert fragment in err.problem


@pytest.mark.parametrize(
    "timeout", ["0", "-5", "5x", "1.5h", "''", "604801", "8d", "true", "1.5", "[1]", "0s", "5 m"]
)
def test_bad_timeout(timeout: str) -> None:
    err = yaml_error(one_job(f"run: x\ntimeout: {timeout}"))
    assert err.job_id == "a"
    assert err.problem.startswith("`timeout` must be a number of seconds or a duration")


def test_if_on_a_job_is_rejected() -> None:
    err = yaml_error(one_job("if: github.ref == 'refs/heads/main'\nrun: x"))
    assert str(err) == (
        "workflows/ci.yml: job 'a': `if` conditions are not supported; "
        "remove it or move the check into the command"
    )


def test_if_on_a_step_is_rejected() -> None:
    err = yaml_error(one_job("steps:\n  - run: x\n  - if: always()\n    run: y"))
    assert err.job_id == "a"
    assert err.problem.startswith("step 2: `if` conditions are not supported")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("name: A\non: push\njobz: {}\njobs:\n  a: {run: x}\n", "unknown key 'jobz'"),
        ("name: A\non: push\n2: x\njobs:\n  a: {run: x}\n", "unknown key 2"),
        ("name: A\non: push\nrun-name: x\npermissions: y\njobs:\n  a: {run: x}\n", "unknown keys"),
    ],
)
def test_unknown_top_level_keys(text: str, fragment: str) -> None:
    err = yaml_error(text)
    assert fragment in err.problem
    assert "expected one of: name, on, env, jobs" in err.problem


def test_unknown_job_and_step_keys() -> None:
    err = yaml_error(one_job("runs: x"))
    assert (err.job_id, err.problem.split(" (")[0]) == ("a", "unknown key 'runs'")
    err = yaml_error(one_job("steps:\n  - run: x\n    shell: bash"))
    assert err.job_id == "a"
    assert err.problem.startswith("step 1: unknown key 'shell'")


HEAD = "name: A\non: push\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the file is empty; expected name, on and jobs"),
        ("- a\n- b\n", "the workflow must be a mapping, got a list"),
        ("on: push\njobs:\n  a: {run: x}\n", "missing required key `name`"),
        ("name: A\njobs:\n  a: {run: x}\n", "missing required key `on`"),
        (HEAD, "missing required key `jobs`"),
        (HEAD + "jobs: {}\n", "`jobs` must not be empty"),
        (HEAD + "jobs: [a]\n", "`jobs` (job id -> job) must be a mapping, got a list"),
        ("name: ''\non: push\njobs:\n  a: {run: x}\n", "`name` must not be empty"),
        ("name: 5\non: push\njobs:\n  a: {run: x}\n", "`name` must be a string, got 5"),
        (
            "name: A\non: 5\njobs:\n  a: {run: x}\n",
            "`on` must be an event name, a list of them or a mapping keyed by them, got 5",
        ),
        ("name: A\non: []\njobs:\n  a: {run: x}\n", "`on` must name at least one event"),
        ("name: A\non: [push, 3]\njobs:\n  a: {run: x}\n", "`on` entry 2 must be a string, got 3"),
        (HEAD + "env: [A]\njobs:\n  a: {run: x}\n", "`env` must be a mapping, got a list"),
    ],
)
def test_top_level_shape_and_type_errors(text: str, problem: str) -> None:
    err = yaml_error(text)
    assert (err.job_id, err.problem) == (None, problem)


@pytest.mark.parametrize(
    ("job", "problem"),
    [
        ("", "has no body; it needs at least `run` or `steps`"),
        ("echo", "the job must be a mapping, got 'echo'"),
        ("{name: A}", "needs a `run` command or `steps`"),
        ("{run: x, steps: [{run: y}]}", "give either `run` or `steps`, not both"),
        ("{run: ''}", "`run` must not be empty"),
        ("{run: '   '}", "`run` must not be empty"),
        ("{run: 5}", "`run` must be a string, got 5"),
        ("{run: x, name: [1]}", "`name` must be a string, got a list"),
        ("{steps: run}", "`steps` must be a list of steps, got 'run'"),
        ("{steps: []}", "`steps` must not be empty"),
        ("{steps: [echo]}", "step 1: the step must be a mapping, got 'echo'"),
        ("{steps: [{name: x}]}", "step 1: missing required key `run`"),
        ("{steps: [{run: x, env: [1]}]}", "step 1: `env` must be a mapping, got a list"),
        ("{steps: [{id: s, run: x}, {id: s, run: y}]}", "step 2: step id 's' is used twice"),
        ("{run: x, labels: linux}", "`labels` must be a list of strings, got 'linux'"),
        ("{run: x, labels: 5}", "`labels` must be a list of strings, got 5"),
        ("{run: x, labels: [1]}", "`labels` entry 1 must be a string, got 1"),
        ("{run: x, labels: ['']}", "`labels` entry 1 must not be empty"),
        ("{run: x, labels: ['a,b']}", "label 'a,b' must not contain a comma"),
        (
            f"{{run: x, labels: [{'l' * 65}]}}",
            f"label '{'l' * 57}...' is longer than 64 characters",
        ),
        ("{run: x, env: {A: [1]}}", "`env` A must be a string, number or boolean, got a list"),
        ("{run: x, env: {A: }}", "`env` A has no value; write '' for an empty string"),
        (
            "{run: x, env: {1X: y}}",
            "`env` name '1X' must be letters, digits and '_', not starting with a digit",
        ),
        (
            "{run: x, env: {A-B: y}}",
            "`env` name 'A-B' must be letters, digits and '_', not starting with a digit",
        ),
        ("{run: x, env: {7: y}}", "`env` name 7 must be a string (quote it)"),
        ("{run: x, env: {OFF: y}}", "`env` name false must be a string (quote it)"),
        ("{run: x, env: 5}", "`env` must be a mapping, got 5"),
    ],
)
def test_job_shape_and_type_errors(job: str, problem: str) -> None:
    err = yaml_error(f"{HEAD}jobs:\n  a: {job}\n")
    assert (err.job_id, err.problem) == ("a", problem)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("bad id", "job id 'bad id' may only contain letters, digits"),
        (".hidden", "job id '.hidden' may only contain"),
        ("-x", "job id '-x' may only contain"),
        ("'é'", "job id 'é' may only contain"),
        ("'" + "j" * 101 + "'", "is longer than 100 characters"),
        ("123", "job id must be a string, got 123 (quote it)"),
        ("yes", "job id must be a string, got true (quote it)"),
        ("''", "job id must not be empty"),
    ],
)
def test_bad_job_ids(key: str, fragment: str) -> None:
    err = yaml_error(f"name: A\non: push\njobs:\n  {key}: {{run: x}}\n")
    assert fragment in err.problem


@pytest.mark.parametrize("workflow_id", ["my workflow", "", ".ci", "w" * 101, "ci/x"])
def test_bad_workflow_ids(workflow_id: str) -> None:
    err = yaml_error(one_job("run: x"), workflow_id=workflow_id)
    assert "workflow id" in err.problem


def test_unprintable_text_is_rejected() -> None:
    err = yaml_error(one_job('run: "echo \\0"'))
    assert (err.job_id, err.problem) == ("a", "`run` contains a NUL character")
    text = '{"name": "x", "on": "push", "jobs": {"a": {"run": "echo \\ud800"}}}'
    with pytest.raises(DefinitionError, match="not valid Unicode text"):
        parse_text(text, source="w.json", workflow_id="w", fmt="json")


@pytest.mark.parametrize(
    ("text", "fmt", "fragment"),
    [
        ("name: [unclosed\n", "yaml", "invalid YAML (line"),
        ("a: 1\n---\nb: 2\n", "yaml", "invalid YAML"),
        ("x: !!python/object:os.system ls\n", "yaml", "invalid YAML"),
        ("x: !!binary 'a'\n", "yaml", "invalid YAML"),
        ("x: " + "1" * 5000 + "\n", "yaml", "invalid YAML"),
        ("[" * 100_000, "yaml", "invalid YAML"),
        ('{"name": ', "json", "invalid JSON (line 1"),
        ('{"name": NaN}', "json", "invalid JSON"),
        ("[" * 100_000, "json", "invalid JSON"),
        ('{"n": ' + "1" * 5000 + "}", "json", "invalid JSON"),
        ("name: \ud800\n", "yaml", "invalid YAML"),
        ('{"name": "x"}\ud800', "json", "invalid JSON"),
    ],
)
def test_unparsable_text(text: str, fmt: str, fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_text(text, source="src", workflow_id="w", fmt=fmt)  # type: ignore[arg-type]
    assert fragment in caught.value.problem
    assert str(caught.value).startswith("src: ")


def test_unknown_format() -> None:
    with pytest.raises(DefinitionError, match="unknown format 'toml'"):
        parse_text("", source="src", workflow_id="w", fmt="toml")  # type: ignore[arg-type]


def test_too_many_jobs() -> None:
    jobs = {f"j{i}": {"run": "x"} for i in range(MAX_JOBS + 1)}
    with pytest.raises(DefinitionError, match="too many jobs"):
        parse_file_mapping({"name": "A", "on": "push", "jobs": jobs}, source="s", workflow_id="w")


# --------------------------------------------------------------------------- API shape


def test_api_minimal() -> None:
    wf = api([{"id": "a", "command": "echo a"}])
    assert (wf.id, wf.name, wf.trigger, wf.env) == ("wf", "Demo", "", {})
    assert wf.jobs[0] == JobDef("a", "a", "echo a", (), (), 0, Backoff(), 0, {})


def test_api_full_job() -> None:
    wf = api(
        [
            {"id": "a", "command": "echo a"},
            {
                "id": "b",
                "name": "Bee",
                "command": "echo b",
                "depends_on": ["a"],
                "required_labels": ["linux", "gpu", "linux"],
                "max_retries": 3,
                "retry_policy": {"backoff": {"Fixed": {"delay_secs": 4}}},
                "timeout_secs": 60,
                "env": {"X": "job", "Y": "y"},
            },
        ],
        id="wf",
        trigger="push",
        env={"X": "wf", "Z": "z"},
    )
    b = wf.jobs[1]
    assert b == JobDef(
        id="b",
        name="Bee",
        command="echo b",
        depends_on=("a",),
        required_labels=("gpu", "linux"),
        max_retries=3,
        backoff=Backoff("fixed", delay_secs=4),
        timeout_secs=60,
        env={"X": "job", "Z": "z", "Y": "y"},
    )
    assert wf.trigger == "push"
    assert wf.jobs[0].env == {"X": "wf", "Z": "z"}


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("None", Backoff()),
        ({"None": {}}, Backoff()),
        ({"none": {}}, Backoff()),
        (None, Backoff()),
        ({"Fixed": {"delay_secs": 3}}, Backoff("fixed", delay_secs=3)),
        ({"fixed": {"delay_secs": 3}}, Backoff("fixed", delay_secs=3)),
        ({"fixed": {}}, Backoff("fixed", delay_secs=0)),
        (
            {"Exponential": {"base_secs": 1, "max_secs": 8}},
            Backoff("exponential", base_secs=1, max_secs=8),
        ),
        (
            {"exponential": {"base_secs": 2, "max_secs": 2}},
            Backoff("exponential", base_secs=2, max_secs=2),
        ),
    ],
)
def test_api_backoff_spellings(backoff: Any, expected: Backoff) -> None:
    job = api([{"id": "a", "command": "x", "retry_policy": {"backoff": backoff}}]).jobs[0]
    assert job.backoff == expected


@pytest.mark.parametrize(
    ("top", "policy", "expected"),
    [(3, 3, 3), (0, 4, 4), (5, 0, 5), (5, None, 5), (None, 6, 6), (None, None, 0)],
)
def test_api_max_retries_from_either_place(
    top: int | None, policy: int | None, expected: int
) -> None:
    job: dict[str, Any] = {"id": "a", "command": "x"}
    if top is not None:
        job["max_retries"] = top
    if policy is not None:
        job["retry_policy"] = {"max_retries": policy}
    assert api([job]).jobs[0].max_retries == expected


def test_api_max_retries_conflict() -> None:
    err = api_error(
        [{"id": "a", "command": "x", "max_retries": 3, "retry_policy": {"max_retries": 4}}]
    )
    assert (err.job_id, err.problem) == (
        "a",
        "`max_retries` (3) and `retry_policy.max_retries` (4) disagree",
    )


def test_api_output_only_fields_are_ignored() -> None:
    # What a fetched workflow carries: a proto message with defaults included, its
    # times as the REST surfaces spell them.
    job = {
        "id": "a",
        "name": "",
        "command": "x",
        "status": "JOB_STATE_UNSPECIFIED",
        "duration_secs": "12",
        "started_at": 1.5e12,
        "output": "boom",
        "attempt": 2,
        "outputs": {"k": "v"},
        "delayed_until_ms": "0",
        "attempts": [{"attempt": 0, "lease_id": "l1", "outcome": "ATTEMPT_OUTCOME_SUCCEEDED"}],
        "depends_on": [],
        "required_labels": [],
        "max_retries": 0,
        "retry_policy": {},
        "timeout_secs": 0,
        "env": {},
    }
    wf = api([job], id="", trigger="", version=3, run_id="r1", run_state="RUN_STATE_RUNNING")
    assert wf.jobs[0] == JobDef("a", "a", "x", (), (), 0, Backoff(), 0, {})


def test_api_id_must_match() -> None:
    assert api([{"id": "a", "command": "x"}], id="wf").id == "wf"
    err = api_error([{"id": "a", "command": "x"}], id="other")
    assert err.problem == "`id` 'other' does not match the workflow id 'wf'"


def job_a(**fields: Any) -> list[dict[str, Any]]:
    """A one-job API list whose job `a` has the given fields on top of a valid minimum."""
    return [{"id": "a", "command": "x", **fields}]


def backoff_a(backoff: Any) -> list[dict[str, Any]]:
    return job_a(retry_policy={"backoff": backoff})


@pytest.mark.parametrize(
    ("jobs", "top", "job_id", "problem"),
    [
        (job_a(), {"jobz": 1}, None, "unknown key 'jobz'"),
        (job_a(cmd="y"), {}, "a", "unknown key 'cmd'"),
        ([{"id": "a"}], {}, "a", "missing required key `command`"),
        (job_a(command=""), {}, "a", "`command` must not be empty"),
        (job_a(command=["ls"]), {}, "a", "`command` must be a string, got a list"),
        ([{"command": "x"}], {}, None, "jobs[0]: missing required key `id`"),
        ([{"id": 5, "command": "x"}], {}, None, "jobs[0]: `id` must be a string, got 5"),
        ([{"id": "a b", "command": "x"}], {}, None, "jobs[0]: `id` 'a b' may only contain"),
        (["a"], {}, None, "jobs[0]: the job must be a mapping, got 'a'"),
        ({"a": {"command": "x"}}, {}, None, "`jobs` must be a list of jobs, got a mapping"),
        ([], {}, None, "`jobs` must not be empty"),
        (None, {}, None, "missing required key `jobs`"),
        (job_a() + job_a(), {}, "a", "defined more than once (jobs[0] and jobs[1])"),
        (job_a(depends_on="b"), {}, "a", "`depends_on` must be a list of job ids, got 'b'"),
        (job_a(depends_on=[1]), {}, "a", "`depends_on` entry 1 must be a job id, got 1"),
        (job_a(depends_on=["z"]), {}, "a", "depends on unknown job 'z'"),
        (job_a(depends_on=["a"]), {}, "a", "depends on itself"),
        (job_a(max_retries=-1), {}, "a", "`max_retries` must be an integer from 0 to 100"),
        (job_a(max_retries=101), {}, "a", "`max_retries` must be an integer from 0 to 100"),
        (job_a(max_retries="2"), {}, "a", "`max_retries` must be an integer from 0 to 100"),
        (job_a(retry_policy=3), {}, "a", "`retry_policy` must be a mapping, got 3"),
        (job_a(retry_policy={"tries": 3}), {}, "a", "`retry_policy`: unknown key 'tries'"),
        (
            backoff_a({"Fixed": {"delay_secs": -9}}),
            {},
            "a",
            "`retry_policy`: backoff delay_secs must be an integer from 0 to 86400, got -9",
        ),
        (
            backoff_a({"Exponential": {"base_secs": 9, "max_secs": 3}}),
            {},
            "a",
            "`retry_policy`: backoff max_secs (3) must be at least base_secs (9)",
        ),
        (
            backoff_a("Linear"),
            {},
            "a",
            '`retry_policy`: `backoff` must be "None", {"Fixed": {"delay_secs": N}}',
        ),
        (job_a(timeout_secs=-1), {}, "a", "`timeout_secs` must be an integer from 0 to 604800"),
        (job_a(timeout_secs=604_801), {}, "a", "`timeout_secs` must be an integer"),
        (job_a(env={"A": 1}), {}, "a", "`env` A must be a string, got 1"),
        (job_a(required_labels="l"), {}, "a", "`required_labels` must be a list of strings"),
        (job_a(), {"name": ""}, None, "`name` must not be empty"),
        (job_a(), {"name": None}, None, "missing required key `name`"),
        (job_a(), {"trigger": 5}, None, "`trigger` must be a string"),
        (job_a(), {"env": {"A": None}}, None, "`env` A must be a string"),
    ],
)
def test_api_rejections(jobs: Any, top: dict[str, Any], job_id: str | None, problem: str) -> None:
    err = api_error(jobs, **top)
    assert err.source == "api"
    assert err.job_id == job_id
    assert err.problem.startswith(problem), err.problem


def test_api_cycle() -> None:
    err = api_error(
        [
            {"id": "a", "command": "x", "depends_on": ["c"]},
            {"id": "b", "command": "x", "depends_on": ["a"]},
            {"id": "c", "command": "x", "depends_on": ["b"]},
        ]
    )
    assert str(err) == "api: cycle: a -> c -> b -> a"


def test_api_rejects_non_mappings() -> None:
    data: Any
    for data in (None, [], "x", 5):
        with pytest.raises(DefinitionError, match="the workflow must be a mapping"):
            parse_api_mapping(data, workflow_id="wf")


# --------------------------------------------------------------------------- model


def test_backoff_delays() -> None:
    assert Backoff().delay_for(0) == 0.0
    assert Backoff("fixed", delay_secs=5).delay_for(7) == 5.0
    exp = Backoff("exponential", base_secs=2, max_secs=60)
    assert [exp.delay_for(n) for n in range(7)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert exp.delay_for(10**9) == 60.0
    assert exp.delay_for(-1) == 2.0
    assert isinstance(exp.delay_for(1), float)


@pytest.mark.parametrize(
    "backoff",
    [Backoff(), Backoff("fixed", delay_secs=9), Backoff("exponential", base_secs=3, max_secs=30)],
)
def test_backoff_json_round_trip(backoff: Backoff) -> None:
    data = backoff.to_json()
    assert set(data) == {"kind", "delay_secs", "base_secs", "max_secs"}
    assert Backoff.from_json(json.loads(json.dumps(data))) == backoff


def test_backoff_from_json_rejects_garbage() -> None:
    for data in ({"kind": "linear"}, {"kind": "fixed", "delay_secs": -2}, {"kind": "x", "y": 1}):
        with pytest.raises(DefinitionError):
            Backoff.from_json(data)


def sample(name: str) -> WorkflowDef:
    return parse_file(REPO / "workflows" / name)


def test_workflow_json_round_trip() -> None:
    for wf in (
        sample("ci.yml"),
        sample("hello.yml"),
        api([{"id": "a", "command": "echo é", "env": {"E": "é"}}]),
    ):
        stored = json.loads(json.dumps(wf.to_json()))
        again = WorkflowDef.from_json(stored)
        assert again == wf
        assert again.to_json() == wf.to_json()
        assert again.fingerprint() == wf.fingerprint()


def test_from_json_validates() -> None:
    good = sample("ci.yml").to_json()
    broken = copy.deepcopy(good)
    broken["jobs"][0]["depends_on"] = ["build"]
    with pytest.raises(DefinitionError, match="cycle: "):
        WorkflowDef.from_json(broken)
    data: Any
    for data in ({}, {"id": "x"}, [], {**good, "jobs": []}, {**good, "jobs": [{"id": 5}]}):
        with pytest.raises(DefinitionError):
            WorkflowDef.from_json(data)
    # Fields written by a newer server are tolerated.
    assert WorkflowDef.from_json({**good, "labels": {}}) == sample("ci.yml")


def test_fingerprint_is_stable_and_tracks_content() -> None:
    base = sample("ci.yml")
    assert base.fingerprint() == sample("ci.yml").fingerprint()
    assert len(base.fingerprint()) == 64
    text = (REPO / "workflows" / "ci.yml").read_text()
    same = parse_text(text + "\n# a trailing comment\n", source="x", workflow_id="ci")
    assert same.fingerprint() == base.fingerprint()
    for old, new in [
        ('echo "formatting ok"', 'echo "formatting fine"'),
        ("retries: 2", "retries: 3"),
        ("APP: app", "APP: other"),
        ("name: CI", "name: CI2"),
        ("base_secs: 1", "base_secs: 2"),
    ]:
        assert old in text
        changed = parse_text(text.replace(old, new), source="x", workflow_id="ci")
        assert changed.fingerprint() != base.fingerprint(), old


def test_fingerprint_ignores_env_key_order() -> None:
    a = from_yaml(one_job("run: x\nenv: {A: '1', B: '2'}"))
    b = from_yaml(one_job("run: x\nenv: {B: '2', A: '1'}"))
    assert a.fingerprint() == b.fingerprint()


def test_children() -> None:
    wf = sample("ci.yml")
    assert wf.children() == {
        "checkout": ("lint", "test"),
        "lint": ("build",),
        "test": ("build",),
        "build": (),
    }


def test_definitions_are_frozen_and_hashable() -> None:
    wf = sample("ci.yml")
    with pytest.raises(FrozenInstanceError):
        wf.name = "x"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        wf.jobs[0].command = "x"  # type: ignore[misc]
    assert hash(wf) == hash(sample("ci.yml"))
    assert wf == sample("ci.yml")


def test_definition_error_shape() -> None:
    err = DefinitionError("workflows/ci.yml", "needs unknown job 'tset'", job_id="build")
    assert isinstance(err, ValueError)
    assert str(err) == "workflows/ci.yml: job 'build': needs unknown job 'tset'"
    assert str(DefinitionError("api", "cycle: a -> b -> a")) == "api: cycle: a -> b -> a"
    again = pickle.loads(pickle.dumps(err))
    assert (again.source, again.problem, again.job_id, str(again)) == (
        err.source,
        err.problem,
        err.job_id,
        str(err),
    )


# --------------------------------------------------------------------------- files and dirs


def test_parse_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(one_job("run: x"))
    assert parse_file(path).id == "demo"
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"name": "A", "on": "push", "jobs": {"a": {"run": "x"}}}')
    assert parse_file(bom).id == "bom"
    with pytest.raises(DefinitionError, match="unsupported file type"):
        parse_file(tmp_path / "demo.toml")
    with pytest.raises(DefinitionError, match="cannot read the file"):
        parse_file(tmp_path / "missing.yml")
    latin = tmp_path / "latin.yml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(DefinitionError, match="not UTF-8"):
        parse_file(latin)


def test_load_dir_skips_and_reports_bad_files(tmp_path: Path) -> None:
    good = one_job("run: echo ok")
    (tmp_path / "b-good.yml").write_text(good)
    (tmp_path / "a-good.json").write_text(
        json.dumps({"name": "J", "on": "push", "jobs": {"a": {"run": "x"}}})
    )
    (tmp_path / "c-cycle.yaml").write_text("name: C\non: push\njobs:\n  a: {run: x, needs: a}\n")
    (tmp_path / "d-broken.json").write_text("{")
    (tmp_path / "e-good.yml").write_text(good)
    (tmp_path / "e-good.json").write_text(
        json.dumps({"name": "J", "on": "push", "jobs": {"a": {"run": "x"}}})
    )
    (tmp_path / "bad name.yml").write_text(good)
    (tmp_path / "notes.txt").write_text("not a workflow")
    (tmp_path / ".swap.yml").write_text("garbage: [")
    (tmp_path / "dir.yml").mkdir()

    loaded, errors = load_dir(tmp_path)
    assert [wf.id for wf in loaded] == ["a-good", "b-good", "e-good"]
    assert loaded[2].jobs[0].command == "x"  # e-good.json sorts before e-good.yml
    assert loaded[2].name == "J"
    reported = {Path(err.source).name: err.problem for err in errors}
    assert set(reported) == {"bad name.yml", "c-cycle.yaml", "d-broken.json", "e-good.yml"}
    assert reported["e-good.yml"].startswith("workflow id 'e-good' is already defined by")
    assert all(isinstance(err, DefinitionError) for err in errors)


def test_load_dir_missing_directory(tmp_path: Path) -> None:
    loaded, errors = load_dir(tmp_path / "nope")
    assert loaded == []
    assert len(errors) == 1
    assert errors[0].source == str(tmp_path / "nope")


def test_sample_workflows_load_and_run(tmp_path: Path) -> None:
    loaded, errors = load_dir(REPO / "workflows")
    assert errors == []
    by_id = {wf.id: wf for wf in loaded}
    assert {"ci", "hello"} <= set(by_id)
    ci = by_id["ci"]
    assert ci.children()["checkout"] == ("lint", "test")
    assert ci.children()["lint"] == ci.children()["test"] == ("build",)
    assert any(job.max_retries and job.backoff.kind != "none" for job in ci.jobs)
    for wf in loaded:
        for job in wf.jobs:
            started = time.monotonic()
            result = run_sh(job.command, dict(job.env), tmp_path)
            assert result.returncode == 0, (wf.id, job.id, result.stderr)
            assert result.stdout, (wf.id, job.id)
            assert time.monotonic() - started < 5
    build = next(job for job in ci.jobs if job.id == "build")
    output = run_sh(build.command, dict(build.env), tmp_path).stdout
    assert "::set-output name=artifact::dist/app.tar.gz" in output
    assert run_sh(by_id["hello"].jobs[0].command, {}, tmp_path).stdout == "hello\n"


# --------------------------------------------------------------------------- scale


def chain(count: int) -> dict[str, Any]:
    jobs: dict[str, Any] = {"j0": {"run": "x"}}
    for i in range(1, count):
        jobs[f"j{i}"] = {"run": "x", "needs": f"j{i - 1}"}
    return {"name": "Chain", "on": "push", "jobs": jobs}


def test_long_chain_validates_quickly() -> None:
    started = time.monotonic()
    wf = parse_file_mapping(chain(MAX_JOBS), source="s", workflow_id="chain")
    assert len(wf.jobs) == MAX_JOBS
    assert wf.children()["j0"] == ("j1",)
    api_jobs = [
        {"id": job.id, "command": job.command, "depends_on": list(job.depends_on)}
        for job in wf.jobs
    ]
    assert len(api([*reversed(api_jobs)]).jobs) == MAX_JOBS
    assert WorkflowDef.from_json(wf.to_json()) == wf
    assert time.monotonic() - started < 10


def test_long_chain_yaml_text() -> None:
    lines = ["name: Chain", "on: push", "jobs:", "  j0: {run: x}"]
    lines += [f"  j{i}: {{run: x, needs: j{i - 1}}}" for i in range(1, MAX_JOBS)]
    started = time.monotonic()
    wf = parse_text("\n".join(lines), source="s", workflow_id="chain")
    assert len(wf.jobs) == MAX_JOBS
    assert time.monotonic() - started < 20


def test_long_cycle_is_found_and_abbreviated() -> None:
    data = chain(MAX_JOBS)
    data["jobs"]["j0"]["needs"] = f"j{MAX_JOBS - 1}"
    started = time.monotonic()
    with pytest.raises(DefinitionError) as caught:
        parse_file_mapping(data, source="s", workflow_id="chain")
    assert time.monotonic() - started < 10
    problem = caught.value.problem
    assert problem.startswith("cycle: j0 -> j19999 -> j19998 -> ")
    assert problem.endswith(" -> j1 -> j0")
    assert "... 19990 more ..." in problem
    assert len(problem) < 300


# --------------------------------------------------------------------------- garbage


def junk(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(12 if depth < 3 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 7, 100, 101, 86_401, 2**70, -(2**70), 10**5000])
    if pick == 3:
        return rng.choice([0.5, float("nan"), float("inf"), -0.0, 1e308])
    if pick in (4, 5):
        return rng.choice(
            [
                "",
                " ",
                "a",
                "push",
                "x" * 200,
                "\x00",
                "\ud800",
                "a,b",
                "bad id",
                "None",
                "Fixed",
                "5m",
                "9999999999s",
                "echo hi",
                "j1",
                "é",
            ]
        )
    if pick == 6:
        return rng.choice([b"bytes", object(), (1, 2), {1, 2}, frozenset()])
    if pick == 7:
        return rng.choice(KEYS)
    if pick in (8, 9):
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [rng.choice([*KEYS, 1, True, None, (1,)]) for _ in range(rng.randrange(5))]
    return {key: junk(rng, depth + 1) for key in keys}


KEYS = [
    "name",
    "on",
    "env",
    "jobs",
    "run",
    "steps",
    "needs",
    "timeout",
    "labels",
    "retries",
    "backoff",
    "fixed",
    "Fixed",
    "exponential",
    "Exponential",
    "none",
    "None",
    "delay_secs",
    "base_secs",
    "max_secs",
    "id",
    "command",
    "depends_on",
    "required_labels",
    "max_retries",
    "retry_policy",
    "timeout_secs",
    "trigger",
    "kind",
    "j0",
    "j1",
    "A",
    "inputs",
    "workflow_dispatch",
    "type",
    "required",
    "default",
    "description",
    "string",
    "number",
    "boolean",
    "json",
]

VALID_INPUTS: dict[str, Any] = {
    "t": {"type": "string", "required": True, "description": "d"},
    "n": {"type": "number", "default": 2},
    "j": {"type": "json", "default": {"a": [1, None]}},
    "b": None,
}
VALID_FILE: dict[str, Any] = {
    "name": "Demo",
    "on": {"push": {"branches": ["main"]}, "workflow_dispatch": {"inputs": VALID_INPUTS}},
    "env": {"A": "1", "B": 2},
    "jobs": {
        "j0": {"run": "echo", "retries": 2, "backoff": {"fixed": 3}, "timeout": "5m"},
        "j1": {
            "needs": ["j0"],
            "labels": ["linux"],
            "steps": [{"id": "s", "run": "echo", "env": {"C": "3"}}],
            "backoff": {"exponential": {"base_secs": 1, "max_secs": 4}},
        },
    },
}
VALID_API: dict[str, Any] = {
    "name": "Demo",
    "trigger": "push",
    "env": {"A": "1"},
    "jobs": [
        {"id": "j0", "command": "echo", "max_retries": 1, "timeout_secs": 5},
        {
            "id": "j1",
            "command": "echo",
            "depends_on": ["j0"],
            "required_labels": ["x"],
            "retry_policy": {"max_retries": 1, "backoff": {"Fixed": {"delay_secs": 1}}},
            "env": {"B": "2"},
        },
    ],
    "inputs": VALID_INPUTS,
}


def mutate(rng: random.Random, data: Any) -> Any:
    """Replace, drop or add one thing somewhere inside a valid definition."""
    data = copy.deepcopy(data)
    holder: Any = data
    while True:
        if isinstance(holder, dict) and holder:
            key = rng.choice(list(holder))
        elif isinstance(holder, list) and holder:
            key = rng.randrange(len(holder))
        else:
            return junk(rng)
        child = holder[key]
        if isinstance(child, dict | list) and child and rng.random() < 0.6:
            holder = child
            continue
        action = rng.randrange(3)
        if action == 0:
            holder[key] = junk(rng)
        elif action == 1 and isinstance(holder, dict):
            del holder[key]
        elif isinstance(holder, dict):
            holder[rng.choice(KEYS)] = junk(rng)
        else:
            holder.append(junk(rng))
        return data


def check_outcome(parse: Any, *args: Any, **kwargs: Any) -> None:
    try:
        wf = parse(*args, **kwargs)
    except DefinitionError as exc:
        assert str(exc)
        return
    if isinstance(wf, Backoff):
        assert Backoff.from_json(json.loads(json.dumps(wf.to_json()))) == wf
        return
    # Anything accepted must also survive storage.
    assert WorkflowDef.from_json(json.loads(json.dumps(wf.to_json()))) == wf
    assert len(wf.fingerprint()) == 64


def test_garbage_only_ever_raises_definition_error() -> None:
    rng = random.Random(20240611)
    for _ in range(3000):
        file_data = mutate(rng, VALID_FILE) if rng.random() < 0.8 else junk(rng)
        check_outcome(parse_file_mapping, file_data, source="s", workflow_id="w")
        api_data = mutate(rng, VALID_API) if rng.random() < 0.8 else junk(rng)
        check_outcome(parse_api_mapping, api_data, workflow_id="w")
        stored = mutate(rng, SAMPLE_JSON) if rng.random() < 0.8 else junk(rng)
        check_outcome(WorkflowDef.from_json, stored)
        check_outcome(Backoff.from_json, junk(rng))
        check_outcome(parse_api_mapping, VALID_API, workflow_id=junk(rng))
        check_outcome(parse_file_mapping, VALID_FILE, source="s", workflow_id=junk(rng))


SAMPLE_JSON = parse_api_mapping(VALID_API, workflow_id="w").to_json()


def test_garbage_text_only_ever_raises_definition_error() -> None:
    rng = random.Random(7)
    base_yaml = (REPO / "workflows" / "ci.yml").read_text()
    base_json = json.dumps(VALID_FILE)
    alphabet = "{}[]:,-'\"\\ \n\t#&*!|>%@`?0aZ\x00\x1b\u00e9\ufeff\ud800"
    for _ in range(1500):
        for base, fmt in ((base_yaml, "yaml"), (base_json, "json")):
            text = list(base)
            for _ in range(rng.randrange(1, 6)):
                pos = rng.randrange(len(text) + 1)
                if rng.random() < 0.5 and pos < len(text):
                    del text[pos]
                else:
                    text.insert(pos, rng.choice(alphabet))
            check_outcome(parse_text, "".join(text), source="s", workflow_id="w", fmt=fmt)
        noise = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        check_outcome(parse_text, noise, source="s", workflow_id="w")
        check_outcome(parse_text, noise, source="s", workflow_id="w", fmt="json")
