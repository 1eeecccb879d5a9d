"""The identity store (trellis.server.identity.store) on real SQLite and PostgreSQL.

Every test runs on both backends through ``database_url``. Times are passed
explicitly (``now_ms``), so nothing here sleeps; races use threads, each in its
own transaction, lined up on a barrier.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.config import Config
from conftest import race, wait_until
from sqlalchemy import Connection, inspect, text

from trellis.server.core import db as db_module
from trellis.server.core.db import Database, upgrade_schema
from trellis.server.core.errors import InvalidArgument
from trellis.server.identity import store
from trellis.server.identity.jwt_keys import KeyRing, KeyState, TokenIssuer
from trellis.server.identity.secrets_ import TokenKind, new_token
from trellis.server.identity.store import Conflict, PolicyRule

T = TypeVar("T")
T0 = 1_800_000_000_000  # a fixed "now" in epoch ms
HOUR = 3_600_000
IDENTITY_TABLES = {
    "organizations",
    "users",
    "signing_keys",
    "sessions",
    "retired_refresh_tokens",
    "revoked_jtis",
    "api_tokens",
    "machine_users",
    "machine_backends",
    "oauth_clients",
    "oauth_codes",
    "policies",
    "audit_events",
}


def write(db: Database, fn: Callable[[Connection], T]) -> T:
    with db.write() as conn:
        return fn(conn)


def read(db: Database, fn: Callable[[Connection], T]) -> T:
    with db.read() as conn:
        return fn(conn)


def add_user(conn: Connection, org: str, username: str, **kwargs: Any) -> store.User:
    fields: dict[str, Any] = {
        "email": f"{username}@example.com",
        "password_hash": "$argon2id$not-a-real-hash",
        "now_ms": T0,
    }
    fields.update(kwargs)
    return store.create_user(conn, org, username=username, **fields)


def while_held(db: Database, first: Callable[[Connection], T], second: Callable[[], T]) -> T:
    """Runs ``first`` in a transaction kept open until ``second``, started on another
    thread, is blocked behind it (on PostgreSQL, waiting for a row lock), then commits
    and returns what ``second`` returned."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(second())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    with db.write() as conn:
        first(conn)
        thread.start()
        if db.is_postgres:
            wait_until(lambda: lock_waiters(db) > 0)
        # On SQLite the second writer queues on the write lock; nothing to observe.
    thread.join(timeout=60)
    assert not errors, errors
    return results[0]


def lock_waiters(db: Database) -> int:
    with db.engine.connect() as conn:
        query = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(conn.execute(text(query)).scalar_one())


# ----------------------------------------------------------------- schema


def test_identity_migration_downgrades_and_upgrades_again(db: Database) -> None:
    def tables() -> set[str]:
        with db.engine.connect() as conn:
            return set(inspect(conn).get_table_names())

    assert tables() >= IDENTITY_TABLES
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(db_module.__file__).parents[1] / "migrations"))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert not IDENTITY_TABLES & tables()
    assert "jobs" in tables()
    upgrade_schema(db)
    assert tables() >= IDENTITY_TABLES


# ----------------------------------------------------------------- organizations


def test_orgs_create_list_rename_and_suspend(db: Database) -> None:
    with db.write() as conn:
        default = store.create_org(conn, name="Default", org_id="default", now_ms=T0)
        acme = store.create_org(conn, name="Acme", now_ms=T0 + 1)
        with pytest.raises(Conflict):
            store.create_org(conn, name="Acme", now_ms=T0 + 2)
        with pytest.raises(Conflict):
            store.create_org(conn, name="Other", org_id="default", now_ms=T0 + 2)
        # A Conflict leaves the caller's transaction usable (a savepoint absorbed it).
        globex = store.create_org(conn, name="Globex", now_ms=T0 + 3)
    assert default.id == "default" and len(acme.id) == 32

    with db.write() as conn:
        suspended = store.set_org_status(conn, acme.id, "suspended", now_ms=T0 + 10)
        assert suspended is not None
        assert (suspended.status, suspended.updated_at_ms) == ("suspended", T0 + 10)
        assert store.set_org_status(conn, "nope", "active", now_ms=T0) is None
        with pytest.raises(InvalidArgument):
            store.set_org_status(conn, acme.id, "deleted", now_ms=T0)  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            store.update_org(conn, globex.id, name="Acme", now_ms=T0 + 11)
        renamed = store.update_org(conn, globex.id, name="Globex Corp", now_ms=T0 + 12)
        assert renamed is not None and renamed.name == "Globex Corp"

    with db.read() as conn:
        page = store.list_orgs(conn)
        assert [o.id for o in page.items] == ["default", acme.id, globex.id]
        assert page.total == 3
        only = store.list_orgs(conn, status="suspended")
        assert [o.id for o in only.items] == [acme.id] and only.total == 1
        second = store.list_orgs(conn, limit=1, offset=1)
        assert [o.id for o in second.items] == [acme.id] and second.total == 3
        assert store.get_org(conn, globex.id) == renamed
        assert store.get_org(conn, "nope") is None


# ----------------------------------------------------------------- users


def test_users_of_one_org_are_invisible_to_another(db: Database) -> None:
    with db.write() as conn:
        alice = add_user(conn, "org-a", "alice", roles=["admin"])
        # The same username in another org is a different user.
        other = add_user(conn, "org-b", "alice")
        assert other.id != alice.id

    with db.write() as conn:
        assert store.get_user(conn, "org-b", alice.id) is None
        assert store.get_user(conn, "org-b", alice.id, include_deleted=True) is None
        by_name = store.get_user_by_username(conn, "org-b", "alice")
        assert by_name is not None and by_name.id == other.id
        assert [u.id for u in store.list_users(conn, "org-b").items] == [other.id]
        assert store.update_user(conn, "org-b", alice.id, email="x@y.z", now_ms=T0) is None
        assert not store.set_password(conn, "org-b", alice.id, "h", now_ms=T0)
        assert not store.record_login(conn, "org-b", alice.id, now_ms=T0)
        assert not store.set_totp_secret(conn, "org-b", alice.id, "S" * 32, now_ms=T0)
        assert not store.delete_user(conn, "org-b", alice.id, now_ms=T0)

    with db.read() as conn:
        assert store.get_user(conn, "org-a", alice.id) == alice


