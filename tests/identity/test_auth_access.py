"""Scopes, roles, Allow/Deny policies and the rate limiter (pure library, no server)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import pytest

from trellis.server.identity.policies import (
    Decision,
    Policy,
    evaluate,
    glob_match,
    validate_policy_fields,
)
from trellis.server.identity.ratelimit import (
    DEFAULT_LIMITS,
    Limit,
    RateLimiter,
    Verdict,
    grpc_metadata,
    headers,
    parse_limit,
)
from trellis.server.identity.scopes import (
    ALL_SCOPES,
    ROLE_SCOPES,
    Scope,
    narrow,
    parse_scope_string,
    satisfies,
    scope_catalogue,
    scopes_for_roles,
)
from trellis.v1 import (
    logs_pb2,
    options_pb2,
    runs_pb2,
    workers_pb2,
    workflows_pb2,
)

T0 = 1_700_000_000.0  # an epoch second, so reset_at values are realistic

# --------------------------------------------------------------------------- scopes


def _declared_scopes() -> dict[str, str]:
    """Every RPC's ``(trellis.v1.required_scope)``, read from the compiled descriptors."""
    declared: dict[str, str] = {}
    for module in (logs_pb2, runs_pb2, workers_pb2, workflows_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                scope = method.GetOptions().Extensions[options_pb2.required_scope]
                declared[method.full_name] = scope
    return declared


def test_every_rpc_declares_a_catalogued_scope() -> None:
    declared = _declared_scopes()
    assert len(declared) >= 20  # the five services, not an empty walk
    assert {m for m, s in declared.items() if not s} == set()
    assert set(declared.values()) <= ALL_SCOPES


def test_catalogue_names_the_brief_scopes_with_descriptions() -> None:
    expected = {
        "workflows:read",
        "workflows:write",
        "workflows:run",
        "jobs:work",
        "logs:read",
        "workers:read",
        "admin:users",
        "admin:tokens",
        "admin:orgs",
        "audit:read",
        "policies:write",
    }
    assert expected <= ALL_SCOPES
    catalogue = dict(scope_catalogue())
    assert set(catalogue) == ALL_SCOPES
    for name, description in catalogue.items():
        assert description.strip(), name
        assert "\n" not in description, name
    assert Scope("logs:read").description == catalogue["logs:read"]


def test_role_scopes() -> None:
    assert scopes_for_roles(["admin"]) == ALL_SCOPES
    assert scopes_for_roles(["operator"]) == {
        "workflows:read",
        "workflows:write",
        "workflows:run",
        "jobs:work",
        "logs:read",
        "workers:read",
    }
    assert scopes_for_roles(["viewer"]) == {"workflows:read", "logs:read", "workers:read"}
    assert all(scope.endswith(":read") for scope in ROLE_SCOPES["viewer"])
    assert ROLE_SCOPES["viewer"] < ROLE_SCOPES["operator"] < ROLE_SCOPES["admin"]


def test_roles_combine_and_a_bare_string_is_one_role() -> None:
    assert scopes_for_roles(["viewer", "operator"]) == ROLE_SCOPES["operator"]
    assert scopes_for_roles([]) == frozenset()
    assert scopes_for_roles("viewer") == ROLE_SCOPES["viewer"]


def test_unknown_role_is_named() -> None:
    with pytest.raises(ValueError, match="unknown role 'superuser'"):
        scopes_for_roles(["viewer", "superuser"])
    with pytest.raises(ValueError, match="unknown role 'Admin'"):
        scopes_for_roles(["Admin"])  # role names are case-sensitive


def test_parse_scope_string() -> None:
    assert parse_scope_string("workflows:read logs:read") == ("workflows:read", "logs:read")
    assert parse_scope_string("  jobs:work   jobs:work logs:read ") == ("jobs:work", "logs:read")
    assert parse_scope_string("") == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workflows:read workflows:delete", "unknown scope 'workflows:delete'"),
        ("Workflows:read", "unknown scope 'Workflows:read'"),
        ('logs:read "quoted"', "malformed scope '\"quoted\"'"),
        ("logs:read\tworkers:read", r"malformed scope 'logs:read\\tworkers:read'"),
        ("logs:read caf\u00e9", "malformed scope 'caf\u00e9'"),
    ],
)
def test_parse_scope_string_names_the_offender(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scope_string(text)


def test_parse_scope_string_truncates_a_huge_offender() -> None:
    with pytest.raises(ValueError) as raised:
        parse_scope_string("x" * 10_000)
    assert len(str(raised.value)) < 100


def test_narrow_never_widens() -> None:
    allowed = ROLE_SCOPES["viewer"]
    assert narrow([], allowed) == allowed
    assert narrow(["logs:read"], allowed) == {"logs:read"}
    assert narrow(["logs:read", "admin:users", "jobs:work"], allowed) == {"logs:read"}
    assert narrow(["admin:users"], allowed) == frozenset()
    for requested in (["admin:tokens"], list(ALL_SCOPES), ["workers:read", "x"]):
        assert narrow(requested, allowed) <= allowed


def test_narrow_refuses_bare_strings() -> None:
    with pytest.raises(TypeError):
        narrow("logs:read", ["logs:read"])
    with pytest.raises(TypeError):
        narrow(["logs:read"], "logs:read")


def test_satisfies() -> None:
    granted = ROLE_SCOPES["operator"]
    assert satisfies(granted, "workflows:run")
    assert not satisfies(granted, "admin:users")
    assert satisfies(granted, ["workflows:read", "jobs:work"])
    assert not satisfies(granted, ["workflows:read", "audit:read"])
    assert not satisfies([], "workflows:read")
    with pytest.raises(ValueError):
        satisfies(granted, "")
    with pytest.raises(ValueError):
        satisfies(granted, [])
    with pytest.raises(TypeError):
        satisfies("workflows:read", "workflows:read")


# --------------------------------------------------------------------------- policies

ALICE = ("user:alice", "role:operator")
BOB = ("user:bob", "role:viewer")


def _policy(
    pid: str,
    effect: str = "allow",
    *,
    actions: Sequence[str] = ("*",),
    resources: Sequence[str] = ("*",),
    subjects: Sequence[str] = ("*",),
    enabled: bool = True,
) -> Policy:
    return Policy(
        id=pid,
        name=f"policy {pid}",
        effect=effect,  # type: ignore[arg-type]  # tests also feed invalid effects
        actions=tuple(actions),
        resources=tuple(resources),
        subjects=tuple(subjects),
        enabled=enabled,
    )


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("*", "", True),
        ("*", "workflows/etl-daily", True),
        ("workflows/etl-*", "workflows/etl-daily", True),
        ("workflows/etl-*", "workflows/etl-", True),
        ("workflows/etl-*", "workflows/etl-daily/runs/7", True),
        ("workflows/etl-*", "workflows/ml-train", False),
        ("workflows/etl-*", "xworkflows/etl-daily", False),  # anchored at the start
        ("workflows/etl", "workflows/etl-daily", False),  # anchored at the end
        ("workflows/ETL-*", "workflows/etl-daily", False),  # case-sensitive
        ("workflows:*", "workflows:run", True),
        ("workflows:*", "jobs:work", False),
        ("*:read", "logs:read", True),
        ("*:read", "logs:reader", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYbZc", True),
        ("a*b*c", "acb", False),
        ("ab*ba", "aba", False),  # head and tail may not overlap
        ("w?rkflows", "workflows", False),  # `?` is no wildcard
        ("w.rkflows", "workflows", False),  # nor is `.`
        ("a*a*a*a*a*a*a*a*b", "a" * 5000, False),  # no backtracking blow-up
    ],
)
def test_glob_match(pattern: str, value: str, matches: bool) -> None:
    assert glob_match(pattern, value) is matches


