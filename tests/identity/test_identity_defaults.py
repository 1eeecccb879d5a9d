"""The defaults the identity service applies when a caller leaves a choice open,
on real SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from test_auth_identity import admin_of, ident

from trellis.server.core.errors import InvalidArgument
from trellis.server.identity import (
    DEFAULT_PAT_DAYS,
    DEFAULT_ROLES,
    MAX_PAT_DAYS,
    Identity,
    PageRequest,
    PolicyRule,
)
from trellis.server.identity.principal import PermissionDenied
from trellis.server.identity.scopes import ROLE_SCOPES

__all__ = ["ident"]  # a fixture, re-exported for pytest

DAY_MS = 86_400_000


def test_a_pat_lasts_thirty_days_with_the_callers_scopes_unless_told(ident: Identity) -> None:
    admin = admin_of(ident)
    created = ident.create_pat(admin, name="ci").pat
    assert set(created.scopes) == admin.scopes
    assert created.expires_at_ms is not None
    assert created.expires_at_ms - created.created_at_ms == DEFAULT_PAT_DAYS * DAY_MS
    longest = ident.create_pat(admin, name="long", expires_in_days=MAX_PAT_DAYS).pat
    assert longest.expires_at_ms == longest.created_at_ms + MAX_PAT_DAYS * DAY_MS
    for days in (0, MAX_PAT_DAYS + 1):
        with pytest.raises(InvalidArgument, match="expires_in_days: between 1 and 366"):
            ident.create_pat(admin, name="x", expires_in_days=days)


def test_an_oauth_client_gets_its_grant_and_the_operators_scopes_unless_told(
    ident: Identity,
) -> None:
    admin = admin_of(ident)
    confidential = ident.create_client(admin, name="etl").client
    assert confidential.grant_types == ("client_credentials",)
    assert set(confidential.scopes) == ROLE_SCOPES["operator"] & admin.scopes
    public = ident.create_client(
        admin, name="spa", confidential=False, redirect_uris=["https://app.example.com/cb"]
    ).client
    assert public.grant_types == ("authorization_code",)


def test_a_policy_is_version_one_and_its_rules_apply_to_everyone_unless_told(
    ident: Identity,
) -> None:
    admin = admin_of(ident)
    policy = ident.create_policy(
        admin, name="p", rules=[PolicyRule("Deny", ("run",), ("workflows:x",), subjects=())]
    )
    assert policy.version == "1.0.0" and policy.rules[0].subjects == ("*",)
    with pytest.raises(InvalidArgument, match=r"rules\[0\]: resource and action are required"):
        ident.create_policy(admin, name="q", rules=[PolicyRule("Deny", (), ("workflows:x",))])


def test_only_machine_users_check_themselves_and_only_users_authorize(ident: Identity) -> None:
    admin = admin_of(ident)
    with pytest.raises(PermissionDenied, match="this endpoint is for machine users"):
        ident.check_machine_user(admin)
    machine = ident.create_machine_user(admin, username="pay")
    principal = ident.authenticate(f"Bearer {machine.token}", None)
    checked = ident.check_machine_user(principal)
    assert checked.valid and checked.machine_user_id == machine.machine_user.id
    with pytest.raises(PermissionDenied, match="only a signed-in user"):
        ident.authorize(principal, "client", None, None, None, None, None)


def test_a_user_is_a_viewer_unless_told_and_user_pages_are_clamped(ident: Identity) -> None:
    admin = admin_of(ident)
    made = ident.create_user(admin, username="quiet", email="", password="Correct-horse-battery-9")
    assert made.roles == DEFAULT_ROLES == ("viewer",)
    assert ident.list_users(admin).limit == 50
    widest = ident.list_users(admin, page=PageRequest(limit=5000))
    assert (widest.limit, widest.total) == (1000, 2)
    narrowest = ident.list_users(admin, page=PageRequest(limit=0, offset=1))
    assert (narrowest.limit, [u.username for u in narrowest.items]) == (1, ["quiet"])