def test_a_taken_username_conflicts_even_after_deletion(db: Database) -> None:
    with db.write() as conn:
        bob = add_user(conn, "org-a", "bob")
        with pytest.raises(Conflict, match="bob"):
            add_user(conn, "org-a", "bob")
        assert store.delete_user(conn, "org-a", bob.id, now_ms=T0 + 1)
        with pytest.raises(Conflict):
            add_user(conn, "org-a", "bob")
        restored = store.restore_user(conn, "org-a", bob.id, now_ms=T0 + 2)
        assert restored is not None and restored.deleted_at_ms is None


def test_list_users_filters_by_exact_role_and_enabled_and_paginates(db: Database) -> None:
    with db.write() as conn:
        made = [
            add_user(conn, "org-a", "u0", roles=["admin", "operator"], now_ms=T0),
            add_user(conn, "org-a", "u1", roles=["superadmin"], now_ms=T0 + 1),
            add_user(conn, "org-a", "u2", roles=["operator"], enabled=False, now_ms=T0 + 2),
            add_user(conn, "org-a", "u3", roles=[], now_ms=T0 + 3),
            add_user(conn, "org-a", "u4", roles=["admin"], now_ms=T0 + 4),
            add_user(conn, "org-b", "b0", roles=["admin"], now_ms=T0),
        ]
        store.delete_user(conn, "org-a", made[4].id, now_ms=T0 + 5)

    def names(page: store.Page[store.User]) -> list[str]:
        return [u.username for u in page.items]

    with db.read() as conn:
        everyone = store.list_users(conn, "org-a")
        assert names(everyone) == ["u0", "u1", "u2", "u3"] and everyone.total == 4
        # "admin" must not match "superadmin": roles are compared as list elements.
        admins = store.list_users(conn, "org-a", role="admin")
        assert names(admins) == ["u0"] and admins.total == 1
        assert names(store.list_users(conn, "org-a", role="operator")) == ["u0", "u2"]
        assert names(store.list_users(conn, "org-a", role="nobody")) == []
        assert names(store.list_users(conn, "org-a", enabled=False)) == ["u2"]
        assert names(store.list_users(conn, "org-a", enabled=True, role="operator")) == ["u0"]
        page = store.list_users(conn, "org-a", limit=2, offset=1)
        assert names(page) == ["u1", "u2"] and page.total == 4
        assert names(store.list_users(conn, "org-a", offset=10)) == []
        assert store.list_users(conn, "org-a", limit=0).total == 4
        with_deleted = store.list_users(conn, "org-a", include_deleted=True, role="admin")
        assert names(with_deleted) == ["u0", "u4"]
        with pytest.raises(InvalidArgument):
            store.list_users(conn, "org-a", limit=-1)
        with pytest.raises(InvalidArgument):
            store.list_users(conn, "org-a", offset=-1)


def test_update_user_changes_only_what_is_given(db: Database) -> None:
    with db.write() as conn:
        carol = add_user(conn, "org-a", "carol", roles=["operator"])
        updated = store.update_user(conn, "org-a", carol.id, roles=["admin"], now_ms=T0 + 5)
        assert updated is not None
        assert updated.roles == ("admin",)
        assert updated.email == carol.email and updated.enabled
        assert updated.updated_at_ms == T0 + 5
        again = store.update_user(
            conn, "org-a", carol.id, email="c@new.example", roles=[], now_ms=T0 + 6
        )
        assert again is not None and again.email == "c@new.example" and again.roles == ()
        with pytest.raises(TypeError):
            store.update_user(conn, "org-a", carol.id, roles="admin", now_ms=T0)
        dup = store.update_user(conn, "org-a", carol.id, roles=["a", "b", "a"], now_ms=T0)
        assert dup is not None and dup.roles == ("a", "b")


def test_disabling_or_deleting_a_user_revokes_their_sessions(db: Database) -> None:
    with db.write() as conn:
        dan = add_user(conn, "org-a", "dan")
        erin = add_user(conn, "org-a", "erin")
        s_dan = store.create_session(
            conn, "org-a", dan.id, refresh_digest="d1", expires_at_ms=T0 + HOUR, now_ms=T0
        )
        s_erin = store.create_session(
            conn, "org-a", erin.id, refresh_digest="e1", expires_at_ms=T0 + HOUR, now_ms=T0
        )
    with db.write() as conn:
        off = store.update_user(conn, "org-a", dan.id, enabled=False, now_ms=T0 + 1)
        assert off is not None and not off.enabled
        assert store.rotate_refresh(conn, "d1", "d2", now_ms=T0 + 2).outcome == "unknown"
        dan_session = store.get_session(conn, "org-a", s_dan.id)
        assert dan_session is not None and dan_session.revoked_at_ms == T0 + 1

        assert store.delete_user(conn, "org-a", erin.id, now_ms=T0 + 3)
        assert not store.delete_user(conn, "org-a", erin.id, now_ms=T0 + 4)
        assert store.rotate_refresh(conn, "e1", "e2", now_ms=T0 + 5).outcome == "unknown"
        assert not store.get_session(conn, "org-a", s_erin.id).is_live(T0 + 5)  # type: ignore[union-attr]

        # Deleted users are gone from lookups, login included, but can be restored.
        assert store.get_user(conn, "org-a", erin.id) is None
        assert store.get_user_by_username(conn, "org-a", "erin") is None
        gone = store.get_user(conn, "org-a", erin.id, include_deleted=True)
        assert gone is not None and gone.deleted_at_ms == T0 + 3
        assert store.update_user(conn, "org-a", erin.id, email="x@y.z", now_ms=T0) is None
        assert store.restore_user(conn, "org-a", dan.id, now_ms=T0) is None  # not deleted
        back = store.restore_user(conn, "org-a", erin.id, now_ms=T0 + 6)
        assert back is not None and back.deleted_at_ms is None
        assert store.get_user_by_username(conn, "org-a", "erin") == back


