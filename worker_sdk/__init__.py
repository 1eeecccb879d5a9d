"""Python SDK for Trellis workers, plus a small client for people and scripts.

A worker registers handlers by command name and runs the jobs the server
assigns to it::

    from trellis.worker_sdk import JobContext, Worker

    worker = Worker("localhost:50051", labels=["linux"], slots=4)

    @worker.handler("build")
    def build(ctx: JobContext) -> dict[str, str]:
        ctx.log(f"building for run {ctx.run_id}")
        return {"artifact": "s3://bucket/build.tar.gz"}

    worker.run()  # until SIGTERM/SIGINT or worker.stop()

:class:`Client` defines, starts and watches workflows; a handler reads its
run's inputs from ``ctx.inputs``. Every error either raises is a
:class:`TrellisError`.
"""

from ._client import Client, RunRequest
from ._context import JobContext, StopReason
from ._credentials import authorized_channel
from ._errors import (
    Aborted,
    AlreadyExists,
    ConnectionLost,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    JobCancelled,
    LeaseLost,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TrellisError,
    Unauthenticated,
    Unimplemented,
)
from ._handlers import Handler
from ._worker import Worker

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Client",
    "ConnectionLost",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Handler",
    "InvalidArgument",
    "JobCancelled",
    "JobContext",
    "LeaseLost",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RunRequest",
    "StopReason",
    "TrellisError",
    "Unauthenticated",
    "Unimplemented",
    "Worker",
    "authorized_channel",
]
