"""Rate-limit buckets as the contract declares them, and limits that hold
across replicas, against real servers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, NO_LIMITS, Running, wait_until
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2
from rest_helpers import Rest
from sqlalchemy import select, text
from test_auth_api import code_of, reason_of, refused

# Refusing a contract whose methods lack buckets needs synthetic protos that no
# running server can be given, so the table is built by the interceptor's own reader.
from trellis.server.api import _engine
from trellis.server.api._auth import method_access
from trellis.server.core.db import Database, connect
from trellis.server.core.errors import Unavailable
from trellis.server.core.models import RateLimitBucketRow
from trellis.server.identity import ratelimit
from trellis.server.identity.ratelimit import Limit
from trellis.server.identity.shared_limits import BLOCK_FRACTION, SharedRateLimiter, block_size
from trellis.v1 import auth_pb2, auth_pb2_grpc, oauth_pb2, oauth_pb2_grpc, options_pb2

# Sign-in and token exchange: the only calls that spend the 5/min budget.
AUTH_METHODS = {
    "/trellis.v1.AuthService/Login",
    "/trellis.v1.AuthService/Refresh",
    "/trellis.v1.OAuthService/Token",
}
PUBLIC_METHODS = {
    "/trellis.v1.OAuthService/GetServerMetadata",
    "/trellis.v1.OAuthService/GetJwks",
    "/trellis.v1.OAuthService/Revoke",
    "/trellis.v1.IdentityService/ListScopes",
    "/trellis.v1.MachineUserService/ValidateMachineUser",
}
DISCOVERY = (
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
)
# Long enough that nothing drains while a test runs.
HOUR = 3600.0


def _rate_limit(method: Any) -> int:
    opts: Any = method.GetOptions()
    return int(opts.Extensions[options_pb2.rate_limit])


def test_every_rpc_declares_its_bucket_in_proto() -> None:
    for file in _engine.PROTO_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                assert _rate_limit(method), f"{method.full_name} declares no rate_limit"
    access = method_access(_engine.PROTO_FILES)
    assert {path for path, a in access.items() if a.bucket == ratelimit.AUTH} == AUTH_METHODS
    assert {path for path, a in access.items() if a.bucket == ratelimit.PUBLIC} == PUBLIC_METHODS
    # Every public method counts per client address.
    assert {path for path, a in access.items() if a.public} == AUTH_METHODS | PUBLIC_METHODS
    assert access["/trellis.v1.WorkerService/Heartbeat"].bucket == ratelimit.WORKER
    assert access["/trellis.v1.LogService/PushLogs"].bucket == ratelimit.WORKER
    assert access["/trellis.v1.OAuthService/Authorize"].bucket == ratelimit.GENERAL
    assert access["/trellis.v1.WorkflowService/RunWorkflow"].bucket == ratelimit.GENERAL


def test_every_bucket_of_the_contract_has_a_limit() -> None:
    declared = {
        name.removeprefix("RATE_LIMIT_BUCKET_").lower()
        for name, number in options_pb2.RateLimitBucket.items()
        if number != options_pb2.RATE_LIMIT_BUCKET_UNSPECIFIED
    }
    assert declared == set(ratelimit.DEFAULT_LIMITS)


def _service_file(name: str, *, public: bool, bucket: int | None) -> Any:
    """A file of one service with one method, added to the default pool."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"limits_test/{name}.proto",
        package=f"limits_test.{name}",
        syntax="proto3",
        dependency=[empty_pb2.DESCRIPTOR.name, options_pb2.DESCRIPTOR.name],
    )
    method = proto.service.add(name="Probe").method.add(
        name="Call", input_type=".google.protobuf.Empty", output_type=".google.protobuf.Empty"
    )
    options: Any = method.options
    if public:
        options.Extensions[options_pb2.public] = True
    else:
        options.Extensions[options_pb2.required_scope] = "workflows:read"
    if bucket is not None:
        options.Extensions[options_pb2.rate_limit] = bucket
    pool = descriptor_pool.Default()
    pool.Add(proto)
    return pool.FindFileByName(proto.name)


