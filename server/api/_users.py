"""The user RPCs of auth.proto and identity.proto, and their message helpers.

Kept apart from the other identity servicers, which take them in as mixins.
"""

from __future__ import annotations

from typing import Any

import grpc

from trellis.server.api import _status
from trellis.server.api._auth import current_principal
from trellis.server.api._engine import unary
from trellis.server.api._times import iso
from trellis.server.identity import Identity, UserInfo, store
from trellis.v1 import auth_pb2, identity_pb2


def _page(request: Any, default: int = store.DEFAULT_LIMIT) -> tuple[int, int]:
    limit = request.limit if request.HasField("limit") else default
    return max(1, min(int(limit), store.MAX_LIMIT)), int(request.offset)


def _total(context: grpc.ServicerContext, total: int, limit: int, offset: int) -> None:
    # Seed 002's pagination headers (the bridge copies them to HTTP).
    _status.add_trailers(
        context,
        (("x-total-count", str(total)), ("x-limit", str(limit)), ("x-offset", str(offset))),
    )


def _user(u: UserInfo) -> auth_pb2.User:
    return auth_pb2.User(
        id=u.id,
        username=u.username,
        email=u.email,
        roles=list(u.roles),
        enabled=u.enabled,
        created_at=iso(u.created_at_ms),
        last_login=iso(u.last_login_ms),
    )


def _list_users(
    identity: Identity,
    request: Any,
    context: grpc.ServicerContext,
    *,
    include_deleted: bool = False,
) -> auth_pb2.ListUsersResponse:
    limit, offset = _page(request)
    page = identity.list_users(
        current_principal(),
        role=request.role or None,
        enabled=request.enabled if request.HasField("enabled") else None,
        include_deleted=include_deleted,
        limit=limit,
        offset=offset,
    )
    _total(context, page.total, limit, offset)
    return auth_pb2.ListUsersResponse(users=[_user(u) for u in page.items])


def _create_user(identity: Identity, request: auth_pb2.CreateUserRequest) -> auth_pb2.User:
    return _user(
        identity.create_user(
            current_principal(),
            username=request.username,
            email=request.email,
            password=request.password,
            roles=list(request.roles) or ["viewer"],
            enabled=request.enabled if request.HasField("enabled") else True,
        )
    )


def _update_user(identity: Identity, request: auth_pb2.UpdateUserRequest) -> UserInfo:
    return identity.update_user(
        current_principal(),
        request.user_id,
        email=request.email if request.HasField("email") else None,
        roles=list(request.roles) or None,
        enabled=request.enabled if request.HasField("enabled") else None,
        password=request.password if request.HasField("password") else None,
    )


class AuthUsers:
    """The user RPCs of AuthService."""

    i: Identity

    @unary
    def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        return _list_users(self.i, request, context)

    @unary
    def CreateUser(
        self, request: auth_pb2.CreateUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.User:
        return _create_user(self.i, request)

    @unary
    def UpdateUser(
        self, request: auth_pb2.UpdateUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.MessageResponse:
        _update_user(self.i, request)
        return auth_pb2.MessageResponse(message="User updated successfully")

    @unary
    def DeleteUser(
        self, request: auth_pb2.DeleteUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.MessageResponse:
        self.i.delete_user(current_principal(), request.user_id)
        return auth_pb2.MessageResponse(message="User deleted successfully")


class IdentityUsers:
    """The user RPCs of IdentityService."""

    i: Identity

    @unary
    def ListAdminUsers(
        self, request: identity_pb2.ListAdminUsersRequest, context: grpc.ServicerContext
    ) -> auth_pb2.ListUsersResponse:
        return _list_users(self.i, request, context, include_deleted=request.include_deleted)

    @unary
    def CreateAdminUser(
        self, request: auth_pb2.CreateUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.User:
        return _create_user(self.i, request)

    @unary
    def GetAdminUser(
        self, request: identity_pb2.GetAdminUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.User:
        return _user(self.i.get_user(current_principal(), request.user_id))

    @unary
    def UpdateAdminUser(
        self, request: auth_pb2.UpdateUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.User:
        return _user(_update_user(self.i, request))

    @unary
    def DeleteAdminUser(
        self, request: auth_pb2.DeleteUserRequest, context: grpc.ServicerContext
    ) -> identity_pb2.DeleteAdminUserResponse:
        self.i.delete_user(current_principal(), request.user_id)
        return identity_pb2.DeleteAdminUserResponse()

    @unary
    def RestoreAdminUser(
        self, request: identity_pb2.RestoreAdminUserRequest, context: grpc.ServicerContext
    ) -> auth_pb2.User:
        return _user(self.i.restore_user(current_principal(), request.user_id))

    @unary
    def SetAdminUserStatus(
        self, request: identity_pb2.SetAdminUserStatusRequest, context: grpc.ServicerContext
    ) -> auth_pb2.User:
        changed = self.i.update_user(current_principal(), request.user_id, enabled=request.enabled)
        return _user(changed)