def test_login_stamp_rehash_and_totp_replay_protection(db: Database) -> None:
    with db.write() as conn:
        fay = add_user(conn, "org-a", "fay")
        assert fay.last_login_ms is None and not fay.mfa_enabled
        assert store.record_login(conn, "org-a", fay.id, now_ms=T0 + 7, password_hash="new")
        after = store.get_user(conn, "org-a", fay.id)
        assert after is not None
        assert (after.last_login_ms, after.password_hash, after.updated_at_ms) == (
            T0 + 7,
            "new",
            T0,
        )
        assert "new" not in repr(after)

        # No TOTP enrolled: no step can be recorded.
        assert not store.record_totp_step(conn, "org-a", fay.id, 100)
        assert store.set_totp_secret(conn, "org-a", fay.id, "JBSWY3DPEHPK3PXP", now_ms=T0)
        assert store.record_totp_step(conn, "org-a", fay.id, 100)
        assert not store.record_totp_step(conn, "org-a", fay.id, 100)  # replay
        assert not store.record_totp_step(conn, "org-a", fay.id, 99)  # older
        assert not store.record_totp_step(conn, "org-b", fay.id, 101)  # other org
        assert store.record_totp_step(conn, "org-a", fay.id, 101)
        enrolled = store.get_user(conn, "org-a", fay.id)
        assert enrolled is not None and enrolled.mfa_enabled
        assert enrolled.totp_last_step == 101
        # Re-enrolling starts the replay marker afresh; removing disables MFA.
        assert store.set_totp_secret(conn, "org-a", fay.id, None, now_ms=T0)
        removed = store.get_user(conn, "org-a", fay.id)
        assert removed is not None and not removed.mfa_enabled
        assert removed.totp_last_step is None


def test_concurrent_uses_of_one_totp_step_let_exactly_one_through(db: Database) -> None:
    with db.write() as conn:
        gus = add_user(conn, "org-a", "gus")
        store.set_totp_secret(conn, "org-a", gus.id, "JBSWY3DPEHPK3PXP", now_ms=T0)

    for step in range(1000, 1005):
        results = race(
            2, lambda _i, s=step: write(db, lambda c: store.record_totp_step(c, "org-a", gus.id, s))
        )
        assert sorted(results) == [False, True]


def test_overlong_values_are_refused_alike_on_both_backends(db: Database) -> None:
    with db.write() as conn:
        with pytest.raises(InvalidArgument, match="username"):
            add_user(conn, "org-a", "x" * 201)
        hank = add_user(conn, "org-a", "hank")
        with pytest.raises(InvalidArgument, match="email"):
            store.update_user(conn, "org-a", hank.id, email="e" * 321, now_ms=T0)
        # Text columns have no limit.
        assert store.set_password(conn, "org-a", hank.id, "h" * 5000, now_ms=T0)


# ----------------------------------------------------------------- signing keys


def test_signing_keys_round_trip_through_rotation(db: Database) -> None:
    ring = KeyRing.generate(now=T0 / 1000)
    with db.write() as conn:
        store.save_signing_keys(conn, ring.keys)
    issuer = TokenIssuer(ring, "https://trellis.example", "trellis", 300)
    token = issuer.issue(subject="u1", org="default", scopes=["workflows:read"], now=T0 / 1000)

    with db.read() as conn:
        loaded = KeyRing(store.load_signing_keys(conn))
    assert loaded.active.kid == ring.active.kid
    assert loaded.active.created_at == pytest.approx(ring.active.created_at, abs=0.001)
    # The reloaded private key verifies what the original signed, and signs itself.
    reloaded = TokenIssuer(loaded, "https://trellis.example", "trellis", 300)
    assert reloaded.verify(token.token, now=T0 / 1000).subject == "u1"

    old_kid = ring.active.kid
    ring.rotate(now=T0 / 1000 + 60)
    with db.write() as conn:
        store.save_signing_keys(conn, ring.keys)
    with db.read() as conn:
        after = {k.kid: k for k in store.load_signing_keys(conn)}
    assert after[old_kid].state is KeyState.VERIFYING
    assert after[old_kid].rotated_at == pytest.approx(T0 / 1000 + 60)
    assert after[ring.active.kid].state is KeyState.ACTIVE
    # Tokens signed before the rotation still verify with the reloaded ring.
    rotated = TokenIssuer(KeyRing(after.values()), "https://trellis.example", "trellis", 300)
    assert rotated.verify(token.token, now=T0 / 1000 + 60).subject == "u1"

    ring.retire(old_kid)
    with db.write() as conn:
        store.save_signing_keys(conn, ring.keys)
        assert store.delete_signing_key(conn, old_kid)
        assert not store.delete_signing_key(conn, old_kid)
    with db.read() as conn:
        assert [k.kid for k in store.load_signing_keys(conn)] == [ring.active.kid]


def test_two_replicas_rotating_at_once_cannot_both_activate_a_key(db: Database) -> None:
    ring = KeyRing.generate(now=T0 / 1000)
    with db.write() as conn:
        store.save_signing_keys(conn, ring.keys)
    with db.read() as conn:
        replica_a = KeyRing(store.load_signing_keys(conn))
        replica_b = KeyRing(store.load_signing_keys(conn))
    replica_a.rotate(now=T0 / 1000 + 1)
    replica_b.rotate(now=T0 / 1000 + 1)
    with db.write() as conn:
        store.save_signing_keys(conn, replica_a.keys)
    with pytest.raises(Conflict), db.write() as conn:
        store.save_signing_keys(conn, replica_b.keys)
    with db.read() as conn:
        winner = KeyRing(store.load_signing_keys(conn))
    assert winner.active.kid == replica_a.active.kid


