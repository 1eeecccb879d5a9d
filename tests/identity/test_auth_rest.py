"""The auth surfaces over REST, as their seeds document them: sign-in, users,
policies and the audit log (seed 002), OAuth2, personal access tokens and
organizations (seed 003), machine users (seed 000); status codes, bodies and
headers, against a real server on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Running
from rest_helpers import Reply, Rest, rest, uid

from trellis.server.identity.ratelimit import Limit

PASSWORD = "Correct-horse-battery-9"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def anonymous(server: Running) -> Rest:
    return Rest(server.rest_url)


def as_token(server: Running, token: str) -> Rest:
    return Rest(server.rest_url, token)


def envelope(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, (reply.status, reply.raw[:300])
    body = reply.json
    assert body["success"] is True, body
    assert set(body) == {"success", "data"}
    return body["data"]


def sign_in(server: Running, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> str:
    reply = anonymous(server).post("/auth/login", {"username": username, "password": password})
    token: str = envelope(reply)["token"]
    return token


def other_org_admin(server: Running) -> Rest:
    """A client signed in as the first administrator of a new organization."""
    org_id = uid("other")
    created = rest(server).post(
        "/api/v1/organizations",
        {"id": org_id, "name": "Other", "admin_username": "boss", "admin_password": PASSWORD},
    )
    assert created.status == 201, created.raw
    login = anonymous(server).post(
        "/auth/login",
        {"username": "boss", "password": PASSWORD},
        headers={"X-Organization-ID": org_id},
    )
    return as_token(server, envelope(login)["token"])


def form(client: Rest, path: str, fields: dict[str, str], **kw: Any) -> Reply:
    headers = {**FORM, **kw.pop("headers", {})}
    return client.request("POST", path, raw=urlencode(fields).encode(), headers=headers, **kw)


def test_login_answers_in_the_envelope_and_failures_are_401(server: Running) -> None:
    reply = anonymous(server).post(
        "/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    data = envelope(reply)
    assert data["token"].count(".") == 2  # a JWT
    assert data["expires_at"].endswith("Z")
    assert data["user"]["username"] == ADMIN_USERNAME and data["user"]["roles"] == ["admin"]
    for password in ("wrong-password-1", ""):
        bad = anonymous(server).post(
            "/auth/login", {"username": ADMIN_USERNAME, "password": password}
        )
        assert bad.status == 401 if password else bad.status in (400, 401)
        assert bad.json["success"] is False and isinstance(bad.json["error"], str)


def test_refresh_and_logout(server: Running) -> None:
    token = sign_in(server)
    refreshed = envelope(anonymous(server).post("/auth/refresh", {"token": token}))
    assert refreshed["token"] != token
    # The exchanged token was retired; presenting it again ends the session.
    again = anonymous(server).post("/auth/refresh", {"token": token})
    assert again.status == 401 and again.json["success"] is False
    assert as_token(server, refreshed["token"]).get("/api/workflows").status == 401

    other = sign_in(server)
    assert envelope(as_token(server, other).post("/auth/logout", {})) == "Successfully logged out"
    assert as_token(server, other).get("/api/workflows").status == 401


def test_every_api_refuses_a_missing_or_bad_token_with_401_and_a_json_body(
    server: Running,
) -> None:
    for path, body_check in (
        ("/api/workflows", lambda b: b["error"]["code"] == 401),
        ("/users", lambda b: b["success"] is False),
        ("/api/v1/oauth2/tokens", lambda b: b["error"] == "invalid_token"),
        ("/api/machine/check", lambda b: b["code"] == "INVALID_TOKEN" and b["status"] == 401),
    ):
        for client in (anonymous(server), as_token(server, "garbage")):
            reply = client.get(path)
            assert reply.status == 401, path
            assert body_check(reply.json), (path, reply.json)
            assert reply.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_users_crud_and_scopes_403(server: Running) -> None:
    admin = rest(server)
    name = uid("op")
    created = envelope(
        admin.post(
            "/users",
            {
                "username": name,
                "email": f"{name}@example.com",
                "password": PASSWORD,
                "roles": ["viewer"],
            },
        ),
        201,
    )
    assert created["username"] == name and created["enabled"] is True
    assert "password" not in created
    listed = envelope(admin.get("/users?role=viewer"))
    assert name in {u["username"] for u in listed}
    update = admin.request("PUT", f"/users/{created['id']}", {"roles": ["operator"]})
    assert envelope(update) == "User updated successfully"

    operator = as_token(server, sign_in(server, name, PASSWORD))
    denied = operator.get("/users")
    assert denied.status == 403 and denied.json["success"] is False
    oauth_denied = operator.get("/api/v1/oauth2/clients")
    assert oauth_denied.status == 403
    assert oauth_denied.json["error"] == "insufficient_scope"
    assert oauth_denied.json["message"].startswith(
        "Token does not have the required scope for this action"
    )

    assert envelope(admin.request("DELETE", f"/users/{created['id']}")) == (
        "User deleted successfully"
    )
    assert operator.get("/api/workflows").status == 401
    missing = admin.request("DELETE", f"/users/{created['id']}")
    assert missing.status == 404 and missing.json["success"] is False


def test_malformed_bodies_are_400_and_change_nothing(server: Running) -> None:
    admin = rest(server)
    before = envelope(admin.get("/users"))
    for raw in (b'{"username": ', b"[]", b'{"username": 5, "password": "x"}'):
        reply = admin.request(
            "POST", "/users", raw=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400, raw
        assert reply.json["success"] is False
    weak = admin.post("/users", {"username": uid("weak"), "password": "123"})
    assert weak.status == 400
    assert envelope(admin.get("/users")) == before


def test_policies_and_the_audit_log(server: Running) -> None:
    admin = rest(server)
    anonymous(server).post("/auth/login", {"username": ADMIN_USERNAME, "password": "wrong-1"})
    created = envelope(
        admin.post(
            "/policies",
            {
                "name": "no_runs_of_prod",
                "version": "1.0.0",
                "rules": [{"effect": "Deny", "resource": "workflows:prod-*", "action": ["run"]}],
            },
        ),
        201,
    )
    assert created["name"] == "no_runs_of_prod" and created["rules"][0]["effect"] == "Deny"
    assert created["id"] in {p["id"] for p in envelope(admin.get("/policies"))}
    updated = admin.request("PUT", f"/policies/{created['id']}", {"name": "renamed"})
    assert envelope(updated) == "Policy updated successfully"

    admin.post(
        "/api/workflows", {"id": "audited", "name": "A", "jobs": [{"id": "a", "command": "x"}]}
    )
    logs = envelope(admin.get("/audit/logs?limit=200"))
    actions = {(e["action"], e["result"]) for e in logs}
    assert ("auth.login", "failure") in actions
    assert ("auth.login", "success") in actions
    assert ("policy.create", "success") in actions and ("policy.update", "success") in actions
    assert ("workflow.create", "success") in actions
    entry = next(e for e in logs if e["action"] == "workflow.create")
    assert entry["resource"] == "workflow:audited" and entry["timestamp"].endswith("Z")
    only = envelope(admin.get("/audit/logs?action=policy.create"))
    assert only and {e["action"] for e in only} == {"policy.create"}
    paged = admin.get("/audit/logs?limit=1&offset=1")
    assert len(envelope(paged)) == 1 and int(paged.headers["X-Total-Count"]) >= 2
    bad = admin.get("/audit/logs?from=yesterday")
    assert bad.status == 400 and bad.json["success"] is False


def test_personal_access_tokens_over_rest(server: Running) -> None:
    admin = rest(server)
    created = admin.post("/api/v1/oauth2/tokens", {"name": "script", "scopes": ["workflows:read"]})
    assert created.status == 201
    secret = created.json["access_token"]
    token_id = created.json["token"]["id"]
    listed = admin.get("/api/v1/oauth2/tokens")
    assert token_id in {t["id"] for t in listed.json}
    assert secret not in listed.raw.decode()

    pat = as_token(server, secret)
    missing = pat.get("/api/workflows")
    assert missing.status == 422
    assert missing.json["error"]["status"] == "INVALID_ARGUMENT"
    missing_v1 = pat.get("/api/v1/oauth2/tokens")
    assert missing_v1.status == 422
    assert missing_v1.json == {
        "error": "missing_organization",
        "message": "Personal Access Token requests require the X-Organization-ID header",
    }
    org = {"X-Organization-ID": "default"}
    assert pat.get("/api/workflows", headers=org).status == 200
    assert pat.post("/api/workflows/x/run", headers=org).status == 403
    assert admin.request("DELETE", f"/api/v1/oauth2/tokens/{token_id}").status == 200
    assert pat.get("/api/workflows", headers=org).status == 401


def test_client_credentials_over_the_form_encoded_token_endpoint(server: Running) -> None:
    admin = rest(server)
    client = admin.post(
        "/api/v1/oauth2/clients", {"name": "erp-sync", "scopes": ["workflows:read"]}
    )
    assert client.status == 201
    client_id, secret = client.json["client"]["client_id"], client.json["client_secret"]
    reply = form(
        anonymous(server),
        "/api/v1/oauth2/token",
        {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "workflows:read",
        },
    )
    assert reply.status == 200
    assert reply.headers["Cache-Control"] == "no-store"
    token = reply.json
    assert set(token) == {"access_token", "token_type", "expires_in", "scope"}
    assert token["token_type"].lower() == "bearer" and token["scope"] == "workflows:read"
    assert as_token(server, token["access_token"]).get("/api/workflows").status == 200

    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    by_basic = form(
        anonymous(server),
        "/api/v1/oauth2/token",
        {"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert by_basic.status == 200

    wrong = form(
        anonymous(server),
        "/api/v1/oauth2/token",
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "nope"},
    )
    assert wrong.status == 401 and wrong.json["error"] == "invalid_client"
    assert "error_description" in wrong.json
    unsupported = form(anonymous(server), "/api/v1/oauth2/token", {"grant_type": "password"})
    assert unsupported.status == 400 and unsupported.json["error"] == "unsupported_grant_type"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_authorization_code_with_pkce(server: Running) -> None:
    admin = rest(server)
    redirect = "https://app.example.com/callback"
    client = admin.post(
        "/api/v1/oauth2/clients",
        {"name": "spa", "public": True, "redirect_uris": [redirect]},
    ).json["client"]
    verifier, challenge = _pkce()

    def authorize() -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": client["client_id"],
                "redirect_uri": redirect,
                "scope": "workflows:read",
                "state": "xyz",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        answer = admin.get(f"/api/v1/oauth2/authorize?{query}")
        assert answer.status == 200, answer.raw
        location = urlsplit(answer.json["redirect_to"])
        params = parse_qs(location.query)
        assert params["state"] == ["xyz"]
        return params["code"][0]

    def exchange(code: str, code_verifier: str) -> Reply:
        return form(
            anonymous(server),
            "/api/v1/oauth2/token",
            {
                "grant_type": "authorization_code",
                "client_id": client["client_id"],
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": code_verifier,
            },
        )

    wrong = exchange(authorize(), _pkce()[0])
    assert wrong.status == 400 and wrong.json["error"] == "invalid_grant"
    code = authorize()
    good = exchange(code, verifier)
    assert good.status == 200 and good.json["scope"] == "workflows:read"
    assert as_token(server, good.json["access_token"]).get("/api/workflows").status == 200
    reused = exchange(code, verifier)
    assert reused.status == 400 and reused.json["error"] == "invalid_grant"


def test_discovery_documents_and_jwks(server: Running) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        meta = anonymous(server).get(path).json
        assert meta["token_endpoint"].endswith("/api/v1/oauth2/token")
        assert meta["authorization_endpoint"].endswith("/api/v1/oauth2/authorize")
        assert "S256" in meta["code_challenge_methods_supported"]
        assert "jobs:work" in meta["scopes_supported"]
    keys = anonymous(server).get("/.well-known/jwks.json").json["keys"]
    assert keys and keys[0]["kty"] == "EC" and keys[0]["alg"] == "ES256" and keys[0]["kid"]


def test_introspection_needs_a_caller_of_the_tokens_organization(server: Running) -> None:
    token = sign_in(server)
    admin = rest(server)
    active = form(admin, "/api/v1/oauth2/introspect", {"token": token}).json
    assert active["active"] is True and "workflows:run" in active["scope"].split()
    assert form(admin, "/api/v1/oauth2/introspect", {"token": "nope"}).json == {"active": False}
    assert form(anonymous(server), "/api/v1/oauth2/introspect", {"token": token}).status == 401

    other = other_org_admin(server)
    assert form(other, "/api/v1/oauth2/introspect", {"token": token}).json == {"active": False}


def test_machine_users_as_seed_000_documents(server: Running) -> None:
    admin = rest(server)
    name = uid("payment")
    created = admin.post("/api/machine-users", {"username": name, "name": "Payment Service"})
    assert created.status == 201
    token = created.json["generatedToken"]
    machine_id = created.json["machineUser"]["id"]

    valid = anonymous(server).post("/api/validate-machine-user", {"username": name, "token": token})
    assert valid.status == 200
    assert valid.json == {"valid": True, "tenantId": "default", "machineUserId": machine_id}
    invalid = anonymous(server).post(
        "/api/validate-machine-user", {"username": name, "token": token + "x"}
    )
    assert invalid.json == {"valid": False, "error": "Invalid credentials"}

    machine = as_token(server, token)
    assert machine.get("/api/machine/check").json == {
        "authenticated": True,
        "machineUserId": machine_id,
        "tenantId": "default",
    }
    backend = machine.post(
        "/api/machine/register-backend",
        {
            "name": "Payment Service",
            "callbackUrl": "https://payment.example.com/cb",
            "description": "Handles payment processing triggers",
        },
    )
    assert backend.status == 200
    assert backend.json["callbackUrl"] == "https://payment.example.com/cb"
    assert backend.json["machineUserId"] == machine_id and backend.json["createdAt"]
    bad_url = machine.post("/api/machine/register-backend", {"name": "x", "callbackUrl": "ftp:x"})
    assert bad_url.status == 400
    assert set(bad_url.json) == {"error", "code", "status"} and bad_url.json["status"] == 400
    # A user is not a machine user.
    assert admin.get("/api/machine/check").status == 403


def test_organizations(server: Running) -> None:
    admin = rest(server)
    refused = admin.post(
        "/api/v1/organizations",
        {"id": "half", "name": "Half", "admin_username": "root", "admin_password": "123"},
    )
    assert refused.status == 400 and "admin_password" in refused.json["message"]
    assert admin.get("/api/v1/organizations/half").status == 404  # nothing stored
    org_id = uid("acme")
    created = admin.post(
        "/api/v1/organizations",
        {"id": org_id, "name": "Acme", "admin_username": "root", "admin_password": PASSWORD},
    )
    assert created.status == 201 and created.json["status"] == "active"
    assert org_id in {o["id"] for o in admin.get("/api/v1/organizations").json}
    assert admin.post(f"/api/v1/organizations/{org_id}/suspend", {}).json["status"] == "suspended"
    login = anonymous(server).post(
        "/auth/login",
        {"username": "root", "password": PASSWORD},
        headers={"X-Organization-ID": org_id},
    )
    assert login.status in (401, 403)
    assert admin.post(f"/api/v1/organizations/{org_id}/activate", {}).json["status"] == "active"
    login = anonymous(server).post(
        "/auth/login",
        {"username": "root", "password": PASSWORD},
        headers={"X-Organization-ID": org_id},
    )
    root = as_token(server, envelope(login)["token"])
    # The new org's administrator sees its own org only.
    assert [o["id"] for o in root.get("/api/v1/organizations").json] == [org_id]
    assert root.get("/api/v1/organizations/default").status == 404
    assert root.get("/api/workflows").json == []


def test_rate_limits_over_rest(start_server: Callable[..., Running]) -> None:
    server = start_server(rate_limits={"auth": Limit(2, 60.0), "general": Limit(1000, 60.0)})
    statuses = []
    for _ in range(3):
        reply = anonymous(server).post("/auth/login", {"username": "x", "password": "y"})
        statuses.append(reply.status)
    assert statuses[-1] == 429
    assert reply.json["success"] is False
    assert int(reply.headers["Retry-After"]) >= 1
    assert reply.headers["X-RateLimit-Limit"] == "2"
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    ok = rest(server).get("/api/workflows")
    assert ok.status == 200 and ok.headers["X-RateLimit-Limit"] == "1000"


def test_two_factor_sign_in_needs_a_fresh_code_each_time(server: Running) -> None:
    from trellis.server.identity import totp

    admin = rest(server)
    name = uid("mfa")
    user = envelope(admin.post("/users", {"username": name, "password": PASSWORD}), 201)
    uri = envelope(admin.post(f"/users/{user['id']}/mfa", {}))["otpauth_uri"]
    secret = parse_qs(urlsplit(uri).query)["secret"][0]

    def attempt(code: str | None) -> Reply:
        body = {"username": name, "password": PASSWORD}
        if code is not None:
            body["mfa_code"] = code
        return anonymous(server).post("/auth/login", body)

    assert attempt(None).status == 401
    # Reading the clock twice could straddle a 30 s step: the code of the
    # step now is taken from one reading, and its neighbour is valid too.
    code = totp.code_at(secret, time.time())
    assert envelope(attempt(code))["token"]
    replay = attempt(code)
    assert replay.status == 401 and replay.json["success"] is False
    assert attempt("000000" if code != "000000" else "111111").status == 401


def test_forged_and_tampered_tokens_are_refused(server: Running) -> None:
    import jwt as pyjwt

    from trellis.server.identity.jwt_keys import SigningKey

    token = server.token
    header_b64, payload_b64, signature = token.split(".")
    claims = pyjwt.decode(token, options={"verify_signature": False})
    header = pyjwt.get_unverified_header(token)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    escalated = dict(claims, org="another-org", scope="admin:orgs")
    forged = [
        # The payload changed, the signature kept.
        f"{header_b64}.{b64(json.dumps(escalated).encode())}.{signature}",
        # No signature at all.
        f"{b64(json.dumps({'alg': 'none', 'typ': 'at+jwt'}).encode())}.{payload_b64}.",
        # HS256 keyed with the public key (algorithm confusion).
        pyjwt.encode(claims, "not-the-key-" * 4, algorithm="HS256", headers={"kid": header["kid"]}),
        # A well-formed ES256 token from a key the server never had, same kid.
        pyjwt.encode(
            claims,
            SigningKey.generate().private_key,
            algorithm="ES256",
            headers={"kid": header["kid"], "typ": header.get("typ", "at+jwt")},
        ),
        # Another audience and another issuer, signed by the same foreign key.
        pyjwt.encode(
            dict(claims, aud="someone-else", iss="elsewhere"),
            SigningKey.generate().private_key,
            algorithm="ES256",
            headers={"kid": "unknown-kid"},
        ),
    ]
    for bad in forged:
        reply = as_token(server, bad).get("/api/workflows")
        assert reply.status == 401, bad[:60]
    assert rest(server).get("/api/workflows").status == 200


def test_another_organization_sees_nothing_over_rest(server: Running) -> None:
    admin = rest(server)
    admin.post(
        "/api/workflows", {"id": "ours", "name": "Ours", "jobs": [{"id": "a", "command": "x"}]}
    )
    run_id = admin.post("/api/workflows/ours/run").json["run_id"]
    other = other_org_admin(server)
    for method, path in (
        ("GET", "/api/workflows/ours/status"),
        ("POST", "/api/workflows/ours/run"),
        ("POST", "/api/workflows/ours/cancel"),
        ("GET", f"/api/runs/{run_id}"),
        ("POST", f"/api/runs/{run_id}/cancel"),
        ("GET", "/api/workflows/ours/jobs/a/logs"),
        ("GET", "/api/v1/organizations/default"),
    ):
        reply = other.request(method, path)
        assert reply.status == 404, (method, path, reply.status)
    assert other.get("/api/workflows").json == []
    assert ADMIN_USERNAME not in {u["username"] for u in envelope(other.get("/users"))}
    run = admin.get(f"/api/runs/{run_id}").json
    assert "cancel" not in str(run["run"]["state"]).lower()


def test_admin_users_surface_and_server_owned_fields(server: Running) -> None:
    admin = rest(server)
    name = uid("ops")
    created = admin.post(
        "/api/v1/admin/users",
        {
            "username": name,
            "password": PASSWORD,
            "roles": ["operator"],
            # Server-owned: never taken from the client.
            "id": "chosen-id",
            "created_at": "2000-01-01T00:00:00Z",
            "org_id": "another-org",
        },
    )
    assert created.status in (201, 400), created.raw
    if created.status == 400:  # refused outright is as good as ignored
        created = admin.post(
            "/api/v1/admin/users", {"username": name, "password": PASSWORD, "roles": ["operator"]}
        )
    user = created.json
    assert user["id"] != "chosen-id" and not user["created_at"].startswith("2000")
    assert admin.get(f"/api/v1/admin/users/{user['id']}").json["username"] == name

    disabled = admin.request("PUT", f"/api/v1/admin/users/{user['id']}/status", {"enabled": False})
    assert disabled.status == 200 and disabled.json["enabled"] is False
    assert (
        anonymous(server).post("/auth/login", {"username": name, "password": PASSWORD}).status
        == 401
    )
    admin.request("PUT", f"/api/v1/admin/users/{user['id']}/status", {"enabled": True})

    assert admin.request("DELETE", f"/api/v1/admin/users/{user['id']}").status == 200
    listed = admin.get("/api/v1/admin/users").json
    assert name not in {u["username"] for u in listed}
    with_deleted = admin.get("/api/v1/admin/users?include_deleted=true").json
    assert name in {u["username"] for u in with_deleted}
    restored = admin.post(f"/api/v1/admin/users/{user['id']}/restore", {})
    assert restored.status == 200 and restored.json["username"] == name
    assert envelope(anonymous(server).post("/auth/login", {"username": name, "password": PASSWORD}))
    missing = admin.get("/api/v1/admin/users/nobody")
    assert missing.status == 404 and missing.json["error"] == "not_found"
