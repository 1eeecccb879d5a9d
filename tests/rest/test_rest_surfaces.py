"""Surfaces chosen per binding: one RPC serving documented paths of two surfaces.

``trellis.v1.UserService`` binds each RPC to the control-center paths (``/users``:
answers in ``{"success": true, "data": ...}``, errors as ``{"success": false, ...}``,
writes confirmed by a sentence) and to the administration paths
(``/api/v1/admin/users``: bare answers, errors as ``{"error": "<reason>", ...}``).

Real server, real HTTP and gRPC, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from conftest import Running
from engine_helpers import RPC_TIMEOUT
from rest_helpers import rest, uid

from trellis.v1 import users_pb2, users_pb2_grpc

PASSWORD = "Correct-horse-battery-9"
CONTROL = "/users"
ADMIN = "/api/v1/admin/users"


def _data(body: Any) -> Any:
    assert isinstance(body, dict) and set(body) == {"success", "data"}, body
    assert body["success"] is True
    return body["data"]


def test_one_rpc_answers_each_binding_in_its_own_surface(server: Running) -> None:
    client = rest(server)
    name = uid("dual")
    created = client.post(CONTROL, {"username": name, "password": PASSWORD})
    assert created.status == 201, created.raw
    user = _data(created.json)
    # The same user, bare, on the other surface.
    fetched = client.get(f"{ADMIN}/{user['id']}")
    assert fetched.status == 200 and fetched.json == user

    # Errors of one RPC take the style of the binding they came through.
    again = {"username": name, "password": PASSWORD}
    assert client.post(CONTROL, again).json == {
        "success": False,
        "error": f"username '{name}' is taken",
    }
    assert client.post(ADMIN, again).json == {
        "error": "already_exists",
        "message": f"username '{name}' is taken",
    }
    # So do the bridge's own refusals (bad JSON), before any call is made.
    assert set(
        client.post(CONTROL, raw=b"{", headers={"Content-Type": "application/json"}).json
    ) == {
        "success",
        "error",
    }
    assert (
        client.post(ADMIN, raw=b"{", headers={"Content-Type": "application/json"}).json["error"]
        == "bad_request"
    )

    # One listing, rendered in each surface's envelope.
    listed = _data(client.get(f"{CONTROL}?role=viewer").json)
    assert client.get(f"{ADMIN}?role=viewer").json == listed
    assert user in listed

    # UpdateUser answers the changed user; the control-center binding confirms with a sentence.
    confirmed = client.request("PUT", f"{CONTROL}/{user['id']}", {"email": "a@example.com"})
    assert confirmed.status == 200
    assert confirmed.json == {"success": True, "data": "User updated successfully"}
    changed = client.request("PUT", f"{ADMIN}/{user['id']}", {"email": "b@example.com"})
    assert changed.status == 200 and changed.json == {**user, "email": "b@example.com"}

    # DeleteUser: a sentence on one surface, an empty object on the other; both restorable.
    deleted = client.request("DELETE", f"{CONTROL}/{user['id']}")
    assert deleted.json == {"success": True, "data": "User deleted successfully"}
    assert client.post(f"{ADMIN}/{user['id']}/restore", {}).status == 200
    assert client.request("DELETE", f"{ADMIN}/{user['id']}").json == {}
    # Deleted users are listed on the administration paths only, which can restore them.
    assert user["id"] in {u["id"] for u in client.get(f"{ADMIN}?include_deleted=true").json}
    hidden = _data(client.get(f"{CONTROL}?include_deleted=true").json)
    assert user["id"] not in {u["id"] for u in hidden}
    assert client.request("DELETE", f"{CONTROL}/{user['id']}").json == {
        "success": False,
        "error": f"user '{user['id']}' not found",
    }


def test_answers_the_bridge_gives_itself_follow_the_binding_surface(server: Running) -> None:
    client = rest(server)
    # A verb no binding of the path has: 405 in the style of the path's surface.
    assert set(client.request("PATCH", f"{CONTROL}/x").json) == {"success", "error"}
    assert client.request("PATCH", f"{ADMIN}/x").json["error"] == "method_not_allowed"


def test_grpc_clients_see_one_user_service(server: Running) -> None:
    users = users_pb2_grpc.UserServiceStub(server.channel)
    name = uid("grpc")
    created = users.CreateUser(
        users_pb2.CreateUserRequest(username=name, password=PASSWORD), timeout=RPC_TIMEOUT
    )
    assert created.roles == ["viewer"] and created.enabled
    changed = users.UpdateUser(
        users_pb2.UpdateUserRequest(user_id=created.id, email="c@example.com"),
        timeout=RPC_TIMEOUT,
    )
    assert changed.email == "c@example.com" and changed.created_at == created.created_at
    users.DeleteUser(users_pb2.DeleteUserRequest(user_id=created.id), timeout=RPC_TIMEOUT)
    listed = users.ListUsers(users_pb2.ListUsersRequest(include_deleted=True), timeout=RPC_TIMEOUT)
    assert created.id in {u.id for u in listed.users}
    live = users.ListUsers(users_pb2.ListUsersRequest(), timeout=RPC_TIMEOUT)
    assert created.id not in {u.id for u in live.users}