# ----------------------------------------------------------------- sessions


def new_session(conn: Connection, digest: str, **kwargs: Any) -> store.Session:
    fields: dict[str, Any] = {"expires_at_ms": T0 + HOUR, "now_ms": T0}
    fields.update(kwargs)
    return store.create_session(conn, "org-a", "user-1", refresh_digest=digest, **fields)


def test_refresh_rotation_and_reuse_detection(db: Database) -> None:
    with db.write() as conn:
        session = new_session(conn, "r0", scopes=["workflows:read"])
        assert session.generation == 0 and session.scopes == ("workflows:read",)
        with pytest.raises(Conflict):
            new_session(conn, "r0")

    with db.write() as conn:
        first = store.rotate_refresh(conn, "r0", "r1", now_ms=T0 + 1)
        assert first.outcome == "rotated" and first.session is not None
        assert (first.session.id, first.session.generation) == (session.id, 1)
        second = store.rotate_refresh(conn, "r1", "r2", now_ms=T0 + 2)
        assert second.outcome == "rotated" and second.session is not None
        assert second.session.generation == 2
        assert store.rotate_refresh(conn, "nope", "x", now_ms=T0 + 3).outcome == "unknown"

    # r0 was rotated away two generations ago: presenting it again is reuse.
    with db.write() as conn:
        reused = store.rotate_refresh(conn, "r0", "r3", now_ms=T0 + 4)
        assert reused.outcome == "reused" and reused.session is not None
        assert reused.session.id == session.id and reused.session.revoked_at_ms == T0 + 4
    # The current token of the now revoked session is worthless too.
    with db.write() as conn:
        assert store.rotate_refresh(conn, "r2", "r4", now_ms=T0 + 5) == store.RefreshRotation(
            "unknown", None
        )
        # A reuse report on an already revoked session keeps the first revocation time.
        again = store.rotate_refresh(conn, "r1", "r5", now_ms=T0 + 6)
        assert again.outcome == "reused" and again.session is not None
        assert again.session.revoked_at_ms == T0 + 4


def test_rotation_refuses_expired_sessions_and_other_clients(db: Database) -> None:
    with db.write() as conn:
        new_session(conn, "web", client_id="client-1")
        new_session(conn, "short", expires_at_ms=T0 + 10)
    with db.write() as conn:
        assert store.rotate_refresh(conn, "short", "s2", now_ms=T0 + 10).outcome == "unknown"
        # First-party rotation (no client) cannot use a client's token, nor another client.
        assert store.rotate_refresh(conn, "web", "w2", now_ms=T0).outcome == "unknown"
        wrong = store.rotate_refresh(conn, "web", "w2", now_ms=T0, client_id="client-2")
        assert wrong.outcome == "unknown"
        right = store.rotate_refresh(conn, "web", "w2", now_ms=T0, client_id="client-1")
        assert right.outcome == "rotated"


def test_concurrent_rotations_of_one_token_rotate_once_and_revoke(db: Database) -> None:
    for round_ in range(5):
        with db.write() as conn:
            session = new_session(conn, f"old-{round_}")

        def rotate(i: int, r: int = round_) -> str:
            return write(
                db, lambda c: store.rotate_refresh(c, f"old-{r}", f"new-{r}-{i}", now_ms=T0 + 1)
            ).outcome

        assert sorted(race(2, rotate)) == ["reused", "rotated"]
        with db.read() as conn:
            revoked = store.get_session(conn, "org-a", session.id)
        assert revoked is not None and revoked.revoked_at_ms is not None


def test_a_rotation_blocked_behind_an_uncommitted_one_reports_reuse(db: Database) -> None:
    with db.write() as conn:
        session = new_session(conn, "held")

    def first(conn: Connection) -> None:
        assert store.rotate_refresh(conn, "held", "held-a", now_ms=T0 + 1).outcome == "rotated"

    def second() -> str:
        return write(db, lambda c: store.rotate_refresh(c, "held", "held-b", now_ms=T0 + 1)).outcome

    assert while_held(db, first, second) == "reused"
    with db.read() as conn:
        revoked = store.get_session(conn, "org-a", session.id)
    assert revoked is not None and revoked.revoked_at_ms == T0 + 1


def test_session_revocation_is_org_scoped(db: Database) -> None:
    with db.write() as conn:
        s1 = new_session(conn, "a1")
        s2 = new_session(conn, "a2")
        other = store.create_session(
            conn, "org-b", "user-1", refresh_digest="b1", expires_at_ms=T0 + HOUR, now_ms=T0
        )
    with db.write() as conn:
        assert store.get_session(conn, "org-b", s1.id) is None
        assert not store.revoke_session(conn, "org-b", s1.id, now_ms=T0 + 1)
        assert store.revoke_session(conn, "org-a", s1.id, now_ms=T0 + 1)
        assert not store.revoke_session(conn, "org-a", s1.id, now_ms=T0 + 2)
        assert store.revoke_user_sessions(conn, "org-a", "user-1", now_ms=T0 + 3) == 1
        live = store.get_session(conn, "org-b", other.id)
        assert live is not None and live.is_live(T0 + 3)
        gone = store.get_session(conn, "org-a", s2.id)
        assert gone is not None and gone.revoked_at_ms == T0 + 3


# ----------------------------------------------------------------- revoked jtis, purge


