"""One call of a job's handler: what it prints goes to the job's log, and
what it returns or raises becomes the job's result."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ._context import JobContext, LogSink
from ._errors import JobCancelled
from ._output import JobOutput
from ._pb import workers_pb2
from ._reporter import complete_result, fail_result

Outputs = Mapping[str, object] | None
Handler = Callable[[JobContext], Outputs]
"""A job handler: gets the job's context, returns its outputs (or None).

Output values are converted with ``str()``. Raising fails the job (retryably,
unless the exception is :class:`JobCancelled`)."""


def run_handler(handler: Handler, ctx: JobContext, sink: LogSink) -> workers_pb2.JobResult:
    """Calls ``handler`` for ``ctx`` in the calling thread; the job's result."""
    try:
        with JobOutput(ctx, sink):
            returned = handler(ctx)
    except JobCancelled:
        return fail_result(ctx.lease_id, "cancelled", False)
    except Exception as exc:
        text = str(exc)
        name = type(exc).__name__
        return fail_result(ctx.lease_id, f"{name}: {text}" if text else name, True)
    if returned is None:
        return complete_result(ctx.lease_id, {})
    if not isinstance(returned, Mapping):
        return fail_result(
            ctx.lease_id,
            f"TypeError: handler returned {type(returned).__name__}, not a mapping or None",
            False,
        )
    return complete_result(ctx.lease_id, {str(k): str(v) for k, v in returned.items()})
