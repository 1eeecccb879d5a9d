"""Runs one attempt of a job: its handler, or its command under the shell."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._env import JobEnvPolicy
from ._handlers import Handler, run_handler
from ._jobs import HeldJob
from ._logs import LogShipper
from ._pb import workers_pb2
from ._redact import Redactor
from ._reporter import complete_result, fail_result
from ._shell import job_env, run_shell


class JobRunner:
    """Turns a held job into its result (None: it was told to stop).

    ``time_limit`` is told of a handler job's time limit (seconds) as it
    starts: a handler cannot be killed, so the worker's ticker hands such a
    job back on time instead. A shell job's limit is kept by its shell runner.
    """

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        env_policy: JobEnvPolicy,
        redactor: Redactor,
        logs: LogShipper,
        time_limit: Callable[[HeldJob, int], None],
    ) -> None:
        self._handlers = handlers
        self._env_policy = env_policy
        self._redactor = redactor
        self._logs = logs
        self._time_limit = time_limit

    def execute(self, job: HeldJob, *, shell: bool) -> workers_pb2.JobResult | None:
        ctx = job.ctx
        handler = self._handlers.get(ctx.command)
        if handler is not None:
            if ctx.timeout_secs:
                self._time_limit(job, ctx.timeout_secs)
            return run_handler(handler, ctx, self._logs)
        if shell:
            return self._run_shell(job)
        return fail_result(ctx.lease_id, f"no handler for command '{ctx.command}'", False)

    def _run_shell(self, job: HeldJob) -> workers_pb2.JobResult | None:
        ctx = job.ctx
        sink = self._logs
        try:
            env = job_env(
                job_id=ctx.job_id,
                run_id=ctx.run_id,
                workflow_id=ctx.workflow_id,
                attempt=ctx.attempt,
                env=ctx.env,
                upstream_outputs=ctx.upstream_outputs,
                base=self._env_policy.inherited,
                inputs=ctx.inputs,
            )
        except ValueError as err:
            # An input no environment can carry: every attempt would fail alike.
            return fail_result(ctx.lease_id, str(err), False)
        result = run_shell(
            ctx.command,
            env=env,
            timeout=ctx.timeout_secs or None,
            cancelled=ctx.cancelled,
            on_line=lambda stream, line: sink.append(ctx, stream, line),
        )
        if result.stopped:
            return None  # decided according to the stop reason
        if result.timed_out:
            return fail_result(ctx.lease_id, f"timed out after {ctx.timeout_secs} s", True)
        if result.exit_code == 0:
            return complete_result(ctx.lease_id, result.outputs)
        return fail_result(ctx.lease_id, result.error(), True)

    def masked(self, result: workers_pb2.JobResult | None) -> workers_pb2.JobResult | None:
        """``result`` with the secrets a job may have put in it masked: its
        error and outputs are readable by more people than the worker."""
        if result is None or not self._redactor:
            return result
        if result.HasField("fail"):
            result.fail.error = self._redactor.redact(result.fail.error)
        else:
            outputs = result.complete.outputs
            for key, value in list(outputs.items()):
                outputs[key] = self._redactor.redact(value)
        return result
