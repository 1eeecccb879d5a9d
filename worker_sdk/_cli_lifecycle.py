"""``trellis workflow ...``: a workflow's versions, copies, enabling, deletion,
edits of one job or edge, and export/import in the workflow file format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._cli_base import EXIT_OK, _client, _guard, format_table, format_time
from ._pb import jobs_pb2, workflows_pb2

__all__ = ["add_lifecycle_commands"]

STDIN = "-"
_ACTIONS = {
    workflows_pb2.IMPORT_ACTION_CREATED: "created",
    workflows_pb2.IMPORT_ACTION_UPDATED: "updated",
    workflows_pb2.IMPORT_ACTION_UNCHANGED: "unchanged",
}


def add_lifecycle_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Adds ``workflow`` and its subcommands; ``common`` is the parent parser
    of the server and credential options."""
    top = subparsers.add_parser(
        "workflow",
        help="manage one workflow: versions, clone, enable/disable, delete, edits, export/import",
        description="Each edit of a job or an edge stores the whole new definition, validated "
        "as a new workflow is, as a new version. With --expected-version an edit is refused "
        "when someone else changed the workflow first.",
    )
    actions = top.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help, description=help)

    p = action("versions", "list the workflow's versions, newest first")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.set_defaults(func=_guard(_cmd_versions))

    p = action("revert", "make an earlier version's definition current (as a new version)")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("to_version", type=int, metavar="VERSION")
    _expected(p)
    p.set_defaults(func=_guard(_cmd_revert))

    p = action("clone", "create a new workflow with this one's current definition")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("new_workflow_id", metavar="NEW_ID")
    p.add_argument("--name", default="", help="the copy's name (default: the original's)")
    p.set_defaults(func=_guard(_cmd_clone))

    for name, text in (("enable", "let runs be started"), ("disable", "refuse new runs")):
        p = action(name, f"{text} (running runs go on)")
        p.add_argument("workflow_id", metavar="WORKFLOW_ID")
        p.set_defaults(func=_guard(_cmd_enable), enable=name == "enable")

    p = action("delete", "delete the workflow; its runs stay readable unless --purge-runs")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--purge-runs", action="store_true", help="delete its runs, jobs and logs too")
    p.set_defaults(func=_guard(_cmd_delete))

    p = action("export", "print definitions as YAML documents of the workflow file format")
    p.add_argument("workflow_id", nargs="?", default="", metavar="WORKFLOW_ID", help="default: all")
    p.set_defaults(func=_guard(_cmd_export))

    p = action("import", "create or update workflows from an export, all of them or none")
    p.add_argument("file", metavar="FILE", help="the export, or - for stdin")
    p.add_argument("--dry-run", action="store_true", help="check and tell, store nothing")
    p.set_defaults(func=_guard(_cmd_import))

    p = action("jobs", "list the jobs of the current definition")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.set_defaults(func=_guard(_cmd_jobs))

    p = action("add-job", "add a job")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("job_id", metavar="JOB_ID")
    _job_options(p, run_required=True)
    p.set_defaults(func=_guard(_cmd_add_job))

    p = action("update-job", "change the given fields of a job")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("job_id", metavar="JOB_ID")
    _job_options(p, run_required=False)
    p.set_defaults(func=_guard(_cmd_update_job))

    p = action("rename-job", "give a job a new id (its dependants follow)")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("new_job_id", metavar="NEW_JOB_ID")
    _expected(p)
    p.set_defaults(func=_guard(_cmd_rename_job))

    p = action("remove-job", "remove a job (refused while others need it, unless --cascade)")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--cascade", action="store_true", help="remove the others' needs of it too")
    _expected(p)
    p.set_defaults(func=_guard(_cmd_remove_job))

    for name, text in (("add-edge", "make TO need FROM"), ("remove-edge", "make TO not need FROM")):
        p = action(name, text)
        p.add_argument("workflow_id", metavar="WORKFLOW_ID")
        p.add_argument("from_job", metavar="FROM")
        p.add_argument("to_job", metavar="TO")
        _expected(p)
        p.set_defaults(func=_guard(_cmd_edge), add=name == "add-edge")


def _expected(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--expected-version",
        type=int,
        default=0,
        metavar="N",
        help="refuse the edit unless the workflow is at version N",
    )