def test_no_policies_means_allowed_by_scope() -> None:
    decision = evaluate([], subject_ids=ALICE, action="workflows:run", resource="workflows/a")
    assert decision == Decision(True, None, decision.reason)
    assert "no policy" in decision.reason


def test_matching_allow_is_named() -> None:
    policies = [_policy("p1", actions=("workflows:*",), resources=("workflows/etl-*",))]
    decision = evaluate(
        policies, subject_ids=ALICE, action="workflows:run", resource="workflows/etl-1"
    )
    assert (decision.allowed, decision.policy_id) == (True, "p1")
    assert "policy p1" in decision.reason


def test_deny_wins_over_allow_in_any_order() -> None:
    allow = _policy("allow-all")
    deny = _policy(
        "no-etl-runs", "deny", actions=("workflows:run",), resources=("workflows/etl-*",)
    )
    for order in ([allow, deny], [deny, allow]):
        decision = evaluate(
            order, subject_ids=ALICE, action="workflows:run", resource="workflows/etl-1"
        )
        assert (decision.allowed, decision.policy_id) == (False, "no-etl-runs")
        assert "denied" in decision.reason


@pytest.mark.parametrize(
    ("action", "resource", "subjects"),
    [
        ("workflows:read", "workflows/etl-1", ALICE),  # another action
        ("workflows:run", "workflows/ml-1", ALICE),  # another resource
        ("workflows:run", "workflows/etl-1", BOB),  # another subject
    ],
)
def test_deny_needs_subject_action_and_resource_to_match(
    action: str, resource: str, subjects: Sequence[str]
) -> None:
    deny = _policy(
        "d",
        "deny",
        actions=("workflows:run",),
        resources=("workflows/etl-*",),
        subjects=("user:alice",),
    )
    decision = evaluate([deny], subject_ids=subjects, action=action, resource=resource)
    assert decision.allowed
    assert decision.policy_id is None
    # and the same request with everything matching is refused
    refused = evaluate(
        [deny], subject_ids=ALICE, action="workflows:run", resource="workflows/etl-1"
    )
    assert not refused.allowed