def test_a_method_without_a_bucket_stops_the_server_from_starting() -> None:
    unlabelled = _service_file("unlabelled", public=False, bucket=None)
    with pytest.raises(ValueError, match=r"limits_test\.unlabelled\.Probe\.Call declares no"):
        method_access([unlabelled])
    shared = _service_file("shared", public=True, bucket=options_pb2.RATE_LIMIT_BUCKET_GENERAL)
    with pytest.raises(ValueError, match="is public, so it counts per client address"):
        method_access([shared])
    fine = _service_file("fine", public=True, bucket=options_pb2.RATE_LIMIT_BUCKET_PUBLIC)
    assert method_access([fine])["/limits_test.fine.Probe/Call"].bucket == "public"


def _sign_in_until_refused(rest: Rest) -> None:
    for _ in range(10):
        if rest.post("/auth/login", {"username": "x", "password": "y"}).status == 429:
            return
    raise AssertionError("sign-in was never limited")


def test_discovery_and_jwks_do_not_spend_the_sign_in_budget(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(
        rate_limits={"auth": Limit(2, HOUR), "public": Limit(len(DISCOVERY) + 2, HOUR)}
    )
    anonymous = Rest(server.rest_url)
    _sign_in_until_refused(anonymous)
    for path in DISCOVERY:
        reply = anonymous.get(path)
        assert reply.status == 200, (path, reply.raw[:200])
        assert reply.headers["X-RateLimit-Limit"] == str(len(DISCOVERY) + 2)
    keys = oauth_pb2_grpc.OAuthServiceStub(server.anonymous_channel).GetJwks(
        oauth_pb2.GetJwksRequest(), timeout=30
    )
    assert keys.keys
    # The public bucket has a budget of its own, per client address, too.
    assert anonymous.get(DISCOVERY[0]).status == 200
    over = anonymous.get(DISCOVERY[0])
    assert over.status == 429 and over.json["error"] == "rate_limited"
    assert int(over.headers["Retry-After"]) >= 1
    # Sign-in is still refused: the budgets are apart both ways.
    error = refused(
        lambda: auth_pb2_grpc.AuthServiceStub(server.anonymous_channel).Login(
            auth_pb2.LoginRequest(username="x", password="y"), timeout=30
        )
    )
    assert code_of(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason_of(error) == "rate_limited"


# ------------------------------------------------------------ across replicas

YEAR = 365 * 24 * HOUR
on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def _login(server: Running) -> grpc.StatusCode:
    try:
        auth_pb2_grpc.AuthServiceStub(server.anonymous_channel).Login(
            auth_pb2.LoginRequest(username=ADMIN_USERNAME, password=ADMIN_PASSWORD), timeout=30
        )
    except grpc.RpcError as exc:
        return code_of(exc)
    return grpc.StatusCode.OK


@on_postgres
def test_the_sign_in_limit_holds_across_replicas(start_server: Callable[..., Running]) -> None:
    limits = {**NO_LIMITS, "auth": Limit(5, HOUR)}
    first = start_server(rate_limits=limits)  # each start signs in once
    second = start_server(rate_limits=limits)
    assert first.server.grpc_port != second.server.grpc_port
    assert _login(first) == grpc.StatusCode.OK
    signed_in = Rest(second.rest_url).post(
        "/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert signed_in.status == 200 and signed_in.headers["X-RateLimit-Remaining"] == "1"
    assert _login(first) == grpc.StatusCode.OK  # the fifth
    assert _login(second) == grpc.StatusCode.RESOURCE_EXHAUSTED
    over = Rest(second.rest_url).post(
        "/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert over.status == 429 and over.headers["X-RateLimit-Remaining"] == "0"
    assert _login(first) == grpc.StatusCode.RESOURCE_EXHAUSTED


@on_postgres
def test_shared_meters_admit_exactly_the_limit_and_say_when_to_retry(
    db: Database, tmp_path: Path
) -> None:
    one, two = SharedRateLimiter(db, {"t": Limit(5, 60.0)}), SharedRateLimiter(db)
    with pytest.raises(ValueError, match="unknown rate-limit bucket 't'"):
        two.check("t", "k")
    two = SharedRateLimiter(db, {"t": Limit(5, 60.0)})
    verdicts = [(one if i % 2 else two).check("t", "k") for i in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert 1 <= verdicts[-1].retry_after_secs <= 12  # one unit drains in 60/5 s
    assert all(v.limit == 5 for v in verdicts)
    assert one.check("t", "other").allowed  # keys are apart
    with db.read() as conn:
        persistence = conn.execute(
            text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit_buckets'")
        ).scalar_one()
    assert persistence == "u"  # unlogged: meters are not worth a WAL flush per call
    with pytest.raises(ValueError, match="PostgreSQL"):
        SharedRateLimiter(connect(f"sqlite:///{tmp_path / 'one.db'}"))


def _level(db: Database, bucket: str, key: str) -> float | None:
    with db.read() as conn:
        row = conn.execute(
            select(RateLimitBucketRow.level).where(
                RateLimitBucketRow.bucket == bucket, RateLimitBucketRow.key == key
            )
        ).first()
    return None if row is None else float(row[0])


@on_postgres
def test_high_limits_are_taken_in_blocks_and_still_hold_across_replicas(db: Database) -> None:
    limit = Limit(3 * BLOCK_FRACTION, YEAR)
    assert block_size(limit) == 3
    one, two = SharedRateLimiter(db, {"t": limit}), SharedRateLimiter(db, {"t": limit})
    assert one.check("t", "k").allowed
    assert _level(db, "t", "k") == pytest.approx(3)  # a block, for this call and two more
    assert one.check("t", "k").allowed and one.check("t", "k").allowed
    assert _level(db, "t", "k") == pytest.approx(3)  # handed out without a round trip
    admitted = 3
    while True:
        answers = [one.check("t", "k").allowed, two.check("t", "k").allowed]
        admitted += sum(answers)
        if not any(answers):
            break
    assert admitted == limit.requests


@on_postgres
def test_a_replica_tracking_too_many_blocks_forgets_one_and_admits_less(db: Database) -> None:
    limiter = SharedRateLimiter(db, {"t": Limit(2 * BLOCK_FRACTION, YEAR)}, max_keys=1)
    assert limiter.check("t", "a").allowed  # a block of 2: one token left for "a"
    assert limiter.check("t", "b").allowed  # "a"'s block is forgotten, its token spent
    assert limiter.check("t", "a").allowed
    assert _level(db, "t", "a") == pytest.approx(4)


@on_postgres
def test_drained_meters_are_swept_from_the_table(db: Database) -> None:
    limiter = SharedRateLimiter(
        db, {"quick": Limit(1, 0.05), "slow": Limit(1, YEAR)}, sweep_every=1
    )
    assert limiter.check("quick", "a").allowed and limiter.check("slow", "a").allowed
    assert _level(db, "quick", "a") == pytest.approx(1)
    wait_until(lambda: limiter.check("quick", "b") and _level(db, "quick", "a") is None)
    assert not limiter.check("slow", "a").allowed  # a live meter stays
    assert _level(db, "slow", "a") == pytest.approx(1)


def test_unreachable_shared_meters_are_unavailable_not_an_error() -> None:
    # Nothing listens on port 1.
    limiter = SharedRateLimiter(connect("postgresql://postgres@127.0.0.1:1/none"))
    with pytest.raises(Unavailable, match="rate-limit counters are unreachable"):
        limiter.check("auth", "ip:127.0.0.1")
