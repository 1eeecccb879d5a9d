"""The egress guard: refused destinations get no traffic, allowed ones are
reached at the checked address with the original Host header."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence

import pytest
from webhook_helpers import Receiver, always, receiving

from trellis.server.config import Config
from trellis.server.events import EgressPolicy, EgressRefused, GuardedClient
from trellis.server.events._egress import forbidden_reason, parse_allow_list


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as server:
        yield server


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A bare listening socket on 127.0.0.1: any connection attempt to it
    completes in the kernel and waits in its accept queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def _assert_untouched(sock: socket.socket) -> None:
    # A TCP connect returns only after the handshake, which queues the
    # connection here: an empty queue after the refusal means none was made.
    with pytest.raises(BlockingIOError):
        sock.accept()


def _mapped(names: dict[str, Sequence[str]], calls: list[str]) -> EgressPolicy:
    def resolve(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return names[host]

    return EgressPolicy(resolver=resolve)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "[::1]",
        "[fd00:ec2::254]",
        "[fe80::1]",
        "[fc00::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a00:1]",
        "[64:ff9b:1::7f00:1]",
        "[::127.0.0.1]",
        "[::ffff:0:127.0.0.1]",
        "[fec0::1]",
        "[::2]",
    ],
)
def test_refused_addresses_are_never_connected_to(host: str, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    client = GuardedClient(EgressPolicy(), timeout_secs=2)
    try:
        with pytest.raises(EgressRefused, match="refused"):
            client.post(f"http://{host}:{port}/hook", b"{}", [])
    finally:
        client.close()
    _assert_untouched(listener)


def test_a_name_that_resolves_to_loopback_is_refused(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    calls: list[str] = []
    policy = _mapped({"rebound.example": ["93.184.215.14", "127.0.0.1"]}, calls)
    client = GuardedClient(policy, timeout_secs=2)
    try:
        with pytest.raises(EgressRefused, match=r"rebound\.example resolves to a loopback"):
            client.post(f"http://rebound.example:{port}/", b"{}", [])
        # The system's own name for loopback, through the system resolver.
        system = GuardedClient(EgressPolicy(), timeout_secs=2)
        try:
            with pytest.raises(EgressRefused, match="loopback"):
                system.post(f"http://localhost:{port}/", b"{}", [])
        finally:
            system.close()
    finally:
        client.close()
    assert calls == ["rebound.example"]
    _assert_untouched(listener)


def test_a_refusal_does_not_tell_the_address_a_name_resolved_to() -> None:
    # The message is stored where the subscription's owner reads it.
    calls: list[str] = []
    names = {"internal.example": ["10.1.2.3"], "v6.example": ["::ffff:10.1.2.3"]}
    client = GuardedClient(_mapped(names, calls), timeout_secs=2)
    try:
        for host in names:
            with pytest.raises(EgressRefused) as refused:
                client.post(f"http://{host}/", b"{}", [])
            message = str(refused.value)
            assert "private address" in message and host in message
            assert "10.1.2.3" not in message and "a01:203" not in message
    finally:
        client.close()


def test_ipv6_ranges_that_reach_local_networks_are_refused_unless_allow_listed() -> None:
    import ipaddress

    for text in ("64:ff9b:1::7f00:1", "::127.0.0.1", "::ffff:0:127.0.0.1", "fec0::1", "::2"):
        assert forbidden_reason(ipaddress.ip_address(text)), text
    policy = EgressPolicy(allow_networks=parse_allow_list("fec0::/10")[1])
    assert policy.addresses("[fec0::1]", 80) == ["fec0::1"]


def test_the_checked_address_is_the_one_connected_to(receiver: Receiver) -> None:
    # Resolved once, checked, connected to; the request still names its host.
    calls: list[str] = []
    policy = EgressPolicy(
        allow_networks=parse_allow_list("127.0.0.1/32")[1],
        resolver=lambda host, port: calls.append(host) or ["127.0.0.1"],
    )
    client = GuardedClient(policy, timeout_secs=5)
    try:
        answer = client.post(f"http://hooks.example:{receiver.port}/in", b'{"a":1}', [])
    finally:
        client.close()
    assert answer.status_code == 200 and answer.body == "ok"
    assert [(r.host, r.body) for r in receiver.requests] == [
        (f"hooks.example:{receiver.port}", b'{"a":1}')
    ]
    assert calls == ["hooks.example"]


def test_allow_listed_hosts_and_ranges(receiver: Receiver, listener: socket.socket) -> None:
    by_host = GuardedClient(EgressPolicy.from_allow_list("localhost"), timeout_secs=5)
    by_range = GuardedClient(EgressPolicy.from_allow_list(" 127.0.0.0/8 , other"), timeout_secs=5)
    narrow = GuardedClient(EgressPolicy.from_allow_list("127.0.0.2/32"), timeout_secs=5)
    try:
        assert by_host.post(f"http://localhost:{receiver.port}/", b"1", []).status_code == 200
        assert by_range.post(f"http://127.0.0.1:{receiver.port}/", b"2", []).status_code == 200
        with pytest.raises(EgressRefused):
            narrow.post(f"http://127.0.0.1:{listener.getsockname()[1]}/", b"3", [])
    finally:
        for client in (by_host, by_range, narrow):
            client.close()
    assert [r.body for r in receiver.requests] == [b"1", b"2"]
    _assert_untouched(listener)


def test_redirects_are_answers_not_followed(receiver: Receiver, listener: socket.socket) -> None:
    receiver.answer = always(307, b"")
    receiver.extra_headers = [("location", f"http://127.0.0.1:{listener.getsockname()[1]}/")]
    client = GuardedClient(EgressPolicy.from_allow_list("127.0.0.1"), timeout_secs=5)
    try:
        answer = client.post(f"http://127.0.0.1:{receiver.port}/", b"x", [])
    finally:
        client.close()
    assert answer.status_code == 307
    _assert_untouched(listener)


def test_answers_are_read_up_to_the_cap(receiver: Receiver) -> None:
    receiver.answer = always(200, b"A" * 100_000)
    client = GuardedClient(
        EgressPolicy.from_allow_list("127.0.0.1"), timeout_secs=5, max_body_bytes=1000
    )
    try:
        answer = client.post(f"http://127.0.0.1:{receiver.port}/", b"x", [])
    finally:
        client.close()
    assert answer.status_code == 200 and answer.body == "A" * 1000


def test_public_addresses_pass_the_check() -> None:
    import ipaddress

    for text in ("93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert forbidden_reason(ipaddress.ip_address(text)) == "", text


def test_allow_list_entries_are_hosts_or_ranges() -> None:
    hosts, networks = parse_allow_list("127.0.0.1/32, LocalHost., [::1], 10.1.0.0/16")
    assert hosts == {"localhost"}
    assert [str(n) for n in networks] == ["127.0.0.1/32", "::1/128", "10.1.0.0/16"]
    with pytest.raises(ValueError, match="neither a host name nor a CIDR range"):
        parse_allow_list("127.0.0.1/33")
    with pytest.raises(ValueError, match="EGRESS_ALLOW"):
        Config.from_env({"EGRESS_ALLOW": "http://x"})
    assert Config.from_env({"EGRESS_ALLOW": "127.0.0.1/32,localhost"}).egress_allow


def test_the_timeout_is_the_whole_request_budget() -> None:
    # A receiver that answers a byte at a time, each within the per-read
    # timeout, and would finish only after the budget many times over.
    import threading

    import httpx

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\n" + b"x-slow: " + b"." * 200:
                if done.wait(0.05):
                    return
                conn.sendall(bytes([byte]))
            conn.sendall(b"\r\ncontent-length: 2\r\n\r\nok")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    client = GuardedClient(EgressPolicy.from_allow_list("127.0.0.1/32"), timeout_secs=0.5)
    try:
        with pytest.raises(httpx.TimeoutException):
            client.post(f"http://127.0.0.1:{server.getsockname()[1]}/", b"{}", [])
    finally:
        done.set()
        client.close()
        thread.join()
        server.close()