def test_jti_revocation_is_idempotent_and_purged_after_expiry(db: Database) -> None:
    with db.write() as conn:
        store.revoke_jti(conn, "org-a", "jti-1", expires_at_ms=T0 + 100)
        store.revoke_jti(conn, "org-a", "jti-1", expires_at_ms=T0 + 100)  # logout twice
        store.revoke_jti(conn, "org-a", "jti-2", expires_at_ms=T0 + 200)
    with db.read() as conn:
        assert store.is_jti_revoked(conn, "jti-1")
        assert store.is_jti_revoked(conn, "jti-2")
        assert not store.is_jti_revoked(conn, "jti-3")
    with db.write() as conn:
        assert store.purge_revoked_jtis(conn, now_ms=T0 + 99) == 0
        assert store.purge_revoked_jtis(conn, now_ms=T0 + 100) == 1
    with db.read() as conn:
        assert not store.is_jti_revoked(conn, "jti-1")
        assert store.is_jti_revoked(conn, "jti-2")


def test_concurrent_revocations_of_one_jti_do_not_fail(db: Database) -> None:
    def revoke(_i: int) -> None:
        write(db, lambda c: store.revoke_jti(c, "org-a", "same", expires_at_ms=T0))

    race(4, revoke)
    assert read(db, lambda c: store.is_jti_revoked(c, "same"))


def test_purge_expired_removes_only_what_has_expired(db: Database) -> None:
    with db.write() as conn:
        store.revoke_jti(conn, "org-a", "j-old", expires_at_ms=T0 + 10)
        store.revoke_jti(conn, "org-a", "j-new", expires_at_ms=T0 + HOUR)
        new_session(conn, "s-old", expires_at_ms=T0 + 10)
        new_session(conn, "s-new", expires_at_ms=T0 + HOUR)
        for digest, expires in (("c-old", T0 + 10), ("c-new", T0 + HOUR)):
            store.create_oauth_code(
                conn,
                "org-a",
                digest=digest,
                client_id="c",
                user_id="u",
                redirect_uri="https://app/cb",
                scopes=[],
                code_challenge=None,
                expires_at_ms=expires,
                now_ms=T0,
            )
    with db.write() as conn:
        assert store.rotate_refresh(conn, "s-old", "s-old-2", now_ms=T0 + 1).outcome == "rotated"
        assert store.rotate_refresh(conn, "s-new", "s-new-2", now_ms=T0 + 1).outcome == "rotated"
    with db.write() as conn:
        counts = store.purge_expired(conn, now_ms=T0 + 10)
    assert counts == store.PurgeCounts(
        revoked_jtis=1, sessions=1, retired_refresh_tokens=1, oauth_codes=1
    )
    with db.write() as conn:
        assert store.is_jti_revoked(conn, "j-new")
        # The live session still detects reuse of its retired token.
        assert store.rotate_refresh(conn, "s-new", "x", now_ms=T0 + 11).outcome == "reused"
        assert store.consume_oauth_code(conn, "c-new", now_ms=T0 + 11).outcome == "redeemed"
        assert store.consume_oauth_code(conn, "c-old", now_ms=T0 + 11).outcome == "unknown"


# ----------------------------------------------------------------- personal access tokens


def test_pats_are_org_scoped_listed_without_digests_and_checked_on_lookup(db: Database) -> None:
    issued = new_token(TokenKind.PAT)
    with db.write() as conn:
        pat = store.create_pat(
            conn,
            "org-a",
            "user-1",
            name="ci",
            digest=issued.digest,
            hint=issued.hint,
            scopes=["workflows:read", "workflows:run"],
            now_ms=T0,
        )
        mine_too = store.create_pat(
            conn, "org-a", "user-1", name="x", digest="d2", hint="h", scopes=[], now_ms=T0 + 1
        )
        theirs = store.create_pat(
            conn, "org-a", "user-2", name="y", digest="d3", hint="h", scopes=[], now_ms=T0 + 2
        )
        with pytest.raises(Conflict):
            store.create_pat(
                conn, "org-b", "user-9", name="z", digest="d3", hint="h", scopes=[], now_ms=T0
            )

    assert not any(f.name == "digest" for f in dataclasses.fields(store.Pat))
    with db.read() as conn:
        listed = store.list_pats(conn, "org-a", user_id="user-1")
        assert [p.id for p in listed] == [mine_too.id, pat.id]  # newest first
        assert all(issued.digest not in repr(p) for p in listed)
        assert listed[1].scopes == ("workflows:read", "workflows:run")
        assert listed[1].hint == issued.hint
        assert len(store.list_pats(conn, "org-a")) == 3
        assert store.list_pats(conn, "org-b") == []
        assert store.get_pat(conn, "org-b", pat.id) is None
        found = store.get_pat_by_digest(conn, issued.digest, now_ms=T0)
        assert found == pat and found.org_id == "org-a"

    with db.write() as conn:
        assert not store.revoke_pat(conn, "org-b", pat.id, now_ms=T0 + 5)
        assert not store.revoke_pat(conn, "org-a", theirs.id, now_ms=T0 + 5, user_id="user-1")
        assert store.revoke_pat(conn, "org-a", pat.id, now_ms=T0 + 5, user_id="user-1")
        assert not store.revoke_pat(conn, "org-a", pat.id, now_ms=T0 + 6)
    with db.read() as conn:
        assert store.get_pat_by_digest(conn, issued.digest, now_ms=T0 + 6) is None
        assert [p.id for p in store.list_pats(conn, "org-a", user_id="user-1")] == [mine_too.id]
        everything = store.list_pats(conn, "org-a", user_id="user-1", include_revoked=True)
        assert everything[1].revoked_at_ms == T0 + 5


def test_pat_expiry_and_last_used_throttling(db: Database) -> None:
    with db.write() as conn:
        pat = store.create_pat(
            conn,
            "org-a",
            "user-1",
            name="short",
            digest="dx",
            hint="h",
            scopes=[],
            now_ms=T0,
            expires_at_ms=T0 + 1000,
        )
    with db.write() as conn:
        assert store.get_pat_by_digest(conn, "dx", now_ms=T0 + 999) is not None
        assert store.get_pat_by_digest(conn, "dx", now_ms=T0 + 1000) is None
        assert store.touch_pat(conn, pat.id, now_ms=T0 + 10)
        assert not store.touch_pat(conn, pat.id, now_ms=T0 + 20)
        assert store.touch_pat(conn, pat.id, now_ms=T0 + 10 + store.TOUCH_INTERVAL_MS)
        touched = store.get_pat(conn, "org-a", pat.id)
        assert touched is not None
        assert touched.last_used_at_ms == T0 + 10 + store.TOUCH_INTERVAL_MS


