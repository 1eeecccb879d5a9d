"""The gRPC servicer of users.proto: a thin edge over ``Identity``'s users.

One servicer answers both documented user APIs (``/users`` and
``/api/v1/admin/users``); how each path renders its answers is declared per
binding in proto, so nothing here knows which path a call came from.
"""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from trellis.server.api._auth import current_principal
from trellis.server.api._engine import unary
from trellis.server.api._paging import page_request, send_page_headers
from trellis.server.core.times import timestamp
from trellis.server.identity import Identity, UserInfo
from trellis.v1 import users_pb2, users_pb2_grpc


def user_message(u: UserInfo) -> users_pb2.User:
    """The ``trellis.v1.User`` of a user."""
    return users_pb2.User(
        id=u.id,
        username=u.username,
        email=u.email,
        roles=list(u.roles),
        enabled=u.enabled,
        created_at=timestamp(u.created_at_ms),
        last_login=timestamp(u.last_login_ms),
    )


class Users(users_pb2_grpc.UserServiceServicer):
    def __init__(self, identity: Identity) -> None:
        self.i = identity

    @unary
    def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> users_pb2.ListUsersResponse:
        page = self.i.list_users(
            current_principal(),
            role=request.role or None,
            enabled=request.enabled if request.HasField("enabled") else None,
            include_deleted=request.include_deleted,
            page=page_request(request),
        )
        send_page_headers(context, page)
        return users_pb2.ListUsersResponse(
            users=[user_message(u) for u in page.items], next_page_token=page.next_page_token
        )

    @unary
    def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.User:
        created = self.i.create_user(
            current_principal(),
            username=request.username,
            email=request.email,
            password=request.password,
            roles=list(request.roles),
            enabled=request.enabled if request.HasField("enabled") else True,
        )
        return user_message(created)

    @unary
    def GetUser(
        self, request: users_pb2.GetUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.User:
        return user_message(self.i.get_user(current_principal(), request.user_id))

    @unary
    def UpdateUser(
        self, request: users_pb2.UpdateUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.User:
        changed = self.i.update_user(
            current_principal(),
            request.user_id,
            email=request.email if request.HasField("email") else None,
            roles=list(request.roles) or None,
            enabled=request.enabled if request.HasField("enabled") else None,
            password=request.password if request.HasField("password") else None,
        )
        return user_message(changed)

    @unary
    def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        self.i.delete_user(current_principal(), request.user_id)
        return empty_pb2.Empty()

    @unary
    def RestoreUser(
        self, request: users_pb2.RestoreUserRequest, context: grpc.ServicerContext
    ) -> users_pb2.User:
        return user_message(self.i.restore_user(current_principal(), request.user_id))

    @unary
    def SetUserStatus(
        self, request: users_pb2.SetUserStatusRequest, context: grpc.ServicerContext
    ) -> users_pb2.User:
        changed = self.i.update_user(current_principal(), request.user_id, enabled=request.enabled)
        return user_message(changed)


def add_user_service(server: grpc.Server, identity: Identity) -> None:
    """Registers the servicer of users.proto."""
    # The generated registration helper is untyped.
    users_pb2_grpc.add_UserServiceServicer_to_server(Users(identity), server)  # type: ignore[no-untyped-call]