def _job_options(p: argparse.ArgumentParser, *, run_required: bool) -> None:
    p.add_argument("--run", dest="command", required=run_required, help="the job's command")
    p.add_argument("--name", help="a display name")
    p.add_argument("--needs", help="comma-separated ids of the jobs it needs ('' for none)")
    p.add_argument("--labels", help="comma-separated labels a worker must have ('' for none)")
    p.add_argument("--retries", type=int, help="retries after a failed attempt")
    p.add_argument("--timeout", type=int, metavar="SECS", help="time limit of one attempt")
    _expected(p)


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _job(args: argparse.Namespace) -> tuple[jobs_pb2.Job, list[str]]:
    """The job the options describe, and the fields they name."""
    job = jobs_pb2.Job(id=args.job_id)
    fields: list[str] = []
    if args.command is not None:
        job.command, fields = args.command, [*fields, "command"]
    if args.name is not None:
        job.name, fields = args.name, [*fields, "name"]
    if args.needs is not None:
        job.depends_on.extend(_ids(args.needs))
        fields.append("depends_on")
    if args.labels is not None:
        job.required_labels.extend(_ids(args.labels))
        fields.append("required_labels")
    if args.retries is not None:
        job.max_retries, fields = args.retries, [*fields, "max_retries"]
    if args.timeout is not None:
        job.timeout_secs, fields = args.timeout, [*fields, "timeout_secs"]
    return job, fields


def _done(version: workflows_pb2.WorkflowVersion) -> int:
    print(f"workflow {version.workflow_id}: version {version.version}", flush=True)
    return EXIT_OK


def _cmd_versions(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = [
            [str(v.version), format_time(v.created_at.ToMilliseconds()), str(len(v.workflow.jobs))]
            for v in client.list_workflow_versions(args.workflow_id)
        ]
    print(format_table(("VERSION", "CREATED", "JOBS"), rows))
    return EXIT_OK


def _cmd_revert(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _done(
            client.revert_workflow(
                args.workflow_id, args.to_version, expected_version=args.expected_version
            )
        )


def _cmd_clone(args: argparse.Namespace) -> int:
    with _client(args) as client:
        copy = client.clone_workflow(args.workflow_id, args.new_workflow_id, name=args.name)
    print(f"workflow {copy.id}: version {copy.version}", flush=True)
    return EXIT_OK


def _cmd_enable(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.enable:
            workflow = client.enable_workflow(args.workflow_id)
        else:
            workflow = client.disable_workflow(args.workflow_id)
    print(f"workflow {workflow.id}: {'enabled' if workflow.enabled else 'disabled'}", flush=True)
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        gone = client.delete_workflow(args.workflow_id, purge_runs=args.purge_runs)
    purged = f" with {gone.purged_runs} run(s)" if args.purge_runs else ""
    print(f"workflow {gone.workflow_id}: deleted{purged}", flush=True)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sys.stdout.write(client.export_workflows(args.workflow_id))
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == STDIN else _read(Path(args.file))
    with _client(args) as client:
        found = client.import_workflows(text, dry_run=args.dry_run)
    would = "would be " if args.dry_run else ""
    for item in found:
        print(
            f"workflow {item.workflow_id}: {would}{_ACTIONS.get(item.action, '?')}, "
            f"version {item.version}",
            flush=True,
        )
    return EXIT_OK


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read it: {err.strerror or err}") from None


def _cmd_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rows = [
            [job.id, job.name, ",".join(job.depends_on), (job.command.splitlines() or [""])[0]]
            for job in client.list_workflow_jobs(args.workflow_id)
        ]
    print(format_table(("JOB", "NAME", "NEEDS", "COMMAND"), rows))
    return EXIT_OK


def _cmd_add_job(args: argparse.Namespace) -> int:
    job, _ = _job(args)
    with _client(args) as client:
        return _done(
            client.add_workflow_job(args.workflow_id, job, expected_version=args.expected_version)
        )


def _cmd_update_job(args: argparse.Namespace) -> int:
    job, fields = _job(args)
    if not fields:
        raise ValueError("name at least one field to change (--run, --needs, ...)")
    with _client(args) as client:
        return _done(
            client.update_workflow_job(
                args.workflow_id,
                args.job_id,
                job,
                fields,
                expected_version=args.expected_version,
            )
        )


def _cmd_rename_job(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _done(
            client.rename_workflow_job(
                args.workflow_id,
                args.job_id,
                args.new_job_id,
                expected_version=args.expected_version,
            )
        )


def _cmd_remove_job(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _done(
            client.remove_workflow_job(
                args.workflow_id,
                args.job_id,
                cascade=args.cascade,
                expected_version=args.expected_version,
            )
        )


def _cmd_edge(args: argparse.Namespace) -> int:
    with _client(args) as client:
        edit = client.add_workflow_edge if args.add else client.remove_workflow_edge
        return _done(
            edit(
                args.workflow_id,
                args.from_job,
                args.to_job,
                expected_version=args.expected_version,
            )
        )
