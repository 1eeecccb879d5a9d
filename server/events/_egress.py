"""The egress guard: every request Trellis sends out (webhooks, backend callbacks).

A URL's host is resolved once, when the connection is made; every address it
resolves to is checked, and the socket connects to the checked address itself,
while the request keeps the original ``Host`` header and TLS SNI (httpx opens
the TLS session on the socket with the URL's host name). A name that resolves
to a public address when checked and to 127.0.0.1 a moment later (DNS
rebinding) therefore cannot reach 127.0.0.1: there is no second lookup.

Refused unless allow-listed: loopback, private (RFC 1918, IPv6 ULA),
link-local, carrier-grade NAT (100.64.0.0/10), multicast, unspecified and the
other special-purpose ranges (anything ``ipaddress`` does not call global),
including the cloud metadata addresses (169.254.169.254, fd00:ec2::254) and
IPv4 addresses written as IPv6 (``::ffff:127.0.0.1``, NAT64 ``64:ff9b::/96``,
6to4 ``2002::/16``), and, whatever they embed, IPv4-compatible ``::/96``,
IPv4-translated ``::ffff:0:0:0/96``, local-use NAT64 ``64:ff9b:1::/48`` and
site-local ``fec0::/10``. A refusal names the reason, not the address a name
resolved to. A name that resolves to any refused address is refused as
a whole. Redirects are never followed (a 3xx is an answer like any other),
proxies from the environment are ignored (they would make the connection on
the guard's behalf), and answers are read up to a cap.

Operators allow-list host names or CIDR ranges (``EGRESS_ALLOW``, e.g.
``127.0.0.1/32,localhost``): an allow-listed name is connected to wherever it
resolves; an address inside an allow-listed range is accepted.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import httpcore
import httpx

__all__ = [
    "EgressPolicy",
    "EgressRefused",
    "GuardedClient",
    "Resolver",
    "Response",
    "forbidden_reason",
    "parse_allow_list",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses to try, in order
Resolver = Callable[[str, int], Sequence[str]]

_METADATA: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR: Final = ipaddress.ip_network("2002::/16")
# IPv6 ranges ``ipaddress`` calls global (or does not judge) that reach IPv4
# or local networks: IPv4-compatible (deprecated, routed as IPv4 by some
# stacks), IPv4-translated (SIIT), local-use NAT64 (the embedded address is
# the operator's choice of position), site-local (deprecated, still routed
# inside sites).
_REFUSED_V6: Final = (
    (ipaddress.ip_network("::/96"), "an IPv4-compatible IPv6 address"),
    (ipaddress.ip_network("::ffff:0:0:0/96"), "an IPv4-translated IPv6 address"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (ipaddress.ip_network("fec0::/10"), "a site-local address"),
)


class EgressRefused(httpx.ConnectError):
    """The destination is one the guard refuses; nothing was sent to it."""


def forbidden_reason(address: IpAddress) -> str:
    """Why ``address`` may not be connected to, or "" when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address in _SIX_TO_FOUR:
            embedded = address.sixtofour
        if embedded is not None:
            inner = forbidden_reason(embedded)
            return f"{inner} (written as IPv6)" if inner else ""
        if address.is_loopback:
            return "a loopback address"
        if address.is_unspecified:
            return "the unspecified address"
        for network, reason in _REFUSED_V6:
            if address in network:
                return reason
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a carrier-grade NAT address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a special-purpose address"
    return ""


def parse_allow_list(text: str) -> tuple[frozenset[str], tuple[IpNetwork, ...]]:
    """Host names and CIDR ranges of a comma-separated ``EGRESS_ALLOW`` value.

    An entry that parses as an address or a range is a range (a bare address
    is its /32 or /128); anything else is a host name, compared
    case-insensitively. ValueError names an entry that is neither.
    """
    hosts: set[str] = set()
    networks: list[IpNetwork] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = entry.lower().rstrip(".")
        if not name or any(ch in name for ch in "/:@ "):
            raise ValueError(f"EGRESS_ALLOW: {entry!r} is neither a host name nor a CIDR range")
        hosts.add(name)
    return frozenset(hosts), tuple(networks)