def test_disabled_policy_is_ignored() -> None:
    deny = _policy("d", "deny", enabled=False)
    allow = _policy("a", enabled=False)
    decision = evaluate([deny, allow], subject_ids=ALICE, action="logs:read", resource="x")
    assert (decision.allowed, decision.policy_id) == (True, None)


def test_subject_patterns_for_users_and_roles() -> None:
    by_role = _policy("viewers-no-logs", "deny", actions=("logs:*",), subjects=("role:viewer",))
    by_user = _policy("alice-no-admin", "deny", actions=("admin:*",), subjects=("user:alice",))
    any_user = _policy("users-audit", "deny", actions=("audit:read",), subjects=("user:*",))
    policies = [by_role, by_user, any_user]

    def decide(subjects: Sequence[str], action: str) -> tuple[bool, str | None]:
        decision = evaluate(policies, subject_ids=subjects, action=action, resource="r")
        return decision.allowed, decision.policy_id

    assert decide(BOB, "logs:read") == (False, "viewers-no-logs")
    assert decide(ALICE, "logs:read") == (True, None)
    assert decide(ALICE, "admin:users") == (False, "alice-no-admin")
    assert decide(BOB, "admin:users") == (True, None)
    assert decide(BOB, "audit:read") == (False, "users-audit")
    assert decide(("token:ci", "role:operator"), "audit:read") == (True, None)


def test_subject_ids_must_be_a_non_empty_sequence() -> None:
    deny = _policy("d", "deny", subjects=("user:alice",))
    with pytest.raises(TypeError):
        # a bare string would be split into letters and slip past the Deny
        evaluate([deny], subject_ids="user:alice", action="a", resource="r")
    with pytest.raises(ValueError):
        evaluate([deny], subject_ids=[], action="a", resource="r")


def _fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "name": "block etl",
        "effect": "deny",
        "actions": ("workflows:run",),
        "resources": ("workflows/etl-*",),
        "subjects": ("role:viewer", "user:bob_smith-2.x"),
    }
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "  "}, "name must not be empty"),
        ({"effect": "permit"}, "effect must be 'allow' or 'deny', got 'permit'"),
        ({"effect": "Deny"}, "effect must be 'allow' or 'deny', got 'Deny'"),
        ({"actions": ()}, "actions must list at least one pattern"),
        ({"resources": ("workflows/*", "")}, "resources[1] is empty"),
        (
            {"subjects": ("user:bob smith",)},
            "subjects[0] 'user:bob smith' contains ' '; allowed characters are "
            "A-Z a-z 0-9 _ . : / * -",
        ),
        ({"actions": ("workflows:[rw]",)}, "actions[0] 'workflows:[rw]' contains '['"),
        ({"resources": ("workflows/?",)}, "resources[0] 'workflows/?' contains '?'"),
        ({"actions": "workflows:*"}, "actions must be a list of patterns, not a string"),
        ({"resources": ("w" * 257,)}, "resources[0] is longer than 256 characters"),
    ],
)
def test_validation_messages(changes: dict[str, object], message: str) -> None:
    error = validate_policy_fields(**_fields(**changes))  # type: ignore[arg-type]
    assert error is not None
    assert error.startswith(message)


