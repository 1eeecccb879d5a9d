"""The auth layer of the gRPC server, which the REST bridge passes through too.

For every call of a ``trellis.v1`` method the interceptor, before the
servicer runs:

1. resolves the principal from the ``authorization`` and
   ``x-organization-id`` metadata (public methods run as an anonymous
   principal of the named org);
2. checks the scope the method declares in proto (``required_scope``;
   ``"any"`` asks for a valid credential and nothing more, as logout does);
   a method of ``trellis.v1`` that declares none and is not ``public`` is
   refused to everyone, so a new RPC cannot be exposed by forgetting it;
3. evaluates the organization's policies (Deny wins) for the method's
   resource and action, as its ``policy`` option declares them: the
   resource kind (by default the scope's first half) named by the first
   of the option's request fields that is set, and the scope's action:
   ``workflows:run`` on a request naming workflow ``etl`` is action ``run``
   on resource ``workflows:etl`` (``workflows:*`` when it names none);
4. counts the call against the rate-limit bucket the method declares in
   proto (``rate_limit``): ``auth`` and ``public`` per client address, and
   before any credential is looked at; the others per principal. A method
   of ``trellis.v1`` without a bucket stops the server at start-up;

then runs the servicer with the principal available from
``current_principal()``. Methods of other packages (health, reflection)
are left alone.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FileDescriptor

from trellis.server.api import _status
from trellis.server.api._handlers import Wrapped, rewrap
from trellis.server.core.errors import Unavailable
from trellis.server.identity import ratelimit
from trellis.server.identity.principal import (
    DEFAULT_ORG,
    AuthError,
    MissingOrganization,
    PermissionDenied,
    Principal,
    PrincipalKind,
    Unauthenticated,
)
from trellis.server.identity.scopes import ALL_SCOPES
from trellis.v1 import options_pb2

# Resolves (authorization, x-organization-id) to a principal or raises AuthError.
Authenticate = Callable[[str | None, str | None], Principal]
# Raises PermissionDenied when a policy denies (principal, resource, action).
CheckPolicy = Callable[[Principal, str, str], None]

_current: ContextVar[Principal | None] = ContextVar("trellis_principal", default=None)

# Where REST callers' addresses come from: the bridge forwards them as
# x-forwarded-for, which is believed only from these peers.
LOOPBACK = frozenset({"127.0.0.1", "::1"})
SCOPE_DENIED = "Token does not have the required scope for this action"
# The required_scope of methods open to any authenticated caller.
ANY_SCOPE = "any"


def current_principal() -> Principal:
    """The principal of the call being served (set by the interceptor)."""
    principal = _current.get()
    if principal is None:
        raise RuntimeError("no principal: the call did not pass the auth interceptor")
    return principal


@dataclass(frozen=True)
class MethodAccess:
    """What a method demands of its callers, read from its proto options."""

    scope: str | None  # None: declared nothing, so refused
    public: bool
    bucket: str  # a bucket of ``ratelimit``
    # Policies judge "<policy_kind>:<the first of name_fields set>".
    policy_kind: str = ""
    name_fields: tuple[str, ...] = ()


def method_access(files: Iterable[FileDescriptor]) -> dict[str, MethodAccess]:
    """The access rules of every method of ``files``, by gRPC method path.

    Raises ``ValueError`` for a method without a rate-limit bucket, a public
    one whose bucket counts per principal (all its callers would share the
    anonymous principal's budget), or one whose policy target is malformed.
    """
    out: dict[str, MethodAccess] = {}
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                opts: Any = method.GetOptions()  # extensions are untyped in the stubs
                public = bool(opts.Extensions[options_pb2.public])
                scope = str(opts.Extensions[options_pb2.required_scope]) or None
                bucket = declared_bucket(method.full_name, opts.Extensions[options_pb2.rate_limit])
                if public and bucket not in ratelimit.BY_ADDRESS:
                    raise ValueError(
                        f"{method.full_name} is public, so it counts per client address: its "
                        f"rate_limit must be one of {sorted(ratelimit.BY_ADDRESS)}, not {bucket!r}"
                    )
                kind, names = declared_policy(method.full_name, scope, method.input_type, opts)
                out[f"/{service.full_name}/{method.name}"] = MethodAccess(
                    scope="" if public else scope,
                    public=public,
                    bucket=bucket,
                    policy_kind=kind,
                    name_fields=names,
                )
    return out


def declared_policy(
    method: str, scope: str | None, request: Descriptor, opts: Any
) -> tuple[str, tuple[str, ...]]:
    """The resource kind and naming fields of a method's ``(policy)`` option."""
    target = opts.Extensions[options_pb2.policy]
    kind = target.kind or (scope or "").partition(":")[0]
    names = tuple(target.name_fields)
    for name in names:
        message: Descriptor | None = request
        for part in name.split("."):
            field = message.fields_by_name.get(part) if message is not None else None
            if field is None:
                raise ValueError(f"{method}: policy name field {name!r} is not in the request")
            message = field.message_type
        if message is not None:
            raise ValueError(f"{method}: policy name field {name!r} is not a string")
    if "workflow_id" in request.fields_by_name and "workflow_id" not in names:
        raise ValueError(f"{method} takes a workflow_id: list it in option (policy)")
    return kind, names


def declared_bucket(method: str, value: int) -> str:
    """The ``ratelimit`` bucket of a ``RateLimitBucket`` value: RATE_LIMIT_BUCKET_AUTH is "auth"."""
    if value == options_pb2.RATE_LIMIT_BUCKET_UNSPECIFIED:
        raise ValueError(f"{method} declares no rate-limit bucket: set option (rate_limit)")
    name = options_pb2.RateLimitBucket.Name(value)
    return name.removeprefix("RATE_LIMIT_BUCKET_").lower()


class AuthInterceptor(grpc.ServerInterceptor):
    """See the module docstring. ``authenticate=None`` is development mode:
    every call runs with every scope (the server allows it on loopback only)."""

    def __init__(
        self,
        access: Mapping[str, MethodAccess],
        authenticate: Authenticate | None,
        limiter: ratelimit.Limiter | None = None,
        trusted_proxies: frozenset[str] = LOOPBACK,
        check_policy: CheckPolicy | None = None,
    ) -> None:
        self._access = dict(access)
        self._authenticate = authenticate
        self._check_policy = check_policy
        self._limiter = limiter
        self._trusted = trusted_proxies
        self._wrapped = Wrapped()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        access = self._access.get(details.method)
        if handler is None or access is None:
            return handler
        return self._wrapped.get(
            details.method,
            handler,
            lambda h: _wrapped(h, lambda context, request: self._admit(access, context, request)),
        )

    # ------------------------------------------------------------ admission

    def _admit(
        self, access: MethodAccess, context: grpc.ServicerContext, request: Any
    ) -> Principal:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        if access.scope is None:
            _status.abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                "this method declares no scope and is not available",
                reason="forbidden",
            )
        org_header = metadata.get("x-organization-id") or None
        by_address = access.bucket in ratelimit.BY_ADDRESS
        if by_address:
            address = client_address(context, self._trusted, metadata)
            self._limit(context, access.bucket, f"ip:{address}")
        if access.public:
            return _anonymous(org_header, frozenset())
        if self._authenticate is None:
            principal = _anonymous(org_header, ALL_SCOPES, "anonymous (auth disabled)")
        else:
            try:
                principal = self._authenticate(metadata.get("authorization"), org_header)
            except AuthError as exc:
                _abort_auth(context, exc)
        if access.scope != ANY_SCOPE and not principal.allows(access.scope):
            _status.abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{SCOPE_DENIED} (needs {access.scope})",
                reason="insufficient_scope",
            )
        if self._check_policy is not None and access.scope != ANY_SCOPE:
            try:
                for resource, action in policy_targets(access, request):
                    self._check_policy(principal, resource, action)
            except AuthError as exc:
                _abort_auth(context, exc)
        if not by_address:
            self._limit(context, access.bucket, f"{principal.org_id}/{principal.subject}")
        return principal

    def _limit(self, context: grpc.ServicerContext, bucket: str, key: str) -> None:
        if self._limiter is None:
            return
        try:
            verdict = self._limiter.check(bucket, key)
        except Unavailable as exc:
            _status.abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        metadata = ratelimit.grpc_metadata(verdict)
        if not verdict.allowed:
            _status.abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"rate limit exceeded; retry in {verdict.retry_after_secs} s",
                reason="rate_limited",
                metadata=metadata,
            )
        if bucket != ratelimit.WORKER:
            # In the trailers, which go out with the answer: sending them as
            # initial metadata would be a separate write. Workers call
            # thousands of times a minute and never read them.
            _status.add_trailers(context, metadata)


