"""A workflow's lifecycle through the SDK's Client and ``trellis workflow ...``,
against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Running
from sdk_helpers import PROC_TIMEOUT, TRELLIS, client_for, one_error_line, trellis, uid

from trellis.server.engine.definitions import dump_documents, parse_documents
from trellis.v1 import jobs_pb2
from trellis.worker_sdk import Aborted, Client, FailedPrecondition, InvalidArgument


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


@pytest.fixture
def client(server: Running) -> Iterator[Client]:
    with client_for(server) as c:
        yield c


def test_client_versions_edits_and_refusals(client: Client) -> None:
    wf = uid()
    client.create_workflow(
        {"name": "W", "on": "push", "jobs": {"a": {"run": "echo a"}}}, workflow_id=wf
    )
    added = client.add_workflow_job(wf, jobs_pb2.Job(id="b", command="echo b", depends_on=["a"]))
    assert added.version == 2
    client.update_workflow_job(wf, "b", jobs_pb2.Job(command="make b"), ["command"])
    assert [j.command for j in client.list_workflow_jobs(wf)] == ["echo a", "make b"]
    with pytest.raises(InvalidArgument, match="cycle"):
        client.add_workflow_edge(wf, "b", "a")
    with pytest.raises(Aborted, match="version 3"):
        client.rename_workflow_job(wf, "a", "first", expected_version=2)
    with pytest.raises(FailedPrecondition, match="cascade"):
        client.remove_workflow_job(wf, "a")
    assert [v.version for v in client.list_workflow_versions(wf)] == [3, 2, 1]
    assert client.revert_workflow(wf, 1).version == 4
    assert client.get_workflow_version(wf, 2).workflow.jobs[1].id == "b"

    copy = client.clone_workflow(wf, uid("copy"))
    assert not client.disable_workflow(copy.id).enabled
    with pytest.raises(FailedPrecondition, match="disabled"):
        client.run_workflow(copy.id)
    assert client.enable_workflow(copy.id).enabled

    text = client.export_workflows(wf)
    assert client.delete_workflow(wf).workflow_id == wf
    [planned] = client.import_workflows(text, dry_run=True)
    assert planned.workflow_id == wf and planned.version == 5
    [imported] = client.import_workflows(text)
    assert imported.version == 5 and client.export_workflows(wf) == text


def test_trellis_workflow_commands(server: Running, client: Client, tmp_path: Path) -> None:
    target = ["--target", server.grpc_target]
    wf = uid()
    client.create_workflow(
        {"name": "W", "on": "push", "jobs": {"a": {"run": "echo a"}}}, workflow_id=wf
    )

    def ok(*args: str, stdin: str | None = None) -> str:
        done = trellis("workflow", *args, *target, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert (
        ok("add-job", wf, "b", "--run", "echo b", "--needs", "a") == f"workflow {wf}: version 2\n"
    )
    assert ok("update-job", wf, "b", "--timeout", "30") == f"workflow {wf}: version 3\n"
    ok("rename-job", wf, "a", "first")
    assert "first" in ok("jobs", wf)
    cycle = trellis("workflow", "add-edge", wf, "b", "first", *target)
    assert cycle.returncode == 1 and "cycle" in one_error_line(cycle)
    ok("remove-edge", wf, "first", "b")
    ok("remove-job", wf, "first", "--expected-version", "5")
    versions = ok("versions", wf).splitlines()
    assert versions[0].split()[0] == "VERSION" and versions[1].split()[0] == "6"
    ok("revert", wf, "2")

    assert ok("disable", wf) == f"workflow {wf}: disabled\n"
    refused = trellis("run", wf, *target)
    assert refused.returncode == 1 and "disabled" in one_error_line(refused)
    ok("enable", wf)
    ok("clone", wf, f"{wf}-copy", "--name", "Copy")

    exported = ok("export", wf)
    (tmp_path / "export.yml").write_text(exported)
    assert ok("delete", wf, "--purge-runs") == f"workflow {wf}: deleted with 0 run(s)\n"
    dry = ok("import", str(tmp_path / "export.yml"), "--dry-run")
    assert dry == f"workflow {wf}: would be created, version 8\n"
    assert ok("import", "-", stdin=exported) == f"workflow {wf}: created, version 8\n"
    assert ok("export", wf) == exported
    bad = trellis("workflow", "import", "-", *target, stdin="id: x\nname: [\n")
    assert bad.returncode == 1 and "invalid YAML" in one_error_line(bad)


def _readme_block(kind: str) -> str:
    section = (ROOT / "README.md").read_text().split("## Workflow lifecycle\n", 1)[1]
    found = re.search(rf"```{kind}\n(.*?)```", section.split("\n## ", 1)[0], re.DOTALL)
    assert found is not None
    return found.group(1)


def test_the_readme_commands_run_as_written(server: Running, tmp_path: Path) -> None:
    env = {**os.environ, "TRELLIS_TARGET": server.grpc_target}
    for line in _readme_block("sh").splitlines():
        command = line.replace(".venv/bin/trellis", str(TRELLIS))
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=PROC_TIMEOUT,
        )
        assert done.returncode == 0, f"{line}: {done.stderr}"
    assert "id: ci\n" in (tmp_path / "workflows.yml").read_text()


def test_the_readme_export_is_what_an_export_writes() -> None:
    text = _readme_block("yaml").split("\n", 1)[1]
    found, errors = parse_documents(text)
    assert not errors and [w.id for w in found] == ["etl"]
    assert dump_documents(found) == text
