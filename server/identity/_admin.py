"""Organizations, policies and the audit log."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from trellis.server.core.audit import AuditEvent, audit_key, list_audit, list_audit_after
from trellis.server.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trellis.server.identity import passwords, policies, store
from trellis.server.identity._base import Base, well_formed_org
from trellis.server.identity._paging import FIRST_PAGE, Listing, PageRequest, listing_scope
from trellis.server.identity.principal import DEFAULT_ORG, PermissionDenied, Principal
from trellis.server.identity.scopes import Scope
from trellis.server.identity.store import OrgStatus, PolicyRule

# Policies are read on every checked call; keep them this long (seconds) per org.
_POLICY_CACHE_SECS: Final = 5.0


@dataclass(frozen=True, slots=True)
class FirstAdmin:
    """The administrator a new organization is created with."""

    username: str
    password: str
    email: str = ""


class Admin(Base):
    # ------------------------------------------------------------------ organizations
    # Organizations are deployment-wide, so only administrators of the system
    # organization (DEFAULT_ORG) manage them all. Anyone else sees, and with
    # admin:orgs renames, only their own: another org is as unknown as a
    # missing one.

    def _see_org(self, actor: Principal, org_id: str) -> None:
        if org_id != actor.org_id and actor.org_id != DEFAULT_ORG:
            raise NotFound(f"organization {org_id!r} not found")

    def create_org(
        self,
        actor: Principal,
        name: str,
        org_id: str | None = None,
        *,
        first_admin: FirstAdmin | None = None,
    ) -> store.Organization:
        """A new organization, with its first administrator when one is given:
        both are stored in one transaction, or neither."""
        self.require(actor, Scope.ADMIN_ORGS, "org.create")
        if actor.org_id != DEFAULT_ORG:
            raise PermissionDenied(
                "only administrators of the system organization create organizations",
                reason="forbidden",
            )
        if not name.strip():
            raise InvalidArgument("name must not be empty")
        if org_id is not None and not well_formed_org(org_id):
            raise InvalidArgument(
                "id: 1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit"
            )
        hashed = None
        if first_admin is not None:
            if not first_admin.username.strip():
                raise InvalidArgument("admin_username must not be empty")
            problem = passwords.check_strength(first_admin.password)
            if problem is not None:
                raise InvalidArgument(f"admin_password: {problem}")
            # Hashing is slow: outside the transaction.
            hashed = passwords.hash_password(first_admin.password)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            org = store.create_org(conn, name=name, now_ms=now, org_id=org_id)
            self.audit(conn, actor, "org.create", "success", now, resource=f"org:{org.id}")
            if first_admin is not None and hashed is not None:
                user = store.create_user(
                    conn,
                    org.id,
                    username=first_admin.username,
                    email=first_admin.email,
                    password_hash=hashed,
                    now_ms=now,
                    roles=("admin",),
                )
                self.audit(
                    conn,
                    actor,
                    "user.create",
                    "success",
                    now,
                    org_id=org.id,
                    resource=f"user:{user.id}",
                    detail={"username": user.username, "roles": ["admin"]},
                )
        return org

    def list_orgs(
        self,
        actor: Principal,
        *,
        status: OrgStatus | None = None,
        page: PageRequest = FIRST_PAGE,
    ) -> Listing[store.Organization]:
        """Organizations, oldest first: all of them for the system organization's
        administrators, one's own for anyone else."""
        self.require(actor, Scope.ADMIN_ORGS, "org.list")
        everyone = actor.org_id == DEFAULT_ORG
        scope = listing_scope("orgs", None if everyone else actor.org_id, status)
        with self.db.read() as conn:
            own = None if everyone else store.get_org(conn, actor.org_id)
            mine = [own] if own is not None and status in (None, own.status) else []
            if page.by_token:
                size = page.size()
                after = self.resume_after(page, scope)
                if everyone:
                    rows = store.list_orgs_after(conn, status=status, after=after, limit=size + 1)
                else:  # the one organization was on the first page
                    rows = mine if after is None else []
                return self.keyset_listing(scope, rows, size, _org_key)
            limit, offset = page.bounds()
            if everyone:
                found = store.list_orgs(conn, status=status, limit=limit, offset=offset)
                items, total = found.items, found.total
            else:
                items, total = tuple(mine[offset : offset + limit]), len(mine)
        more = bool(items) and offset + len(items) < total
        token = self.page_tokens().encode(scope, _org_key(items[-1])) if more else ""
        return Listing(items, total, limit, offset, token)

    def get_org(self, actor: Principal, org_id: str) -> store.Organization:
        self._see_org(actor, org_id)
        if org_id != actor.org_id:
            self.require(actor, Scope.ADMIN_ORGS, "org.get")
        with self.db.read() as conn:
            org = store.get_org(conn, org_id)
        if org is None:
            raise NotFound(f"organization {org_id!r} not found")
        return org

    def update_org(self, actor: Principal, org_id: str, *, name: str) -> store.Organization:
        self._see_org(actor, org_id)
        self.require(actor, Scope.ADMIN_ORGS, "org.update")
        if not name.strip():
            raise InvalidArgument("name must not be empty")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            org = store.update_org(conn, org_id, name=name, now_ms=now)
            if org is None:
                raise NotFound(f"organization {org_id!r} not found")
            self.audit(conn, actor, "org.update", "success", now, resource=f"org:{org_id}")
        return org

    def suspend_org(self, actor: Principal, org_id: str) -> store.Organization:
        # Suspending one's own org would lock the caller (and every admin) out.
        if org_id == actor.org_id:
            self.require(actor, Scope.ADMIN_ORGS, "org.suspend")
            raise FailedPrecondition("you cannot suspend your own organization")
        return self._set_org_status(actor, org_id, "suspended")

    def activate_org(self, actor: Principal, org_id: str) -> store.Organization:
        return self._set_org_status(actor, org_id, "active")

    def _set_org_status(
        self, actor: Principal, org_id: str, status: OrgStatus
    ) -> store.Organization:
        action = "org.suspend" if status == "suspended" else "org.activate"
        self._see_org(actor, org_id)
        self.require(actor, Scope.ADMIN_ORGS, action)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            org = store.set_org_status(conn, org_id, status, now_ms=now)
            if org is None:
                raise NotFound(f"organization {org_id!r} not found")
            self.audit(conn, actor, action, "success", now, resource=f"org:{org_id}")
        self.cache.evict(lambda p: p.org_id == org_id)
        return org

    # ------------------------------------------------------------------ policies

    def create_policy(
        self,
        actor: Principal,
        *,
        name: str,
        rules: Sequence[PolicyRule],
        version: str | None = None,
        enabled: bool = True,
    ) -> store.StoredPolicy:
        """A new policy (version "1.0.0" unless given); a rule without subjects
        applies to everyone."""
        self.require(actor, Scope.POLICIES_WRITE, "policy.create")
        rules = _checked_rules(name, rules)
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            policy = store.create_policy(
                conn,
                actor.org_id,
                name=name,
                version=version or "1.0.0",
                rules=rules,
                now_ms=now,
                enabled=enabled,
            )
            self.audit(
                conn,
                actor,
                "policy.create",
                "success",
                now,
                resource=f"policy:{policy.id}",
                detail={"name": name},
            )
        self._forget_policies(actor.org_id)
        return policy

    def list_policies(
        self, actor: Principal, *, enabled: bool | None = None, page: PageRequest = FIRST_PAGE
    ) -> Listing[store.StoredPolicy]:
        """The org's policies, oldest first; pages hold all of them (up to 1000)
        unless sized."""
        self.require(actor, Scope.POLICIES_WRITE, "policy.list")
        scope = listing_scope("policies", actor.org_id, enabled)
        size = page.size(default=store.MAX_LIMIT)
        after = self.resume_after(page, scope)
        with self.db.read() as conn:
            rows = store.list_policies(
                conn, actor.org_id, enabled=enabled, after=after, limit=size + 1
            )
        return self.keyset_listing(scope, rows, size, lambda p: (p.created_at_ms, p.id))

    def get_policy(self, actor: Principal, policy_id: str) -> store.StoredPolicy:
        self.require(actor, Scope.POLICIES_WRITE, "policy.get")
        with self.db.read() as conn:
            policy = store.get_policy(conn, actor.org_id, policy_id)
        if policy is None:
            raise NotFound(f"policy {policy_id!r} not found")
        return policy

    def update_policy(
        self,
        actor: Principal,
        policy_id: str,
        *,
        name: str | None = None,
        version: str | None = None,
        rules: Sequence[PolicyRule] | None = None,
        enabled: bool | None = None,
    ) -> store.StoredPolicy:
        """Changes the fields given (None = unchanged; ``rules`` replaces them all)."""
        self.require(actor, Scope.POLICIES_WRITE, "policy.update")
        if rules is not None or name is not None:
            # An empty list clears the rules; the name is checked all the same.
            checked = _checked_rules(name or "x", rules or [PolicyRule("allow", ("*",), ("*",))])
            if rules:
                rules = checked
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            policy = store.update_policy(
                conn,
                actor.org_id,
                policy_id,
                now_ms=now,
                name=name,
                version=version,
                rules=rules,
                enabled=enabled,
            )
            if policy is None:
                raise NotFound(f"policy {policy_id!r} not found")
            self.audit(conn, actor, "policy.update", "success", now, resource=f"policy:{policy_id}")
        self._forget_policies(actor.org_id)
        return policy

    def delete_policy(self, actor: Principal, policy_id: str) -> None:
        self.require(actor, Scope.POLICIES_WRITE, "policy.delete")
        with self.db.write() as conn:
            now = self.db.now_ms(conn)
            if not store.delete_policy(conn, actor.org_id, policy_id):
                raise NotFound(f"policy {policy_id!r} not found")
            self.audit(conn, actor, "policy.delete", "success", now, resource=f"policy:{policy_id}")
        self._forget_policies(actor.org_id)

    def check_policy(self, principal: Principal, resource: str, action: str) -> None:
        """PermissionDenied when an enabled Deny rule of the org applies (Deny wins)."""
        decision = policies.evaluate(
            self._org_policies(principal.org_id),
            subject_ids=_subject_ids(principal),
            action=action,
            resource=resource,
        )
        if not decision.allowed:
            raise PermissionDenied(decision.reason, reason="policy_denied")

    def _org_policies(self, org_id: str) -> tuple[policies.Policy, ...]:
        with self.policy_lock:
            hit = self.policy_cache.get(org_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self.db.read() as conn:
            stored = store.list_policies(conn, org_id, enabled=True)
        compiled = tuple(
            policies.Policy(
                id=p.id,
                name=p.name,
                effect="deny" if rule.effect.lower() == "deny" else "allow",
                actions=rule.actions,
                resources=rule.resources,
                subjects=rule.subjects,
            )
            for p in stored
            for rule in p.rules
        )
        with self.policy_lock:
            self.policy_cache[org_id] = (time.monotonic() + _POLICY_CACHE_SECS, compiled)
        return compiled

    def _forget_policies(self, org_id: str) -> None:
        with self.policy_lock:
            self.policy_cache.pop(org_id, None)

    # ------------------------------------------------------------------ audit

    def list_audit(
        self,
        actor: Principal,
        *,
        actor_filter: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        result: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        page: PageRequest = FIRST_PAGE,
    ) -> Listing[AuditEvent]:
        """The org's audit events, newest first (needs audit:read)."""
        self.require(actor, Scope.AUDIT_READ, "audit.list")
        scope = listing_scope(
            "audit", actor.org_id, actor_filter, action, resource, result, since_ms, until_ms
        )
        if page.by_token:
            size = page.size()
            with self.db.read() as conn:
                rows = list_audit_after(
                    conn,
                    actor.org_id,
                    actor=actor_filter,
                    action=action,
                    resource=resource,
                    result=result,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    after=self.resume_after(page, scope),
                    limit=size + 1,
                )
            return self.keyset_listing(scope, rows, size, audit_key)
        limit, offset = page.bounds()
        with self.db.read() as conn:
            found = list_audit(
                conn,
                actor.org_id,
                actor=actor_filter,
                action=action,
                resource=resource,
                result=result,
                since_ms=since_ms,
                until_ms=until_ms,
                limit=limit,
                offset=offset,
            )
        more = bool(found.items) and offset + len(found.items) < found.total
        token = self.page_tokens().encode(scope, audit_key(found.items[-1])) if more else ""
        return Listing(found.items, found.total, limit, offset, token)


def _checked_rules(name: str, rules: Sequence[PolicyRule]) -> list[PolicyRule]:
    """The rules as stored: checked, and without subjects meaning everyone."""
    for index, rule in enumerate(rules):
        if not rule.actions or not rule.resources or not all(rule.resources):
            raise InvalidArgument(f"rules[{index}]: resource and action are required")
    if not rules:
        raise InvalidArgument("a policy needs at least one rule")
    out = [replace(r, subjects=r.subjects or ("*",), condition=r.condition or None) for r in rules]
    for index, rule in enumerate(out):
        # Seed 002 spells effects "Allow"/"Deny"; they are stored as given.
        problem = policies.validate_policy_fields(
            name=name,
            effect=rule.effect.lower(),
            actions=rule.actions,
            resources=rule.resources,
            subjects=rule.subjects,
        )
        if problem is not None:
            raise InvalidArgument(f"rules[{index}]: {problem}")
    return out


def _org_key(org: store.Organization) -> tuple[int, str]:
    return org.created_at_ms, org.id


def _subject_ids(principal: Principal) -> list[str]:
    """What a policy's subjects can name: the stable subject, the readable name in the
    same namespace (``user:alice``), and each role (``role:operator``)."""
    kind = principal.subject.partition(":")[0]
    ids = [principal.subject]
    if principal.name:
        ids.append(f"{kind}:{principal.name}")
    ids.extend(f"role:{role}" for role in principal.roles)
    return ids
