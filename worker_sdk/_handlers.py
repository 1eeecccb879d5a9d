"""One call of a job's handler: what it prints goes to the job's log, a
coroutine runs to its end, a raised exception is logged with its traceback,
and the outputs it returns are encoded."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import traceback
from collections.abc import Awaitable, Callable, Mapping

from ._context import JobContext, LogSink
from ._errors import JobCancelled
from ._output import JobOutput
from ._pb import workers_pb2
from ._reporter import complete_result, fail_result

Outputs = Mapping[str, object] | None
Handler = Callable[[JobContext], Outputs | Awaitable[Outputs]]
"""A job handler: gets the job's context, returns its outputs (or None);
``async def`` handlers are run to completion.

String output values are kept as they are, others are encoded as JSON.
Raising fails the job (retryably, unless the exception is
:class:`JobCancelled`)."""

# Frames of these directories that precede the handler's own are left out of
# the traceback a job's log shows.
_CALLER_DIRS = tuple(
    os.path.dirname(path) + os.sep for path in (__file__, asyncio.__file__) if path
)
_MAX_ERROR = 1000


def check_handler(name: str, fn: object) -> None:
    """Raises TypeError for what cannot be a handler."""
    if not callable(fn):
        raise TypeError(f"the handler for {name!r} is not callable")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"the handler for {name!r} is a generator function; "
            "a handler returns its outputs (a mapping) or None"
        )


def run_handler(handler: Handler, ctx: JobContext, sink: LogSink) -> workers_pb2.JobResult:
    """Calls ``handler`` for ``ctx`` in the calling thread; the job's result."""
    try:
        with JobOutput(ctx, sink):
            returned = handler(ctx)
            if inspect.isawaitable(returned):
                returned = _run_to_end(returned)
    except JobCancelled:
        return fail_result(ctx.lease_id, "cancelled", False)
    except (Exception, asyncio.CancelledError) as exc:
        sink.append(ctx, "stderr", _traceback(exc))
        return fail_result(ctx.lease_id, error_line(exc), True)
    if returned is None:
        return complete_result(ctx.lease_id, {})
    if not isinstance(returned, Mapping):
        return fail_result(
            ctx.lease_id,
            f"TypeError: handler returned {type(returned).__name__}, not a mapping or None",
            False,
        )
    try:
        outputs = encode_outputs(returned)
    except TypeError as exc:
        return fail_result(ctx.lease_id, f"TypeError: {exc}", False)
    return complete_result(ctx.lease_id, outputs)


def _run_to_end(awaitable: Awaitable[Outputs]) -> Outputs:
    # A loop of its own per call, in the slot's thread: a coroutine that
    # blocks holds up only its own slot, and time limits, cancellation and
    # shutdown treat it exactly like a plain handler.
    async def wait() -> Outputs:
        return await awaitable

    return asyncio.run(wait())


def encode_outputs(outputs: Mapping[str, object]) -> dict[str, str]:
    """Strings as they are, any other value as its JSON text.

    Raises TypeError naming the first output JSON cannot encode.
    """
    encoded: dict[str, str] = {}
    for key, value in outputs.items():
        if isinstance(value, str):
            encoded[str(key)] = value
            continue
        try:
            encoded[str(key)] = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise TypeError(f"output {str(key)!r} cannot be encoded as JSON: {exc}") from None
    return encoded


def error_line(exc: BaseException) -> str:
    """``<ExceptionType>: <first line of its message>``, at most 1000 characters."""
    name = type(exc).__name__
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (f"{name}: {text}" if text else name)[:_MAX_ERROR]


def _traceback(exc: BaseException) -> str:
    tb = exc.__traceback__
    while (
        tb is not None
        and tb.tb_next is not None
        and tb.tb_frame.f_code.co_filename.startswith(_CALLER_DIRS)
    ):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
