"""HTTP-level behaviour of the REST bridge in front of the real server: CORS and
preflight, forwarded headers, health, and one keep-alive connection carrying
answers and errors in turn."""

from __future__ import annotations

import json
from collections.abc import Callable

from conftest import Running
from rest_helpers import EventStream, Reply, assert_error, chunk, rest, stream_path

ALLOWED_HEADERS = "Authorization, Content-Type, X-Organization-ID, X-Request-ID, Last-Event-ID"


def _preflight(server: Running, path: str, origin: str, method: str) -> Reply:
    return rest(server).request(
        "OPTIONS",
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )


def test_any_origin_is_allowed_by_default(server: Running) -> None:
    client = rest(server)
    origin = {"Origin": "https://dashboard.example"}
    answers = [
        client.get("/api/workflows", headers=origin),
        client.post("/api/jobs/claim", {"worker_id": "w"}, headers=origin),
        client.get("/api/workflows/nope/status", headers=origin),  # 404 from the server
        client.get("/api/nowhere", headers=origin),  # 404 from the bridge
        client.request("DELETE", "/api/workers", headers=origin),  # 405
        client.get("/healthz"),  # no Origin at all
    ]
    assert [reply.status for reply in answers] == [200, 200, 404, 404, 405, 200]
    for reply in answers:
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
    with EventStream(client, stream_path("nope", "job"), origin) as stream:
        assert stream.status == 404
        assert stream.headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_answers_204_with_the_allowed_methods_and_headers(server: Running) -> None:
    for path, methods in [
        ("/api/jobs/claim", "OPTIONS, POST"),
        ("/api/workflows", "GET, HEAD, OPTIONS, POST"),
        ("/api/workflows/ci/status", "GET, HEAD, OPTIONS"),
        ("/api/jobs/lease-1/heartbeat", "OPTIONS, POST"),
        (stream_path("ci", "build"), "GET, HEAD, OPTIONS"),
    ]:
        reply = _preflight(server, path, "https://dashboard.example", methods.split(", ")[0])
        assert (reply.status, reply.raw) == (204, b"")
        assert reply.content_type is None
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert reply.headers["Access-Control-Allow-Methods"] == methods
        assert reply.headers["Allow"] == methods
        assert reply.headers["Access-Control-Allow-Headers"] == ALLOWED_HEADERS
        assert reply.headers["Access-Control-Max-Age"] == "600"
    # A path that does not exist stays a 404, preflight or not.
    reply = _preflight(server, "/api/nowhere", "https://dashboard.example", "GET")
    assert_error(reply, 404, "NOT_FOUND", "no route for OPTIONS /api/nowhere")


def test_listed_origins_are_the_only_ones_echoed(start_server: Callable[..., Running]) -> None:
    server = start_server(cors_origins=("https://a.example",))
    client = rest(server)

    def allowed(reply: Reply) -> str | None:
        assert "Origin" in reply.headers.get("Vary", "")
        return reply.headers.get("Access-Control-Allow-Origin")

    listed = client.get("/api/workflows", headers={"Origin": "https://a.example"})
    assert listed.status == 200 and allowed(listed) == "https://a.example"
    other = client.get("/api/workflows", headers={"Origin": "https://b.example"})
    assert other.status == 200 and allowed(other) is None
    assert allowed(client.get("/api/workflows")) is None
    error = client.get("/api/workflows/nope/status", headers={"Origin": "https://a.example"})
    assert error.status == 404 and allowed(error) == "https://a.example"

    preflight = _preflight(server, "/api/jobs/claim", "https://a.example", "POST")
    assert preflight.status == 204 and allowed(preflight) == "https://a.example"
    assert preflight.headers["Access-Control-Allow-Headers"] == ALLOWED_HEADERS
    refused = _preflight(server, "/api/jobs/claim", "https://b.example", "POST")
    assert refused.status == 204 and allowed(refused) is None

    client.run("hello")
    lease_id = client.must_claim()["lease"]["lease_id"]
    assert client.push_logs(lease_id, [chunk(0, "hi\n")]) == 1
    origin = {"Origin": "https://a.example"}
    with EventStream(client, stream_path("hello", "hello"), origin) as stream:
        assert stream.status == 200
        assert stream.headers["Access-Control-Allow-Origin"] == "https://a.example"
        event = stream.next_event()
        assert event is not None and event.event == "log"


def test_forwarded_headers_pass_and_headers_grpc_cannot_carry_are_400(server: Running) -> None:
    client = rest(server)
    headers = {
        "Authorization": f"Bearer {server.token}",
        "X-Organization-ID": "default",
        "X-Request-ID": "req-1",
    }
    assert client.ok(client.post("/api/jobs/claim", {"worker_id": "w"}, headers=headers)) is None
    assert client.ok(client.get("/api/workers", headers=headers))[0]["worker_id"] == "w"
    # http.client sends str header values as Latin-1: "é" is one byte, not ASCII.
    bad = client.post("/api/jobs/claim", {"worker_id": "w2"}, headers={"Authorization": "B \xe9"})
    assert_error(bad, 400, "INVALID_ARGUMENT", "header Authorization")
    refused = EventStream(client, stream_path("ci", "build"), {"X-Request-ID": "r\xe9"})
    assert_error(refused.read_json_error(), 400, "INVALID_ARGUMENT", "header X-Request-ID")
    assert "w2" not in client.workers()


def test_healthz_reports_ok(server: Running) -> None:
    client = rest(server)
    reply = client.get("/healthz")
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert reply.raw == b'{"status":"ok"}'


def test_one_keep_alive_connection_carries_answers_and_errors_in_turn(server: Running) -> None:
    client = rest(server)
    connection = client.connection()
    try:
        exchanges: list[tuple[str, str, bytes | None, int]] = [
            ("GET", "/healthz", None, 200),
            ("POST", "/api/jobs/claim", b'{"worker_id": ', 400),
            ("GET", "/api/nowhere", None, 404),
            ("DELETE", "/api/jobs/claim", b"{}", 405),
            ("POST", "/api/jobs/claim", b'{"worker_id": "w"}', 200),
            ("GET", "/api/workflows/nope/status", None, 404),
            ("POST", "/api/workflows/hello/run", None, 202),
            ("GET", "/api/workflows/hello/status", None, 200),
        ]
        for method, path, body, status in exchanges:
            connection.request(method, path, body=body, headers=client.headers())
            response = connection.getresponse()
            raw = response.read()
            assert response.status == status, (method, path, raw)
            assert response.getheader("Content-Type") == "application/json"
            parsed = json.loads(raw)
            if status >= 400:
                assert set(parsed) == {"error"} and parsed["error"]["code"] == status
            # The bridge keeps the connection open for the next request.
            assert not response.will_close
    finally:
        connection.close()
