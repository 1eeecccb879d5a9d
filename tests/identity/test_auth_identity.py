"""The identity service (trellis.server.identity) on real SQLite and PostgreSQL:
bootstrap, authentication, login/refresh/logout, users, PATs, machine users.

Nothing sleeps: expired credentials are written through the store with times in
the past, and the principal cache is turned off where another replica's change
must be seen at once.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import race

from trellis.server.core.db import Database
from trellis.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trellis.server.identity import MACHINE_SCOPES, Identity, PageRequest, store, totp
from trellis.server.identity.principal import (
    DEFAULT_ORG,
    MissingOrganization,
    PermissionDenied,
    Principal,
    PrincipalKind,
    Unauthenticated,
)
from trellis.server.identity.scopes import ALL_SCOPES, ROLE_SCOPES
from trellis.server.identity.secrets_ import TokenKind, new_token

T = TypeVar("T")
ADMIN_PW = "correct horse battery staple"
USER_PW = "another long passphrase"


@pytest.fixture
def ident(db: Database) -> Identity:
    service = Identity(db)
    assert service.bootstrap("root", ADMIN_PW) is None
    return service


def bearer(token: str) -> str:
    return f"Bearer {token}"


def admin_of(ident: Identity) -> Principal:
    result = ident.login("root", ADMIN_PW)
    return ident.authenticate(bearer(result.access_token), None)


def add_user(ident: Identity, admin: Principal, name: str, roles: list[str]) -> str:
    return ident.create_user(
        admin, username=name, email=f"{name}@example.com", password=USER_PW, roles=roles
    ).id


def audit(db: Database, action: str) -> list[store.AuditEvent]:
    with db.read() as conn:
        return list(store.list_audit(conn, DEFAULT_ORG, action=action).items)


def refused(fn: Callable[[], object]) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        fn()
    return info.value


# ----------------------------------------------------------------- bootstrap and keys


def test_bootstrap_generates_a_password_once_and_is_idempotent(db: Database) -> None:
    first = Identity(db)
    password = first.bootstrap(None, None)
    assert password is not None and len(password) >= 20
    assert first.bootstrap(None, None) is None
    assert Identity(db).bootstrap("other", None) is None
    with db.read() as conn:
        users = store.list_users(conn, DEFAULT_ORG).items
        assert [(u.username, u.roles) for u in users] == [("admin", ("admin",))]
        assert store.get_org(conn, DEFAULT_ORG) is not None
        assert len(store.load_signing_keys(conn)) == 1
    result = first.login("admin", password)
    assert first.authenticate(bearer(result.access_token), None).scopes == ALL_SCOPES


def test_replicas_bootstrapping_together_make_one_admin_and_one_key(db: Database) -> None:
    services = [Identity(db), Identity(db)]
    passwords = race(2, lambda i: services[i].bootstrap(None, None))
    assert len([p for p in passwords if p is not None]) == 1
    with db.read() as conn:
        assert store.list_users(conn, DEFAULT_ORG).total == 1
        keys = store.load_signing_keys(conn)
        assert len([k for k in keys if k.state.value == "active"]) == 1
    # Both replicas sign with the one stored key.
    password = next(p for p in passwords if p is not None)
    token = services[0].login("admin", password).access_token
    assert services[1].authenticate(bearer(token), None).name == "admin"


def test_a_key_rotated_by_another_replica_is_picked_up(db: Database) -> None:
    a = Identity(db, key_reload_secs=0)
    a.bootstrap("root", ADMIN_PW)
    b = Identity(db)
    b.ensure_signing_key()
    b.rotate_signing_key()
    token = b.login("root", ADMIN_PW).access_token
    # a's ring does not know the new kid: it reloads and verifies.
    assert a.authenticate(bearer(token), None).name == "root"


def test_use_before_bootstrap_is_a_failed_precondition(db: Database) -> None:
    service = Identity(db)
    with pytest.raises(FailedPrecondition):
        service.authenticate(bearer("eyJ.eyJ.sig"), None)


# ----------------------------------------------------------------- authenticate


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Token abc", "Bearer junk", "Basic !!!", "Bearer eyJ.a.b"],
)
def test_malformed_or_unknown_credentials_are_one_error(ident: Identity, header: str) -> None:
    error = refused(lambda: ident.authenticate(header, None))
    assert str(error) == "missing or invalid token" and error.reason == "invalid_token"


def test_login_then_authenticate_and_org_header(ident: Identity) -> None:
    result = ident.login("root", ADMIN_PW, ip="10.0.0.1")
    assert result.user.username == "root" and result.refresh_token
    principal = ident.authenticate(bearer(result.access_token), None)
    assert principal.kind is PrincipalKind.USER
    assert principal.subject == f"user:{result.user.id}"
    assert principal.session_id == result.session_id
    assert principal.org_id == DEFAULT_ORG and principal.scopes == ALL_SCOPES
    assert ident.authenticate(bearer(result.access_token), DEFAULT_ORG) == principal
    with pytest.raises(PermissionDenied) as denied:
        ident.authenticate(bearer(result.access_token), "acme")
    assert denied.value.reason == "organization_mismatch"
    with pytest.raises(MissingOrganization):
        ident.authenticate(bearer(result.access_token), "not an id!")
    (event,) = audit(ident.db, "auth.login")
    assert (event.result, event.ip, event.resource) == ("success", "10.0.0.1", principal.subject)


def test_wrong_password_and_unknown_user_fail_alike(ident: Identity) -> None:
    wrong = refused(lambda: ident.login("root", "not the password"))
    unknown = refused(lambda: ident.login("nobody", "not the password"))
    assert (str(wrong), wrong.reason) == (str(unknown), unknown.reason)
    assert wrong.reason == "invalid_credentials"
    events = audit(ident.db, "auth.login")
    assert [e.result for e in events] == ["failure", "failure"]
    assert {e.actor for e in events} == {"root", "nobody"}


def test_totp_required_wrong_and_replayed(ident: Identity) -> None:
    admin = admin_of(ident)
    uri = ident.set_totp(admin, admin.subject.removeprefix("user:"))
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    assert refused(lambda: ident.login("root", ADMIN_PW)).reason == "mfa_required"
    code = totp.code_at(secret, time.time())
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert refused(lambda: ident.login("root", ADMIN_PW, wrong)).reason == "invalid_mfa_code"
    assert ident.login("root", ADMIN_PW, code).access_token
    assert refused(lambda: ident.login("root", ADMIN_PW, code)).reason == "invalid_mfa_code"
    ident.clear_totp(admin, admin.subject.removeprefix("user:"))
    assert ident.login("root", ADMIN_PW).access_token


def test_refresh_token_rotation_and_reuse_revokes_the_session(ident: Identity) -> None:
    first = ident.login("root", ADMIN_PW)
    assert first.refresh_token is not None
    second = ident.refresh(first.refresh_token)
    assert second.refresh_token not in (None, first.refresh_token)
    assert second.session_id == first.session_id
    assert ident.authenticate(bearer(second.access_token), None).session_id == first.session_id
    reused = refused(lambda: ident.refresh(first.refresh_token or ""))
    assert reused.reason == "token_reused"
    # The whole session is gone: its tokens, old and new, stop working.
    refused(lambda: ident.authenticate(bearer(second.access_token), None))
    refused(lambda: Identity(ident.db).refresh(second.refresh_token or ""))
    assert [e.result for e in audit(ident.db, "auth.refresh")] == ["denied", "success"]


def test_refresh_with_the_access_token_retires_it(ident: Identity) -> None:
    first = ident.login("root", ADMIN_PW)
    ident.authenticate(bearer(first.access_token), None)  # cached now
    second = ident.refresh(first.access_token)
    assert second.refresh_token is None and second.access_token != first.access_token
    refused(lambda: ident.authenticate(bearer(first.access_token), None))
    assert ident.authenticate(bearer(second.access_token), None).name == "root"
    assert refused(lambda: ident.refresh(first.access_token)).reason == "token_reused"
    refused(lambda: ident.authenticate(bearer(second.access_token), None))


def test_logout_revokes_token_and_session(ident: Identity) -> None:
    result = ident.login("root", ADMIN_PW)
    principal = ident.authenticate(bearer(result.access_token), None)
    ident.logout(principal)
    refused(lambda: ident.authenticate(bearer(result.access_token), None))
    refused(lambda: Identity(ident.db).authenticate(bearer(result.access_token), None))
    refused(lambda: ident.refresh(result.refresh_token or ""))
    assert [e.result for e in audit(ident.db, "auth.logout")] == ["success"]


def test_disabled_user_is_refused_at_once(ident: Identity) -> None:
    admin = admin_of(ident)
    bob = add_user(ident, admin, "bob", ["operator"])
    token = ident.login("bob", USER_PW).access_token
    assert ident.authenticate(bearer(token), None).name == "bob"
    ident.update_user(admin, bob, enabled=False)
    refused(lambda: ident.authenticate(bearer(token), None))
    assert refused(lambda: ident.login("bob", USER_PW)).reason == "account_disabled"
    ident.update_user(admin, bob, enabled=True)
    assert ident.login("bob", USER_PW).access_token


def test_role_change_narrows_live_tokens(ident: Identity) -> None:
    admin = admin_of(ident)
    bob = add_user(ident, admin, "bob", ["operator"])
    token = ident.login("bob", USER_PW).access_token
    assert ident.authenticate(bearer(token), None).scopes == ROLE_SCOPES["operator"]
    ident.update_user(admin, bob, roles=["viewer"])
    assert ident.authenticate(bearer(token), None).scopes == ROLE_SCOPES["viewer"]


def test_suspended_org_is_refused(ident: Identity) -> None:
    token = ident.login("root", ADMIN_PW).access_token
    with ident.db.write() as conn:
        store.set_org_status(conn, DEFAULT_ORG, "suspended", now_ms=ident.db.now_ms(conn))
    with pytest.raises(PermissionDenied) as info:
        Identity(ident.db).authenticate(bearer(token), None)
    assert info.value.reason == "organization_suspended"
    with pytest.raises(PermissionDenied):
        ident.login("root", ADMIN_PW)


# ----------------------------------------------------------------- users


def test_user_administration(ident: Identity) -> None:
    admin = admin_of(ident)
    with pytest.raises(InvalidArgument):
        ident.create_user(admin, username="x", email="", password="short")
    with pytest.raises(InvalidArgument):
        add_user(ident, admin, "x", ["wizard"])
    bob = add_user(ident, admin, "bob", ["operator"])
    with pytest.raises(store.Conflict):
        add_user(ident, admin, "bob", ["viewer"])
    add_user(ident, admin, "carol", ["viewer"])
    assert ident.list_users(admin, role="viewer").total == 1
    assert ident.list_users(admin, page=PageRequest(limit=1, offset=1)).items[0].username == "bob"
    updated = ident.update_user(admin, bob, email="b@example.com", password="new passphrase!")
    assert updated.email == "b@example.com"
    assert ident.login("bob", "new passphrase!").access_token
    ident.delete_user(admin, bob)
    assert ident.list_users(admin).total == 2
    refused(lambda: ident.login("bob", "new passphrase!"))
    assert ident.restore_user(admin, bob).deleted_at_ms is None
    with pytest.raises(FailedPrecondition):
        ident.delete_user(admin, admin.subject.removeprefix("user:"))
    actions = {e.action for e in audit(ident.db, "user.update")} | {
        e.action for e in audit(ident.db, "user.delete")
    }
    assert actions == {"user.update", "user.delete"}


def test_non_admins_cannot_administer(ident: Identity) -> None:
    admin = admin_of(ident)
    add_user(ident, admin, "bob", ["operator"])
    bob = ident.authenticate(bearer(ident.login("bob", USER_PW).access_token), None)
    with pytest.raises(PermissionDenied):
        ident.list_users(bob)
    assert ident.get_user(bob, bob.subject.removeprefix("user:")).username == "bob"
    with pytest.raises(PermissionDenied):
        ident.get_user(bob, admin.subject.removeprefix("user:"))
    assert [e.result for e in audit(ident.db, "user.list")] == ["denied"]


def test_ids_of_another_org_are_not_found(ident: Identity) -> None:
    admin = admin_of(ident)
    token = new_token(TokenKind.PAT)
    with ident.db.write() as conn:
        now = ident.db.now_ms(conn)
        store.create_org(conn, name="acme", org_id="acme", now_ms=now)
        other = store.create_user(
            conn, "acme", username="eve", email="", password_hash="x", now_ms=now, roles=["admin"]
        )
        pat = store.create_pat(
            conn,
            "acme",
            other.id,
            name="t",
            digest=token.digest,
            hint=token.hint,
            scopes=["workflows:read"],
            now_ms=now,
        )
        machine = store.create_machine_user(
            conn, "acme", username="m", name="m", digest="d" * 64, hint="h", now_ms=now
        )
    for call in (
        lambda: ident.get_user(admin, other.id),
        lambda: ident.update_user(admin, other.id, email="x@example.com"),
        lambda: ident.delete_user(admin, other.id),
        lambda: ident.restore_user(admin, other.id),
        lambda: ident.set_totp(admin, other.id),
        lambda: ident.revoke_pat(admin, pat.id),
        lambda: ident.create_pat(admin, name="x", scopes=["workflows:read"], user_id=other.id),
        lambda: ident.set_machine_user_enabled(admin, machine.id, False),
    ):
        with pytest.raises(NotFound):
            call()
    # ...and acme's PAT still works, in acme only.
    principal = ident.authenticate(bearer(token.token), "acme")
    assert principal.org_id == "acme"
    with pytest.raises(PermissionDenied):
        ident.authenticate(bearer(token.token), DEFAULT_ORG)


# ----------------------------------------------------------------- PATs


def test_pat_scopes_org_header_narrowing_and_revocation(ident: Identity) -> None:
    admin = admin_of(ident)
    bob_id = add_user(ident, admin, "bob", ["operator"])
    bob = ident.authenticate(bearer(ident.login("bob", USER_PW).access_token), None)
    with pytest.raises(InvalidArgument):
        ident.create_pat(bob, name="ci", scopes=["workflows:read", "admin:users"])
    with pytest.raises(InvalidArgument):
        ident.create_pat(bob, name="ci", scopes="workflows:read nonsense:scope")
    created = ident.create_pat(
        bob, name="ci", scopes="workflows:read workflows:run", expires_in_days=1
    )
    assert created.token.startswith("trl_pat_") and created.pat.user_id == bob_id
    assert created.pat.expires_at_ms is not None
    listed = ident.list_pats(bob).items
    assert [p.id for p in listed] == [created.pat.id]
    assert created.token not in repr(listed)

    auth = bearer(created.token)
    for header in (None, "", "bad header!"):
        with pytest.raises(MissingOrganization) as info:
            ident.authenticate(auth, header)
        assert str(info.value) == (
            "Personal Access Token requests require the X-Organization-ID header"
        )
    principal = ident.authenticate(auth, DEFAULT_ORG)
    assert principal.kind is PrincipalKind.PAT and principal.credential_id == created.pat.id
    assert principal.scopes == {"workflows:read", "workflows:run"}
    with pytest.raises(PermissionDenied):
        ident.authenticate(auth, "acme")

    # The PAT follows its user's roles as they are now.
    ident.update_user(admin, bob_id, roles=["viewer"])
    assert ident.authenticate(auth, DEFAULT_ORG).scopes == {"workflows:read"}

    # Others cannot revoke it; its owner can.
    add_user(ident, admin, "carol", ["operator"])
    carol = ident.authenticate(bearer(ident.login("carol", USER_PW).access_token), None)
    with pytest.raises(NotFound):
        ident.revoke_pat(carol, created.pat.id)
    ident.revoke_pat(bob, created.pat.id)
    refused(lambda: ident.authenticate(auth, DEFAULT_ORG))
    assert ident.list_pats(admin, all_users=True).items == ()


def test_expired_pat_is_refused(ident: Identity) -> None:
    admin = admin_of(ident)
    token = new_token(TokenKind.PAT)
    with ident.db.write() as conn:
        now = ident.db.now_ms(conn)
        store.create_pat(
            conn,
            DEFAULT_ORG,
            admin.subject.removeprefix("user:"),
            name="old",
            digest=token.digest,
            hint=token.hint,
            scopes=["workflows:read"],
            now_ms=now - 10_000,
            expires_at_ms=now - 1,
        )
    refused(lambda: ident.authenticate(bearer(token.token), DEFAULT_ORG))
    with pytest.raises(InvalidArgument):
        ident.create_pat(admin, name="x", scopes=["workflows:read"], expires_at_ms=1)


def test_pat_of_a_disabled_user_is_refused(ident: Identity) -> None:
    admin = admin_of(ident)
    bob_id = add_user(ident, admin, "bob", ["operator"])
    pat = ident.create_pat(admin, name="for bob", scopes=["workflows:read"], user_id=bob_id)
    assert ident.authenticate(bearer(pat.token), DEFAULT_ORG).name == "bob"
    ident.update_user(admin, bob_id, enabled=False)
    refused(lambda: ident.authenticate(bearer(pat.token), DEFAULT_ORG))


# ----------------------------------------------------------------- machine users


def test_machine_user_token_basic_auth_validation_and_backends(ident: Identity) -> None:
    admin = admin_of(ident)
    created = ident.create_machine_user(admin, username="payments", name="Payment Service")
    assert created.token.startswith("trl_mu_")
    machine = ident.authenticate(bearer(created.token), None)
    assert machine.kind is PrincipalKind.MACHINE and machine.scopes == MACHINE_SCOPES
    assert machine.subject == f"machine:{created.machine_user.id}"

    basic = base64.b64encode(f"payments:{created.token}".encode()).decode()
    assert ident.authenticate(f"Basic {basic}", None) == machine
    wrong = base64.b64encode(f"someone:{created.token}".encode()).decode()
    refused(lambda: ident.authenticate(f"Basic {wrong}", None))

    assert ident.validate("payments", created.token).machine_user_id == created.machine_user.id
    assert not ident.validate("someone", created.token).valid
    assert not ident.validate("payments", "trl_mu_nonsense").valid

    first = ident.register_backend(machine, "pay", "https://pay.example.com/cb")
    backend = first.backend
    assert first.created and backend.machine_user_id == created.machine_user.id
    with pytest.raises(store.Conflict):
        ident.register_backend(machine, "pay", "https://pay.example.com/v2")
    replaced = ident.register_backend(machine, "pay", "https://pay.example.com/v2", replace=True)
    again = replaced.backend
    assert not replaced.created and again.id == backend.id and again.callback_url.endswith("/v2")
    with pytest.raises(InvalidArgument):
        ident.register_backend(machine, "pay", "ftp://x")
    with pytest.raises(PermissionDenied):
        ident.register_backend(admin, "pay", "https://pay.example.com/cb")

    ident.set_machine_user_enabled(admin, created.machine_user.id, False)
    refused(lambda: ident.authenticate(bearer(created.token), None))
    assert not ident.validate("payments", created.token).valid
    assert [m.enabled for m in ident.list_machine_users(admin).items] == [False]


def test_an_old_signing_key_is_rotated_and_keeps_verifying_its_tokens(
    ident: Identity, db: Database
) -> None:
    import jwt as pyjwt

    before = ident.login("root", ADMIN_PW).access_token
    ident.ensure_signing_key(max_key_age_secs=30 * 86_400)  # young: nothing happens
    assert len(ident.jwks()["keys"]) == 1
    ident.ensure_signing_key(max_key_age_secs=0)  # due: a new key signs from now on
    after = ident.login("root", ADMIN_PW).access_token
    old_kid = pyjwt.get_unverified_header(before)["kid"]
    new_kid = pyjwt.get_unverified_header(after)["kid"]
    assert old_kid != new_kid
    assert {k["kid"] for k in ident.jwks()["keys"]} == {old_kid, new_kid}
    # A token signed before the rotation still works until it expires.
    assert ident.authenticate(bearer(before), None).subject
    assert ident.authenticate(bearer(after), None).subject
    # Another replica (a second Identity on the same database) agrees.
    other = Identity(db)
    assert other.authenticate(bearer(before), None).subject
    page = ident.list_audit(admin_of(ident), action="keys.rotate")
    assert page.total == 1
