"""The generated ``trellis.v1`` message modules, imported in one place.

mypy sees their real types when ``generated/`` is on its search path and
treats them as ``Any`` otherwise; the ignore below covers the second case.
"""

from trellis.v1 import (  # type: ignore[import-not-found, unused-ignore]
    auth_pb2,
    identity_pb2,
    jobs_pb2,
    logs_pb2,
    machine_pb2,
    runs_pb2,
    topics_pb2,
    webhooks_pb2,
    workers_pb2,
    workflows_pb2,
)

__all__ = [
    "auth_pb2",
    "identity_pb2",
    "jobs_pb2",
    "logs_pb2",
    "machine_pb2",
    "runs_pb2",
    "topics_pb2",
    "webhooks_pb2",
    "workers_pb2",
    "workflows_pb2",
]
