"""MachineUserService (machine.proto): seed 000's machine users and backend
registration, translated to and from ``Identity``."""

from __future__ import annotations

import grpc

from trellis.server.api._auth import current_principal
from trellis.server.api._engine import unary
from trellis.server.api._paging import token_page
from trellis.server.core.times import timestamp
from trellis.server.identity import Identity, MachineUser
from trellis.v1 import machine_pb2, machine_pb2_grpc


def _machine(m: MachineUser) -> machine_pb2.MachineUser:
    return machine_pb2.MachineUser(
        id=m.id,
        username=m.username,
        name=m.name,
        enabled=m.enabled,
        hint=m.hint,
        created_at=timestamp(m.created_at_ms),
    )


class Machines(machine_pb2_grpc.MachineUserServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.i = identity

    @unary
    def ValidateMachineUser(
        self, request: machine_pb2.ValidateMachineUserRequest, context: grpc.ServicerContext
    ) -> machine_pb2.ValidateMachineUserResponse:
        checked = self.i.validate_machine_user(request.username, request.token)
        if not checked.valid:
            return machine_pb2.ValidateMachineUserResponse(valid=False, error="Invalid credentials")
        return machine_pb2.ValidateMachineUserResponse(
            valid=True, tenant_id=checked.org_id, machine_user_id=checked.machine_user_id
        )

    @unary
    def CheckMachineUser(
        self, request: machine_pb2.CheckMachineUserRequest, context: grpc.ServicerContext
    ) -> machine_pb2.CheckMachineUserResponse:
        checked = self.i.check_machine_user(current_principal())
        return machine_pb2.CheckMachineUserResponse(
            authenticated=checked.valid,
            machine_user_id=checked.machine_user_id,
            tenant_id=checked.org_id,
        )

    @unary
    def RegisterBackend(
        self, request: machine_pb2.RegisterBackendRequest, context: grpc.ServicerContext
    ) -> machine_pb2.Backend:
        backend = self.i.register_backend(
            current_principal(),
            request.name,
            request.callback_url,
            request.description,
            replace=request.replace,
        ).backend
        return machine_pb2.Backend(
            id=backend.id,
            name=backend.name,
            callback_url=backend.callback_url,
            machine_user_id=backend.machine_user_id,
            description=backend.description,
            created_at=timestamp(backend.created_at_ms),
        )

    @unary
    def CreateMachineUser(
        self, request: machine_pb2.CreateMachineUserRequest, context: grpc.ServicerContext
    ) -> machine_pb2.CreatedMachineUser:
        created = self.i.create_machine_user(
            current_principal(), username=request.username, name=request.name
        )
        return machine_pb2.CreatedMachineUser(
            machine_user=_machine(created.machine_user), generated_token=created.token
        )

    @unary
    def ListMachineUsers(
        self, request: machine_pb2.ListMachineUsersRequest, context: grpc.ServicerContext
    ) -> machine_pb2.ListMachineUsersResponse:
        page = self.i.list_machine_users(current_principal(), page=token_page(request))
        return machine_pb2.ListMachineUsersResponse(
            machine_users=[_machine(m) for m in page.items], next_page_token=page.next_page_token
        )

    @unary
    def SetMachineUserEnabled(
        self, request: machine_pb2.SetMachineUserEnabledRequest, context: grpc.ServicerContext
    ) -> machine_pb2.MachineUser:
        changed = self.i.set_machine_user_enabled(
            current_principal(), request.machine_user_id, request.enabled
        )
        return _machine(changed)