# ----------------------------------------------------------------- machine users


def test_machine_users_lookup_by_digest_and_username(db: Database) -> None:
    token = new_token(TokenKind.MACHINE_USER)
    with db.write() as conn:
        mu = store.create_machine_user(
            conn,
            "org-a",
            username="payment-service",
            name="Payments",
            digest=token.digest,
            hint=token.hint,
            now_ms=T0,
        )
        with pytest.raises(Conflict):
            store.create_machine_user(
                conn, "org-a", username="payment-service", name="n", digest="o", hint="h", now_ms=T0
            )
        twin = store.create_machine_user(
            conn, "org-b", username="payment-service", name="n", digest="o", hint="h", now_ms=T0
        )
        with pytest.raises(Conflict):  # the token digest is unique across orgs
            store.create_machine_user(
                conn, "org-c", username="p", name="n", digest=token.digest, hint="h", now_ms=T0
            )

    with db.read() as conn:
        by_digest = store.get_machine_user_by_digest(conn, token.digest)
        assert by_digest == mu and by_digest.org_id == "org-a"
        assert store.get_machine_user_by_username(conn, "org-a", "payment-service") == mu
        assert store.get_machine_user_by_username(conn, "org-b", "payment-service") == twin
        assert store.get_machine_user(conn, "org-b", mu.id) is None
        assert [m.id for m in store.list_machine_users(conn, "org-a")] == [mu.id]

    with db.write() as conn:
        assert not store.set_machine_user_enabled(conn, "org-b", mu.id, False, now_ms=T0 + 1)
        assert store.set_machine_user_enabled(conn, "org-a", mu.id, False, now_ms=T0 + 1)
    with db.read() as conn:
        assert store.get_machine_user_by_digest(conn, token.digest) is None
        disabled = store.get_machine_user(conn, "org-a", mu.id)
        assert disabled is not None and not disabled.enabled


def test_backend_names_are_taken_unless_replaced_and_org_scoped(db: Database) -> None:
    with db.write() as conn:
        first, created = store.register_backend(
            conn,
            "org-a",
            "mu-1",
            name="Payment Service",
            callback_url="https://pay.example/cb",
            description="Handles payments",
            now_ms=T0,
        )
        assert created

        def register_v2(replace: bool) -> tuple[store.MachineBackend, bool]:
            return store.register_backend(
                conn,
                "org-a",
                "mu-1",
                name="Payment Service",
                callback_url="https://pay.example/v2/cb",
                now_ms=T0 + 5,
                replace=replace,
            )

        with pytest.raises(Conflict, match="registered already; set replace"):
            register_v2(replace=False)
        again, created_again = register_v2(replace=True)
        assert not created_again
        assert again.id == first.id and again.created_at_ms == T0
        assert (again.callback_url, again.description, again.updated_at_ms) == (
            "https://pay.example/v2/cb",
            "",
            T0 + 5,
        )
        other, _ = store.register_backend(
            conn, "org-b", "mu-1", name="Payment Service", callback_url="https://b/cb", now_ms=T0
        )
        assert other.id != first.id
        with pytest.raises(InvalidArgument):
            store.register_backend(
                conn, "org-a", "mu-1", name="n", callback_url="https://" + "x" * 2048, now_ms=T0
            )
    with db.read() as conn:
        assert [b.id for b in store.list_backends(conn, "org-a")] == [first.id]
        assert store.list_backends(conn, "org-a", machine_user_id="mu-2") == []
        assert [b.id for b in store.list_backends(conn, "org-b")] == [other.id]


def test_concurrent_first_registrations_of_a_backend_make_one_row(db: Database) -> None:
    def register(i: int) -> bool:
        return write(
            db,
            lambda c: store.register_backend(
                c,
                "org-a",
                "mu-1",
                name="svc",
                callback_url=f"https://h/{i}",
                now_ms=T0,
                replace=True,
            ),
        )[1]

    assert sorted(race(2, register)) == [False, True]
    assert len(read(db, lambda c: store.list_backends(c, "org-a"))) == 1

    def first(i: int) -> str:
        try:
            write(
                db,
                lambda c: store.register_backend(
                    c, "org-a", "mu-2", name="svc", callback_url=f"https://h/{i}", now_ms=T0
                ),
            )
        except Conflict:
            return "conflict"
        return "created"

    assert sorted(race(2, first)) == ["conflict", "created"]
    assert len(read(db, lambda c: store.list_backends(c, "org-a", machine_user_id="mu-2"))) == 1


# ----------------------------------------------------------------- OAuth clients and codes


def add_client(conn: Connection, org: str, secret_digest: str | None, **kwargs: Any) -> Any:
    fields: dict[str, Any] = {
        "name": "app",
        "secret_digest": secret_digest,
        "secret_hint": None if secret_digest is None else "trl_cs_...abcd",
        "redirect_uris": ["https://app.example/cb"],
        "grant_types": ["authorization_code"],
        "scopes": ["workflows:read"],
        "now_ms": T0,
    }
    fields.update(kwargs)
    return store.create_oauth_client(conn, org, **fields)