def test_valid_fields_and_construction() -> None:
    assert validate_policy_fields(**_fields()) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="effect must be"):
        _policy("p", "block")
    with pytest.raises(ValueError, match="policy id"):
        _policy("")
    # lists decoded from JSON become tuples, keeping the policy hashable and immutable
    policy = Policy("p", "n", "allow", ["a"], ["r"], ["*"])  # type: ignore[arg-type]
    assert policy.actions == ("a",)
    assert hash(policy)


# --------------------------------------------------------------------------- rate limits


def _limiter(requests: int = 5, window: float = 60.0, max_keys: int = 50_000) -> RateLimiter:
    return RateLimiter({"t": Limit(requests, window)}, max_keys_per_bucket=max_keys)


def test_defaults() -> None:
    limiter = RateLimiter()
    assert limiter.limit("auth") == Limit(5, 60.0)
    assert limiter.limit("general") == Limit(100, 60.0)
    assert limiter.limit("batch") == Limit(10, 60.0)
    assert limiter.limit("worker").requests >= 100 * limiter.limit("general").requests
    assert limiter.limit("public").requests >= 100 * limiter.limit("auth").requests
    assert set(DEFAULT_LIMITS) == {"auth", "public", "general", "batch", "worker"}


def test_overrides_replace_and_add_buckets() -> None:
    limiter = RateLimiter({"auth": Limit(3, 10.0), "export": Limit(2, 1.0)})
    assert limiter.limit("auth") == Limit(3, 10.0)
    assert limiter.limit("export") == Limit(2, 1.0)
    assert limiter.limit("general") == DEFAULT_LIMITS["general"]
    with pytest.raises(ValueError, match="unknown rate-limit bucket 'nope'"):
        limiter.check("nope", "k", now=T0)


