"""Stored access policies of an organization."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select, update

from trellis.server.core.pagination import KeyValue
from trellis.server.identity.store._common import (
    _check_lengths,
    _first,
    _guarded_rows,
    _insert,
    _keyset_rows,
    _new_id,
    _rowcount,
    policies,
)


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule of a policy, the shape of ``auth.policies.Policy`` without the names.

    ``effect`` is stored as given ('allow'/'deny'; the S2 surface spells them
    'Allow'/'Deny'). ``condition`` is kept verbatim; nothing evaluates it yet.
    S2 rules name no subjects, hence the default: everyone.
    """

    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    subjects: tuple[str, ...] = ("*",)
    condition: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "actions": list(self.actions),
            "resources": list(self.resources),
            "subjects": list(self.subjects),
            "condition": self.condition,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyRule:
        return cls(
            effect=str(data["effect"]),
            actions=tuple(data["actions"]),
            resources=tuple(data["resources"]),
            subjects=tuple(data.get("subjects", ("*",))),
            condition=data.get("condition"),
        )


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    id: str
    org_id: str
    name: str
    version: str
    rules: tuple[PolicyRule, ...]
    enabled: bool
    created_at_ms: int
    updated_at_ms: int


def _policy(r: Mapping[Any, Any]) -> StoredPolicy:
    return StoredPolicy(
        id=r["id"],
        org_id=r["org_id"],
        name=r["name"],
        version=r["version"],
        rules=tuple(PolicyRule.from_json(rule) for rule in r["rules"]),
        enabled=bool(r["enabled"]),
        created_at_ms=r["created_at_ms"],
        updated_at_ms=r["updated_at_ms"],
    )


def _rules_json(rules: Iterable[PolicyRule]) -> list[dict[str, Any]]:
    out = []
    for rule in rules:
        if not isinstance(rule, PolicyRule):
            raise TypeError(f"rules must be PolicyRule objects, got {type(rule).__name__}")
        out.append(rule.to_json())
    return out


def create_policy(
    conn: Connection,
    org_id: str,
    *,
    name: str,
    version: str,
    rules: Iterable[PolicyRule],
    now_ms: int,
    enabled: bool = True,
) -> StoredPolicy:
    """A new policy; Conflict if the org already has one of this name."""
    values: dict[str, Any] = {
        "id": _new_id(),
        "org_id": org_id,
        "name": name,
        "version": version,
        "rules": _rules_json(rules),
        "enabled": enabled,
        "created_at_ms": now_ms,
        "updated_at_ms": now_ms,
    }
    _insert(conn, policies, values, f"a policy named {name!r} exists")
    return _policy(values)


def get_policy(conn: Connection, org_id: str, policy_id: str) -> StoredPolicy | None:
    row = _first(
        conn, select(policies).where(policies.c.org_id == org_id, policies.c.id == policy_id)
    )
    return None if row is None else _policy(row)


def list_policies(
    conn: Connection,
    org_id: str,
    *,
    enabled: bool | None = None,
    after: Sequence[KeyValue] | None = None,
    limit: int | None = None,
) -> list[StoredPolicy]:
    """The org's policies, oldest first (also the evaluation order that names the
    deciding policy, see ``policies.evaluate``): ``(created_at_ms, id)``, the
    sort key ``after`` resumes from."""
    conditions = [policies.c.org_id == org_id]
    if enabled is not None:
        conditions.append(policies.c.enabled == enabled)
    order = ((policies.c.created_at_ms, False), (policies.c.id, False))
    return _keyset_rows(conn, policies, conditions, order, _policy, after=after, limit=limit)


def update_policy(
    conn: Connection,
    org_id: str,
    policy_id: str,
    *,
    now_ms: int,
    name: str | None = None,
    version: str | None = None,
    rules: Iterable[PolicyRule] | None = None,
    enabled: bool | None = None,
) -> StoredPolicy | None:
    """Changes the fields given (None = unchanged; ``rules`` replaces the list)."""
    values: dict[str, Any] = {"updated_at_ms": now_ms}
    if name is not None:
        values["name"] = name
    if version is not None:
        values["version"] = version
    if rules is not None:
        values["rules"] = _rules_json(rules)
    if enabled is not None:
        values["enabled"] = enabled
    _check_lengths(policies, values)
    stmt = (
        update(policies)
        .where(policies.c.org_id == org_id, policies.c.id == policy_id)
        .values(values)
        .returning(*policies.c)
    )
    rows = _guarded_rows(conn, stmt, f"a policy named {name!r} exists")
    return _policy(rows[0]) if rows else None


def delete_policy(conn: Connection, org_id: str, policy_id: str) -> bool:
    stmt = delete(policies).where(policies.c.org_id == org_id, policies.c.id == policy_id)
    return _rowcount(conn.execute(stmt)) == 1