def test_oauth_clients_authenticate_and_stay_in_their_org(db: Database) -> None:
    secret = new_token(TokenKind.CLIENT_SECRET)
    with db.write() as conn:
        confidential = add_client(conn, "org-a", secret.digest, grant_types=["client_credentials"])
        public = add_client(conn, "org-a", None, now_ms=T0 + 1)
        elsewhere = add_client(conn, "org-b", None)
        with pytest.raises(Conflict):
            add_client(conn, "org-b", None, client_id=confidential.id)
        session = store.create_session(
            conn,
            "org-a",
            "u",
            refresh_digest="rt",
            expires_at_ms=T0 + HOUR,
            now_ms=T0,
            client_id=confidential.id,
        )
    assert not confidential.is_public and public.is_public
    assert not any(f.name == "secret_digest" for f in dataclasses.fields(store.OAuthClient))

    with db.read() as conn:
        assert store.authenticate_oauth_client(conn, confidential.id, secret.digest) == confidential
        assert store.authenticate_oauth_client(conn, confidential.id, "0" * 64) is None
        assert store.authenticate_oauth_client(conn, confidential.id, None) is None
        assert store.authenticate_oauth_client(conn, public.id, None) == public
        assert store.authenticate_oauth_client(conn, public.id, secret.digest) is None
        assert store.authenticate_oauth_client(conn, "unknown", None) is None
        assert store.find_oauth_client(conn, public.id) == public
        assert store.get_oauth_client(conn, "org-b", public.id) is None
        assert [c.id for c in store.list_oauth_clients(conn, "org-a")] == [
            confidential.id,
            public.id,
        ]
        assert [c.id for c in store.list_oauth_clients(conn, "org-b")] == [elsewhere.id]

    with db.write() as conn:
        assert store.update_oauth_client(conn, "org-b", public.id, name="x", now_ms=T0) is None
        updated = store.update_oauth_client(
            conn, "org-a", public.id, scopes=["logs:read"], now_ms=T0 + 2
        )
        assert updated is not None
        assert updated.scopes == ("logs:read",) and updated.name == "app"
        assert updated.redirect_uris == ("https://app.example/cb",)
        assert not store.revoke_oauth_client(conn, "org-b", confidential.id, now_ms=T0 + 3)
        assert store.revoke_oauth_client(conn, "org-a", confidential.id, now_ms=T0 + 3)
        assert not store.revoke_oauth_client(conn, "org-a", confidential.id, now_ms=T0 + 4)

    with db.read() as conn:
        assert store.authenticate_oauth_client(conn, confidential.id, secret.digest) is None
        assert store.find_oauth_client(conn, confidential.id) is None
        assert store.get_oauth_client(conn, "org-a", confidential.id) is None
        kept = store.get_oauth_client(conn, "org-a", confidential.id, include_revoked=True)
        assert kept is not None and kept.revoked_at_ms == T0 + 3
        assert [c.id for c in store.list_oauth_clients(conn, "org-a")] == [public.id]
        # Revoking a client ends the sessions issued to it.
        ended = store.get_session(conn, "org-a", session.id)
        assert ended is not None and ended.revoked_at_ms == T0 + 3


def add_code(conn: Connection, digest: str, **kwargs: Any) -> store.OAuthCode:
    fields: dict[str, Any] = {
        "client_id": "client-1",
        "user_id": "user-1",
        "redirect_uri": "https://app.example/cb",
        "scopes": ["workflows:read"],
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "expires_at_ms": T0 + 60_000,
        "now_ms": T0,
    }
    fields.update(kwargs)
    return store.create_oauth_code(conn, "org-a", digest=digest, **fields)


def test_authorization_codes_are_single_use_and_expire(db: Database) -> None:
    with db.write() as conn:
        made = add_code(conn, "code-1")
        add_code(conn, "code-2", expires_at_ms=T0 + 5)
        with pytest.raises(Conflict):
            add_code(conn, "code-1")
    with db.write() as conn:
        first = store.consume_oauth_code(conn, "code-1", now_ms=T0 + 1)
        assert first.outcome == "redeemed" and first.code is not None
        assert first.code == dataclasses.replace(made, used_at_ms=T0 + 1)
        second = store.consume_oauth_code(conn, "code-1", now_ms=T0 + 2)
        assert second.outcome == "reused" and second.code is not None
        assert second.code.used_at_ms == T0 + 1
        expired = store.consume_oauth_code(conn, "code-2", now_ms=T0 + 5)
        assert expired.outcome == "expired"
        assert store.consume_oauth_code(conn, "nope", now_ms=T0).outcome == "unknown"


def test_concurrent_redemptions_of_one_code_have_exactly_one_winner(db: Database) -> None:
    rounds = 8
    with db.write() as conn:
        for r in range(rounds):
            add_code(conn, f"race-{r}")
    for r in range(rounds):

        def consume(_i: int, digest: str = f"race-{r}") -> str:
            return write(db, lambda c: store.consume_oauth_code(c, digest, now_ms=T0 + 1)).outcome

        assert sorted(race(3, consume)) == ["redeemed", "reused", "reused"]


def test_a_redemption_blocked_behind_an_uncommitted_one_finds_the_code_used(
    db: Database,
) -> None:
    with db.write() as conn:
        add_code(conn, "held")

    def first(conn: Connection) -> None:
        assert store.consume_oauth_code(conn, "held", now_ms=T0 + 1).outcome == "redeemed"

    def second() -> str:
        return write(db, lambda c: store.consume_oauth_code(c, "held", now_ms=T0 + 2)).outcome

    assert while_held(db, first, second) == "reused"


# ----------------------------------------------------------------- policies


ADMIN_RULES = [
    PolicyRule(
        effect="allow",
        actions=("create", "read"),
        resources=("servers:*",),
        condition="user.role == 'admin'",
    ),
    PolicyRule(effect="deny", actions=("*",), resources=("secrets/*",), subjects=("role:viewer",)),
]


