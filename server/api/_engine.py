"""The engine's servicers, registered together, and the contract files whose
access rules the auth interceptor reads."""

from __future__ import annotations

import grpc

from trellis.server.api import events, logs, runs, topics, workers, workflows
from trellis.server.api._edge import streaming, unary
from trellis.server.engine import Service
from trellis.v1 import (
    auth_pb2,
    events_pb2,
    identity_pb2,
    logs_pb2,
    machine_pb2,
    oauth_pb2,
    runs_pb2,
    topics_pb2,
    users_pb2,
    webhooks_pb2,
    workers_pb2,
    workflows_pb2,
)

# Every file of the contract whose services this server implements; the auth
# interceptor reads the methods' access rules from them.
PROTO_FILES = (
    workflows_pb2.DESCRIPTOR,
    runs_pb2.DESCRIPTOR,
    workers_pb2.DESCRIPTOR,
    logs_pb2.DESCRIPTOR,
    events_pb2.DESCRIPTOR,
    auth_pb2.DESCRIPTOR,
    identity_pb2.DESCRIPTOR,
    oauth_pb2.DESCRIPTOR,
    machine_pb2.DESCRIPTOR,
    users_pb2.DESCRIPTOR,
    topics_pb2.DESCRIPTOR,
    webhooks_pb2.DESCRIPTOR,
)


def add_services(server: grpc.Server, service: Service) -> list[str]:
    """Registers the engine's servicers; returns the full service names of
    every file in PROTO_FILES (the identity servicers are added by
    ``_identity``)."""
    for module in (workflows, runs, workers, logs, events, topics):
        module.add_to(server, service)
    return [svc.full_name for file in PROTO_FILES for svc in file.services_by_name.values()]


# The identity servicers map their errors with these too.
__all__ = ["PROTO_FILES", "add_services", "streaming", "unary"]