def _anonymous(org_header: str | None, scopes: frozenset[str], name: str = "") -> Principal:
    """The caller of a public method, or anyone in development mode (every scope)."""
    return Principal(
        org_id=org_header or DEFAULT_ORG,
        subject="anonymous",
        kind=PrincipalKind.ANONYMOUS,
        scopes=scopes,
        name=name,
    )


def client_address(
    context: grpc.ServicerContext,
    trusted: frozenset[str] = LOOPBACK,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """The caller's address: the peer's, or the one a trusted proxy (the REST
    bridge) forwarded in ``x-forwarded-for``."""
    if metadata is None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
    peer = _peer_address(context.peer())
    forwarded = metadata.get("x-forwarded-for", "")
    if peer in trusted and forwarded:
        return forwarded.split(",")[-1].strip()
    return peer


def policy_targets(access: MethodAccess, request: Any) -> list[tuple[str, str]]:
    """The (resource, action) pairs policies judge a call by: the method's
    resource kind, narrowed to the name its request gives, and its scope's
    action. A name inside a repeated field (a batch's items) gives one pair
    per item, each of which the call must pass."""
    action = (access.scope or "").partition(":")[2]
    for path in access.name_fields if request is not None else ():
        names = sorted({str(v) for v in _values_at(request, path.split(".")) if v})
        if names:
            return [(f"{access.policy_kind}:{name}", action) for name in names]
    return [(f"{access.policy_kind}:*", action)]


def _values_at(message: Any, parts: list[str]) -> Iterator[Any]:
    """The values at a dotted path, through repeated fields."""
    value = getattr(message, parts[0])
    # A message or a string is one value; anything else here is a repeated field.
    one = isinstance(value, str) or hasattr(value, "DESCRIPTOR")
    items = (value,) if one else value
    for item in items:
        if len(parts) == 1:
            yield item
        else:
            yield from _values_at(item, parts[1:])


@functools.lru_cache(maxsize=4096)
def _peer_address(peer: str) -> str:
    """The address of a gRPC peer string such as ``ipv4:127.0.0.1:5000``.

    Kept per peer: a client makes all its calls on one connection, and
    parsing an address costs more than the rest of admitting a call."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        host = rest.rsplit(":", 1)[0].strip("[]")
    elif kind == "ipv4":
        host = rest.rsplit(":", 1)[0]
    else:
        return peer
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _abort_auth(context: grpc.ServicerContext, exc: AuthError) -> None:
    if isinstance(exc, MissingOrganization):
        _status.abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            str(exc),
            reason=exc.reason,
            http_status=422,
        )
    if isinstance(exc, PermissionDenied):
        _status.abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc), reason=exc.reason)
    reason = exc.reason if isinstance(exc, Unauthenticated) else "invalid_token"
    _status.abort(
        context,
        grpc.StatusCode.UNAUTHENTICATED,
        str(exc),
        reason=reason,
        metadata=[("www-authenticate", 'Bearer realm="trellis"')],
    )


def _wrapped(
    handler: grpc.RpcMethodHandler[Any, Any],
    admit: Callable[[grpc.ServicerContext, Any], Principal],
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with admission before its behaviour and the principal set
    while it runs (for streams, while the response iterator is consumed).
    Admission sees the request of unary-request methods (for policies)."""
    unary_request = not handler.request_streaming

    def run(behavior: Callable[..., Any], arg: Any, context: grpc.ServicerContext) -> Any:
        principal = admit(context, arg if unary_request else None)
        token = _current.set(principal)
        try:
            return behavior(arg, context)
        finally:
            _current.reset(token)

    def stream(behavior: Callable[..., Any], arg: Any, context: grpc.ServicerContext) -> Any:
        principal = admit(context, arg if unary_request else None)

        def responses() -> Iterator[Any]:
            previous = _current.get()
            _current.set(principal)
            try:
                yield from behavior(arg, context)
            finally:
                _current.set(previous)

        return responses()

    def around(behavior: Callable[..., Any], arg: Any, context: grpc.ServicerContext) -> Any:
        if handler.response_streaming:
            return stream(behavior, arg, context)
        return run(behavior, arg, context)

    return rewrap(handler, around)