def test_policies_crud_is_org_scoped_with_unique_names(db: Database) -> None:
    with db.write() as conn:
        pol = store.create_policy(
            conn, "org-a", name="admin_access_policy", version="1.0.0", rules=ADMIN_RULES, now_ms=T0
        )
        with pytest.raises(Conflict):
            store.create_policy(
                conn, "org-a", name="admin_access_policy", version="2", rules=[], now_ms=T0
            )
        theirs = store.create_policy(
            conn, "org-b", name="admin_access_policy", version="1", rules=[], now_ms=T0
        )
        spare = store.create_policy(
            conn, "org-a", name="spare", version="1", rules=[], enabled=False, now_ms=T0 + 1
        )
        with pytest.raises(TypeError):
            store.create_policy(
                conn, "org-a", name="bad", version="1", rules=[{"effect": "allow"}], now_ms=T0
            )  # type: ignore[list-item]

    with db.read() as conn:
        got = store.get_policy(conn, "org-a", pol.id)
        assert got == pol and got.rules == tuple(ADMIN_RULES)
        assert got.rules[0].subjects == ("*",)
        assert store.get_policy(conn, "org-b", pol.id) is None
        assert [p.id for p in store.list_policies(conn, "org-a")] == [pol.id, spare.id]
        assert [p.id for p in store.list_policies(conn, "org-a", enabled=True)] == [pol.id]
        assert [p.id for p in store.list_policies(conn, "org-b")] == [theirs.id]

    with db.write() as conn:
        assert store.update_policy(conn, "org-b", pol.id, name="x", now_ms=T0) is None
        with pytest.raises(Conflict):
            store.update_policy(conn, "org-a", spare.id, name="admin_access_policy", now_ms=T0)
        updated = store.update_policy(
            conn, "org-a", pol.id, rules=ADMIN_RULES[1:], enabled=False, now_ms=T0 + 9
        )
        assert updated is not None
        assert updated.rules == tuple(ADMIN_RULES[1:]) and not updated.enabled
        assert (updated.name, updated.version, updated.updated_at_ms) == (
            "admin_access_policy",
            "1.0.0",
            T0 + 9,
        )
        assert not store.delete_policy(conn, "org-b", pol.id)
        assert store.delete_policy(conn, "org-a", pol.id)
        assert not store.delete_policy(conn, "org-a", pol.id)
    with db.read() as conn:
        assert [p.id for p in store.list_policies(conn, "org-a")] == [spare.id]
        assert [p.id for p in store.list_policies(conn, "org-b")] == [theirs.id]


# ----------------------------------------------------------------- audit


def test_audit_filters_order_pagination_and_isolation(db: Database) -> None:
    events = [
        # (at, actor, action, resource, result)
        (T0 + 10, "user:alice", "auth.login", "users/alice", "success"),
        (T0 + 20, "user:bob", "auth.login", "users/bob", "failure"),
        (T0 + 20, "user:alice", "workflow.create", "workflows/etl", "success"),
        (T0 + 30, "user:alice", "user.delete", "users/bob", "denied"),
        (T0 + 40, "", "auth.login", "users/eve", "failure"),
    ]
    with db.write() as conn:
        ids = [
            store.append_audit(
                conn,
                "org-a",
                at_ms=at,
                actor=actor,
                actor_kind="user" if actor else "",
                action=action,
                resource=resource,
                result=result,  # type: ignore[arg-type]
                ip="10.0.0.1",
                detail={"n": i, "nested": {"ok": True}},
            )
            for i, (at, actor, action, resource, result) in enumerate(events)
        ]
        store.append_audit(
            conn, "org-b", at_ms=T0 + 25, actor="user:alice", action="auth.login", result="success"
        )
        with pytest.raises(InvalidArgument):
            store.append_audit(conn, "org-a", at_ms=T0, action="x", result="ok")  # type: ignore[arg-type]
    assert ids == sorted(ids)

    def listed(**filters: Any) -> tuple[list[int], int]:
        with db.read() as conn:
            page = store.list_audit(conn, "org-a", **filters)
        return [e.detail["n"] for e in page.items], page.total

    # Newest first; the two events at T0+20 in reverse insertion order.
    assert listed() == ([4, 3, 2, 1, 0], 5)
    assert listed(actor="user:alice") == ([3, 2, 0], 3)
    assert listed(action="auth.login") == ([4, 1, 0], 3)
    assert listed(result="failure") == ([4, 1], 2)
    assert listed(resource="users/bob") == ([3, 1], 2)
    assert listed(actor="user:alice", action="auth.login") == ([0], 1)
    # since is inclusive, until exclusive.
    assert listed(since_ms=T0 + 20, until_ms=T0 + 40) == ([3, 2, 1], 3)
    assert listed(since_ms=T0 + 41) == ([], 0)
    assert listed(limit=2) == ([4, 3], 5)
    assert listed(limit=2, offset=2) == ([2, 1], 5)
    assert listed(limit=2, offset=4) == ([0], 5)
    assert listed(action="auth.login", limit=1, offset=1) == ([1], 3)

    with db.read() as conn:
        page = store.list_audit(conn, "org-a", limit=1)
        event = page.items[0]
        assert (event.id, event.org_id, event.at_ms, event.actor, event.actor_kind) == (
            ids[4],
            "org-a",
            T0 + 40,
            "",
            "",
        )
        assert event.ip == "10.0.0.1" and event.detail == {"n": 4, "nested": {"ok": True}}
        other = store.list_audit(conn, "org-b")
        assert other.total == 1 and other.items[0].org_id == "org-b"
        assert store.list_audit(conn, "org-c").total == 0


def test_audit_cuts_overlong_fields_instead_of_failing(db: Database) -> None:
    with db.write() as conn:
        store.append_audit(
            conn,
            "org-a",
            at_ms=T0,
            action="a" * 500,
            resource="r" * 500,
            actor="u" * 500,
            ip="1" * 500,
            result="success",
        )
    with db.read() as conn:
        (event,) = store.list_audit(conn, "org-a").items
    assert (len(event.action), len(event.resource), len(event.actor), len(event.ip)) == (
        100,
        300,
        200,
        64,
    )
    assert event.detail == {}