def test_exactly_n_then_refused() -> None:
    limiter = _limiter(5, 60.0)
    verdicts = [limiter.check("t", "k", now=T0) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    refused = verdicts[-1]
    assert refused == Verdict(False, 5, 0, int(T0) + 60, 12)  # one unit drains in 60/5 s
    assert all(v.retry_after_secs == 0 for v in verdicts[:5])
    assert not limiter.check("t", "k", now=T0 + 11.5).allowed  # refusals cost nothing...
    assert limiter.check("t", "k", now=T0 + 12).allowed  # ...so Retry-After is honest


def test_recovers_after_the_window() -> None:
    limiter = _limiter(5, 60.0)
    for key in ("early", "on-time"):
        for _ in range(5):
            limiter.check("t", key, now=T0)
    early = [limiter.check("t", "early", now=T0 + 59).allowed for _ in range(5)]
    assert early == [True] * 4 + [False]  # 59 s in, the whole budget is not back yet
    after = [limiter.check("t", "on-time", now=T0 + 60) for _ in range(6)]
    assert [v.allowed for v in after] == [True] * 5 + [False]
    assert after[0].remaining == 4


def test_partial_refill_is_proportional() -> None:
    limiter = _limiter(5, 60.0)
    for _ in range(5):
        limiter.check("t", "k", now=T0)
    assert [limiter.check("t", "k", now=T0 + 24).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]


def test_float_limits_admit_exactly_n() -> None:
    limiter = _limiter(7, 60.0)  # 60 / 7 is not exact in binary
    assert sum(limiter.check("t", "k", now=T0).allowed for _ in range(10)) == 7


def test_keys_are_independent() -> None:
    limiter = _limiter(2, 60.0)
    assert [limiter.check("t", "a", now=T0).allowed for _ in range(3)] == [True, True, False]
    assert [limiter.check("t", "b", now=T0).allowed for _ in range(3)] == [True, True, False]


def test_buckets_are_independent() -> None:
    limiter = RateLimiter({"auth": Limit(1, 60.0), "general": Limit(1, 60.0)})
    assert limiter.check("auth", "10.0.0.1", now=T0).allowed
    assert not limiter.check("auth", "10.0.0.1", now=T0).allowed
    assert limiter.check("general", "10.0.0.1", now=T0).allowed


def _hammer(limiter: RateLimiter, key: str, threads: int, attempts: int) -> int:
    """Check ``key`` from ``threads`` threads at once; return how many were admitted."""
    start = threading.Barrier(threads)
    admitted = [0] * threads

    def run(slot: int) -> None:
        start.wait()
        for _ in range(attempts):
            if limiter.check("t", key, now=T0).allowed:
                admitted[slot] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(admitted)


def test_concurrent_checks_never_exceed_the_limit() -> None:
    limiter = _limiter(2000, 60.0)
    # Switch threads as often as the interpreter allows, and repeat, so that a missing lock
    # around a meter's read-modify-write shows up as extra admissions, not passes by luck.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        admitted = [_hammer(limiter, f"hot-{round_}", 8, 1000) for round_ in range(5)]
    finally:
        sys.setswitchinterval(interval)
    assert admitted == [2000] * 5  # 8000 attempts a round, exactly the limit admitted


def test_headers() -> None:
    limiter = _limiter(2, 10.0)
    first = limiter.check("t", "k", now=T0)
    assert headers(first) == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "1",
        "X-RateLimit-Reset": str(int(T0) + 5),
    }
    limiter.check("t", "k", now=T0)
    refused = limiter.check("t", "k", now=T0 + 0.5)
    assert headers(refused) == {
        "X-RateLimit-Limit": "2",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(T0) + 10),
        "Retry-After": "5",  # 4.5 s rounded up
    }
    assert dict(grpc_metadata(refused))["retry-after"] == "5"


def test_retry_after_is_at_least_one_second() -> None:
    limiter = _limiter(1000, 1.0)  # one unit drains in a millisecond
    for _ in range(1000):
        limiter.check("t", "k", now=T0)
    refused = limiter.check("t", "k", now=T0)
    assert not refused.allowed
    assert refused.retry_after_secs == 1


def test_key_cap_evicts_least_recently_used() -> None:
    limiter = _limiter(1, 60.0, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.check("t", key, now=T0)
    assert not limiter.check("t", "a", now=T0).allowed  # touch a: b is now the oldest
    limiter.check("t", "d", now=T0)
    assert limiter.tracked_keys("t") == 3
    assert limiter.check("t", "b", now=T0).allowed  # b was forgotten (and evicts c)
    assert not limiter.check("t", "a", now=T0).allowed  # a was kept
    assert limiter.tracked_keys("t") == 3


def test_idle_keys_are_swept() -> None:
    limiter = _limiter(5, 1.0)
    for i in range(2000):
        limiter.check("t", f"ip-{i}", now=T0)
    assert limiter.tracked_keys("t") == 2000
    # Once every key has drained, enough checks trigger a sweep of all of them.
    for _ in range(2000):
        limiter.check("t", "busy", now=T0 + 120)
    assert limiter.tracked_keys("t") == 1  # only the key still in use


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("100/60", Limit(100, 60.0)),
        ("10/30s", Limit(10, 30.0)),
        ("5/min", Limit(5, 60.0)),
        (" 7 / 2m ", Limit(7, 120.0)),
        ("1000/h", Limit(1000, 3600.0)),
        ("3/0.5", Limit(3, 0.5)),
    ],
)
def test_parse_limit(text: str, limit: Limit) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["", "100", "100/", "x/60", "0/60", "5/0", "5/60d", "-1/60"])
def test_parse_limit_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_limit(text)


def test_limit_validation() -> None:
    with pytest.raises(ValueError):
        Limit(0, 60.0)
    with pytest.raises(ValueError):
        Limit(5, 0.0)
    with pytest.raises(ValueError):
        Limit(5, float("inf"))
    with pytest.raises(ValueError):
        RateLimiter(max_keys_per_bucket=0)
