"""The identity service's organizations, OAuth2 flows, policies and audit listing,
on real SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from test_auth_identity import ADMIN_PW, USER_PW, add_user, admin_of, bearer, ident, refused

from trellis.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trellis.server.identity import (
    Identity,
    Introspection,
    InvalidClient,
    OAuthError,
    passwords,
    store,
)
from trellis.server.identity.principal import DEFAULT_ORG, PermissionDenied, PrincipalKind
from trellis.server.identity.store import PolicyRule

__all__ = ["ident"]  # a fixture, re-exported for pytest

REDIRECT = "https://app.example.com/callback"


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# ----------------------------------------------------------------- organizations


def test_organizations(ident: Identity) -> None:
    admin = admin_of(ident)
    acme = ident.create_org(admin, "Acme")
    assert [o.id for o in ident.list_orgs(admin).items] == [DEFAULT_ORG, acme.id]
    assert ident.update_org(admin, acme.id, name="Acme Corp").name == "Acme Corp"
    assert ident.suspend_org(admin, acme.id).status == "suspended"
    assert ident.list_orgs(admin, status="suspended").total == 1
    assert ident.activate_org(admin, acme.id).status == "active"
    with pytest.raises(FailedPrecondition):
        ident.suspend_org(admin, DEFAULT_ORG)
    with pytest.raises(NotFound):
        ident.get_org(admin, "nope")
    add_user(ident, admin, "bob", ["operator"])
    bob = ident.authenticate(bearer(ident.login("bob", USER_PW).access_token), None)
    assert ident.get_org(bob, DEFAULT_ORG).id == DEFAULT_ORG
    with pytest.raises(PermissionDenied):
        ident.get_org(bob, acme.id)
    with pytest.raises(PermissionDenied):
        ident.create_org(bob, "Mine")


# ----------------------------------------------------------------- OAuth2


def test_client_credentials_narrows_scopes_and_never_refreshes(ident: Identity) -> None:
    admin = admin_of(ident)
    created = ident.create_client(admin, name="etl", scopes=["workflows:read", "workflows:run"])
    assert created.client_secret is not None
    cid, secret = created.client.id, created.client_secret
    answer = ident.token("client_credentials", cid, secret, scope="workflows:read logs:read")
    assert answer.token_type == "bearer" and answer.scope == "workflows:read"
    assert answer.expires_in == ident.access_ttl_secs and answer.refresh_token is None
    principal = ident.authenticate(bearer(answer.access_token), DEFAULT_ORG)
    assert principal.kind is PrincipalKind.CLIENT and principal.scopes == {"workflows:read"}
    everything = ident.token("client_credentials", cid, secret)
    assert everything.scope == "workflows:read workflows:run"

    with pytest.raises(OAuthError) as info:
        ident.token("client_credentials", cid, secret, scope="admin:users")
    assert info.value.reason == "invalid_scope"
    with pytest.raises(OAuthError) as info:
        ident.token("client_credentials", cid, secret, scope="no-such-scope")
    assert info.value.reason == "invalid_scope"
    with pytest.raises(InvalidClient):
        ident.token("client_credentials", cid, "trl_cs_wrong")
    with pytest.raises(InvalidClient):
        ident.token("client_credentials", cid, None)
    with pytest.raises(OAuthError) as info:
        ident.token("password", cid, secret)
    assert info.value.reason == "unsupported_grant_type"
    with pytest.raises(OAuthError) as info:
        ident.token("authorization_code", cid, secret, code="x")
    assert info.value.reason == "unauthorized_client"

    # RFC 7662 and 7009.
    token = answer.access_token
    assert ident.introspect(admin, token).active is True
    assert ident.introspect(admin, token).client_id == cid
    ident.revoke_token("not-a-token", cid, secret)  # unknown tokens are fine
    ident.revoke_token(token, cid, secret)
    assert ident.introspect(admin, token) == Introspection(active=False)
    refused(lambda: ident.authenticate(bearer(token), None))

    # Revoking the client kills its tokens.
    live = everything.access_token
    ident.revoke_client(admin, cid)
    refused(lambda: ident.authenticate(bearer(live), None))
    with pytest.raises(InvalidClient):
        ident.token("client_credentials", cid, secret)


def test_authorization_code_with_pkce(ident: Identity) -> None:
    admin = admin_of(ident)
    created = ident.create_client(
        admin,
        name="spa",
        confidential=False,
        redirect_uris=[REDIRECT],
        grant_types=["authorization_code"],
        scopes=["workflows:read", "logs:read"],
    )
    assert created.client_secret is None
    cid = created.client.id
    with pytest.raises(OAuthError):  # public clients must use PKCE
        ident.authorize(admin, cid, REDIRECT, "workflows:read", "s", None, None)
    with pytest.raises(OAuthError):
        ident.authorize(admin, cid, "https://evil.example.com/", None, "s", "x" * 43, "S256")

    def code_for(verifier: str) -> str:
        grant = ident.authorize(
            admin, cid, REDIRECT, "workflows:read", "xyz", challenge_of(verifier), "S256"
        )
        query = parse_qs(urlsplit(grant.location).query)
        assert query["state"] == ["xyz"] and query["code"] == [grant.code]
        return grant.code

    verifier = secrets.token_urlsafe(48)
    code = code_for(verifier)
    with pytest.raises(OAuthError) as info:
        ident.token(
            "authorization_code",
            cid,
            None,
            code=code,
            redirect_uri=REDIRECT,
            code_verifier=secrets.token_urlsafe(48),
        )
    assert info.value.reason == "invalid_grant"
    # The code was spent by the failed attempt.
    with pytest.raises(OAuthError):
        ident.token(
            "authorization_code",
            cid,
            None,
            code=code,
            redirect_uri=REDIRECT,
            code_verifier=verifier,
        )

    code = code_for(verifier)
    with pytest.raises(OAuthError):
        ident.token(
            "authorization_code",
            cid,
            None,
            code=code,
            redirect_uri="https://app.example.com/other",
            code_verifier=verifier,
        )
    code = code_for(verifier)
    answer = ident.token(
        "authorization_code", cid, None, code=code, redirect_uri=REDIRECT, code_verifier=verifier
    )
    assert answer.scope == "workflows:read" and answer.refresh_token is None
    principal = ident.authenticate(bearer(answer.access_token), None)
    assert principal.kind is PrincipalKind.USER and principal.name == "root"
    assert principal.scopes == {"workflows:read"}
    with pytest.raises(OAuthError) as info:  # single use
        ident.token(
            "authorization_code",
            cid,
            None,
            code=code,
            redirect_uri=REDIRECT,
            code_verifier=verifier,
        )
    assert info.value.reason == "invalid_grant"


def test_clients_of_another_org_are_unknown(ident: Identity) -> None:
    admin = admin_of(ident)
    created = ident.create_client(admin, name="etl", scopes=["workflows:read"])
    acme = ident.create_org(admin, "acme")
    other = Identity(ident.db)
    with ident.db.write() as conn:
        store.create_user(
            conn,
            acme.id,
            username="eve",
            email="",
            password_hash=passwords.hash_password(ADMIN_PW),
            now_ms=ident.db.now_ms(conn),
            roles=["admin"],
        )
    eve = other.authenticate(
        bearer(other.login("eve", ADMIN_PW, org_id=acme.id).access_token), acme.id
    )
    with pytest.raises(NotFound):
        other.revoke_client(eve, created.client.id)
    assert other.list_clients(eve).items == ()
    with pytest.raises(OAuthError):
        other.authorize(eve, created.client.id, None, None, None, None, None)


def test_client_scopes_cannot_exceed_the_creator(ident: Identity) -> None:
    admin = admin_of(ident)
    with pytest.raises(InvalidArgument):
        ident.create_client(admin, name="x", confidential=False, grant_types=["client_credentials"])
    with pytest.raises(InvalidArgument):
        ident.create_client(admin, name="x", grant_types=["authorization_code"])


# ----------------------------------------------------------------- policies and audit


def test_policies_deny_wins_and_audit_listing(ident: Identity) -> None:
    admin = admin_of(ident)
    add_user(ident, admin, "bob", ["operator"])
    bob = ident.authenticate(bearer(ident.login("bob", USER_PW).access_token), None)
    ident.check_policy(bob, "workflows/etl", "workflows:run")
    allow = ident.create_policy(
        admin, name="ops", rules=[PolicyRule("Allow", ("workflows:*",), ("*",))]
    )
    deny = ident.create_policy(
        admin,
        name="no-etl",
        rules=[PolicyRule("Deny", ("workflows:run",), ("workflows/etl*",), ("user:bob",))],
    )
    with pytest.raises(PermissionDenied) as info:
        ident.check_policy(bob, "workflows/etl-daily", "workflows:run")
    assert info.value.reason == "policy_denied"
    ident.check_policy(admin, "workflows/etl-daily", "workflows:run")
    ident.check_policy(bob, "workflows/other", "workflows:run")
    ident.update_policy(admin, deny.id, enabled=False)
    ident.check_policy(bob, "workflows/etl-daily", "workflows:run")
    # Oldest first, by (created_at_ms, id): two made in one millisecond are in id order.
    listed = ident.list_policies(admin).items
    assert sorted(p.name for p in listed) == ["no-etl", "ops"]
    assert [(p.created_at_ms, p.id) for p in listed] == sorted(
        (p.created_at_ms, p.id) for p in (allow, deny)
    )
    ident.delete_policy(admin, allow.id)
    with pytest.raises(NotFound):
        ident.get_policy(admin, allow.id)
    with pytest.raises(InvalidArgument):
        ident.create_policy(admin, name="bad", rules=[PolicyRule("maybe", ("*",), ("*",))])
    with pytest.raises(PermissionDenied):
        ident.create_policy(bob, name="mine", rules=[PolicyRule("allow", ("*",), ("*",))])

    page = ident.list_audit(admin, action="policy.create")
    assert [e.result for e in page.items] == ["denied", "success", "success"]
    assert page.items[0].actor == bob.subject
    with pytest.raises(PermissionDenied):
        ident.list_audit(bob)