def _system_resolver(host: str, port: int) -> Sequence[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen[str(sockaddr[0])] = None
    return list(seen)


@dataclass(frozen=True)
class EgressPolicy:
    """What may be connected to: everything global, plus the allow-list."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IpNetwork, ...] = ()
    resolver: Resolver = field(default=_system_resolver, repr=False)

    @classmethod
    def from_allow_list(cls, text: str, resolver: Resolver | None = None) -> EgressPolicy:
        hosts, networks = parse_allow_list(text)
        return cls(hosts, networks, resolver or _system_resolver)

    def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; EgressRefused
        when it resolves to nothing or to any refused address."""
        name = host.strip("[]").lower().rstrip(".")
        try:
            literal: IpAddress | None = ipaddress.ip_address(name)
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [str(literal)]
        else:
            try:
                candidates = list(self.resolver(name, port))
            except (OSError, UnicodeError) as exc:
                raise EgressRefused(f"{host}: cannot be resolved ({exc})") from None
            if not candidates:
                raise EgressRefused(f"{host}: resolves to no address")
            if name in self.allow_hosts:
                return candidates
        for text in candidates:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if any(address in net for net in self.allow_networks):
                continue
            reason = forbidden_reason(address)
            if reason:
                # The resolved address stays out of the message: it is kept
                # where the subscription's owner reads it, and an internal
                # address is none of theirs.
                verb = "is" if literal is not None else "resolves to"
                raise EgressRefused(f"{host} {verb} {reason}; refused (see EGRESS_ALLOW)")
        return candidates


# The deadline of the request the current thread is sending (monotonic
# seconds): httpx's timeouts are per operation, so a receiver that answers a
# byte at a time would otherwise hold the request without end.
_deadline = threading.local()


def _left(timeout: float | None) -> float | None:
    """``timeout`` cut to what is left of the current request's budget."""
    at: float | None = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the attempt ran out of time")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses the policy accepts."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._policy.addresses(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return _DeadlineStream(
                    super().connect_tcp(
                        address, port, _left(timeout), local_address, socket_options or ()
                    )
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, the first ``max_body`` bytes of its body as text."""

    status_code: int
    body: str


class GuardedClient:
    """A small HTTP client for outgoing requests, behind the egress guard.

    Thread-safe (one pooled httpx client). ``timeout_secs`` is the whole
    request's budget (connect, send, answer): a receiver that has not answered
    by then counts as a failed attempt, and the caller retries later.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        timeout_secs: float = 5.0,
        max_body_bytes: int = 4096,
    ) -> None:
        self.policy = policy
        self.timeout_secs = timeout_secs
        self.max_body_bytes = max_body_bytes
        transport = httpx.HTTPTransport(retries=0)
        # httpx's transport builds its pool without a way to pass a network
        # backend; the pool is rebuilt with the guarded one (same defaults).
        transport._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=32,
            max_keepalive_connections=16,
            keepalive_expiry=5.0,
            retries=0,
            network_backend=_GuardedBackend(policy),
        )
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout_secs),
            follow_redirects=False,
            trust_env=False,
        )

    def post(self, url: str, body: bytes, headers: Iterable[tuple[str, str]]) -> Response:
        """POSTs ``body``; raises EgressRefused for a refused destination and
        httpx.HTTPError for a failure to connect, send or read in time."""
        _deadline.at = time.monotonic() + self.timeout_secs
        try:
            return self._post(url, body, headers)
        finally:
            _deadline.at = None

    def _post(self, url: str, body: bytes, headers: Iterable[tuple[str, str]]) -> Response:
        with self._client.stream("POST", url, content=body, headers=list(headers)) as answer:
            chunks: list[bytes] = []
            size = 0
            for chunk in answer.iter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.max_body_bytes:
                    break
            text = b"".join(chunks)[: self.max_body_bytes].decode("utf-8", "replace")
            return Response(answer.status_code, text)

    def close(self) -> None:
        self._client.close()
