"""Request bodies over REST: read whole as JSON or as a form, or refused; never
half-read. Bad text (NUL, lone surrogates), absurd nesting and bodies over the limit
are 4xx answers in the surface's JSON, on SQLite and PostgreSQL, with no traceback in
the log, before authentication where the body is what is wrong.
"""

from __future__ import annotations

import http.client
import json
import socket
from urllib.parse import quote, urlencode

import pytest
from conftest import Running
from rest_helpers import Reply, Rest, assert_error, rest, uid
from status_helpers import no_errors_logged

FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends
PLAIN = {"Content-Type": "text/plain"}
LIMIT = 8 * 1024 * 1024  # the README's body limit


def one_job(client: Rest) -> tuple[str, str]:
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    client.run(workflow_id)
    return workflow_id, client.must_claim()["lease"]["lease_id"]


# --- JSON whatever the declared type ------------------------------------------------------


def test_json_sent_as_a_form_is_read_as_json(server: Running) -> None:
    # The README's curl lines, as curl sends them without -H 'Content-Type: ...'.
    client = rest(server)
    workflow_id = client.create_workflow([{"id": "a", "command": "true"}])["id"]
    client.run(workflow_id)
    claim = b'{"worker_id": "w1", "labels": [], "lease_ttl_secs": 30}'
    got = client.ok(client.post("/api/jobs/claim", raw=claim, headers=FORM))
    assert (got["lease"]["worker_id"], got["lease"]["ttl_secs"]) == ("w1", 30)
    lease_id = got["lease"]["lease_id"]
    assert client.ok(client.post(f"/api/jobs/{lease_id}/heartbeat", headers=FORM))["lease_id"]
    complete = b'{"outputs": {"artifact": "x"}}'
    assert (
        client.ok(client.post(f"/api/jobs/{lease_id}/complete", raw=complete, headers=FORM)) == {}
    )
    assert client.jobs(workflow_id)["a"]["outputs"] == {"artifact": "x"}


def test_bodies_that_are_not_json_are_415_unless_a_form_is_taken(server: Running) -> None:
    client = rest(server)
    workflow_id, lease_id = one_job(client)
    for path, raw, headers in [
        (f"/api/jobs/{lease_id}/complete", b"outputs=x", FORM),
        (f"/api/jobs/{lease_id}/complete", b"outputs: {artifact: x}", PLAIN),
        ("/api/jobs/claim", b"worker_id=w1", FORM),
        ("/api/workflows", b"<workflow/>", {"Content-Type": "application/xml"}),
    ]:
        reply = client.post(path, raw=raw, headers=headers)
        assert_error(
            reply,
            415,
            "INVALID_ARGUMENT",
            f"request body is not JSON (Content-Type: {headers['Content-Type']})",
        )
    # Declared as JSON (or not declared), it is a 400 naming the syntax error.
    for headers in ({"Content-Type": "application/json"}, {}):
        reply = client.post("/api/jobs/claim", raw=b"worker_id=w1", headers=headers)
        assert_error(reply, 400, "INVALID_ARGUMENT", "invalid JSON body")
    # Nothing happened to the job, and its lease still completes.
    assert client.jobs(workflow_id)["a"]["status"] == "running"
    client.complete(lease_id, {"by": "json"})
    # The OAuth2 surface answers in its own style.
    reply = Rest(server.rest_url).post("/api/v1/oauth2/token", raw=b"grant_type", headers=PLAIN)
    assert reply.status == 415
    assert reply.json["error"] == "invalid_request"
    assert "application/x-www-form-urlencoded" in reply.json["error_description"]


def test_form_endpoints_take_forms_and_json_and_refuse_what_is_neither(server: Running) -> None:
    admin = rest(server)
    client = admin.post(
        "/api/v1/oauth2/clients", {"name": uid("svc"), "scopes": ["workflows:read"]}
    )
    assert client.status == 201
    fields = {
        "grant_type": "client_credentials",
        "client_id": client.json["client"]["client_id"],
        "client_secret": client.json["client_secret"],
    }
    anonymous = Rest(server.rest_url)
    token = "/api/v1/oauth2/token"
    # A form's unknown parameters are ignored, as RFC 6749 (3.2) requires.
    form = urlencode({**fields, "resource": "https://api.example"}).encode()
    for raw, headers in [
        (form, FORM),
        (json.dumps(fields).encode(), FORM),
        (json.dumps(fields).encode(), {"Content-Type": "application/json"}),
    ]:
        reply = anonymous.post(token, raw=raw, headers=headers)
        assert reply.status == 200, reply.raw
        assert reply.json["token_type"].lower() == "bearer"
    # Broken JSON labelled as a form is no form either: its key is named.
    reply = anonymous.post(token, raw=b'{"grant_type": "client_credentials"', headers=FORM)
    assert reply.status == 400
    assert reply.json["error"] == "invalid_request"
    assert 'grant_type\\": \\"client_credentials' in reply.json["error_description"]
    assert "no parameter name" in reply.json["error_description"]


# --- bad text and absurd nesting ----------------------------------------------------------


def test_nul_in_ids_and_text_is_400_on_every_database(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    client = rest(server)
    workflow_id, lease_id = one_job(client)
    before = client.ok(client.get("/api/workflows"))
    nul = quote("\x00")
    for method, path, body, field in [
        ("GET", f"/api/workflows/ci{nul}/status", None, "workflow_id"),
        ("POST", f"/api/workflows/ci{nul}/run", None, "workflow_id"),
        ("GET", f"/api/runs?workflow_id=ci{nul}", None, "workflow_id"),
        ("GET", f"/api/jobs/{workflow_id}/a{nul}/cancelled", None, "job_id"),
        ("POST", f"/api/jobs/{lease_id}{nul}/complete", {"outputs": {}}, "lease_id"),
        ("POST", f"/api/jobs/{lease_id}/complete", {"outputs": {"k": "v\x00"}}, 'outputs["k"]'),
        ("POST", f"/api/jobs/{lease_id}/fail", {"error": "exit\x001"}, "error"),
        (
            "POST",
            f"/api/jobs/{lease_id}/logs",
            {"chunks": [{"sequence": 0, "data": "\x00"}]},
            "chunks[0].data",
        ),
        ("POST", "/api/workers/register", {"worker_id": "w\x00"}, "worker_id"),
        ("POST", "/api/workflows", {"id": uid(), "name": "\x00", "jobs": []}, "workflow.name"),
    ]:
        reply = client.request(method, path) if body is None else client.request(method, path, body)
        assert_error(reply, 400, "INVALID_ARGUMENT", f"{field}: ", "NUL")
    # Before authentication, in the surfaces' own styles.
    anonymous = Rest(server.rest_url)
    login = anonymous.post("/auth/login", {"username": "admin\x00", "password": "x"})
    assert login.status == 400 and login.json["success"] is False
    assert "username: " in login.json["error"]
    form = anonymous.post("/api/v1/oauth2/token", raw=b"grant_type=x%00", headers=FORM)
    assert (form.status, form.json["error"]) == (400, "invalid_request")
    assert "grant_type: " in form.json["error_description"]
    # Nothing was stored, and the lease still completes.
    assert client.ok(client.get("/api/workflows")) == before
    assert client.logs(workflow_id, "a") == []
    client.complete(lease_id)
    no_errors_logged(caplog)


def test_lone_surrogates_and_deep_nesting_are_400_before_authentication(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    anonymous = Rest(server.rest_url)
    client = rest(server)
    for raw, message in [
        (b'{"username": "\\ud800", "password": "x"}', "username: text holds a lone surrogate"),
        (b'{"username": "\xed\xa0\x80", "password": "x"}', "username: text holds a lone"),
        (b'{"\\udfff": 1}', '"\\udfff": text holds a lone surrogate'),
        (b"[" * 1000 + b"]" * 1000, "nested more than 32 levels deep"),
        (b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, "nested more than 32 levels deep"),
    ]:
        for path in ("/auth/login", "/api/jobs/claim"):
            reply = anonymous.post(path, raw=raw, headers={"Content-Type": "application/json"})
            assert reply.status == 400, (path, reply.raw[:200])
            assert reply.content_type == "application/json"
            error = reply.json["error"]
            assert message in (error["message"] if isinstance(error, dict) else error)
        reply = client.post("/api/workflows", raw=raw, headers={"Content-Type": "application/json"})
        assert_error(reply, 400, "INVALID_ARGUMENT", "")
    # A surrogate pair is one character, and fine.
    registered = client.post("/api/workers/register", raw=b'{"worker_id": "w-\\ud83d\\ude00"}')
    assert client.ok(registered)["worker_id"] == "w-\U0001f600"
    no_errors_logged(caplog)


# --- the body limit -----------------------------------------------------------------------


def declared_only(server: Running, path: str, length: int) -> Reply:
    """A POST that declares ``length`` bytes of body and sends none of it."""
    with socket.create_connection(("127.0.0.1", server.server.rest_port), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: https://dash.example\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        sock.sendall(head.encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def test_bodies_over_the_limit_are_json_413s_before_they_are_read(server: Running) -> None:
    for length in (LIMIT + 1, 17 * 1024 * 1024, 10**12):
        reply = declared_only(server, "/api/jobs/claim", length)
        assert_error(reply, 413, "RESOURCE_EXHAUSTED", f"larger than {LIMIT} bytes")
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
        assert reply.headers["Connection"] == "close"
        oauth = declared_only(server, "/api/v1/oauth2/token", length)
        assert oauth.status == 413 and oauth.json["error"] == "payload_too_large"
        assert oauth.headers["Cache-Control"] == "no-store"
    # At the limit exactly, the body is read.
    body = b'{"worker_id": "w"}'
    client = rest(server)
    reply = client.post("/api/jobs/claim", raw=body + b" " * (LIMIT - len(body)))
    assert reply.status == 200 and reply.json is None


def test_page_tokens_from_no_response_are_400(server: Running) -> None:
    client = rest(server)
    for token in ("-1", "9223372036854775808", "1e3", "²", " 1"):
        reply = client.get(f"/api/runs?page_token={quote(token)}")
        assert_error(reply, 400, "INVALID_ARGUMENT", "page_token: not a token")
    # The tokens of real answers still page.
    client.run("ci")
    client.run("ci")
    first = client.ok(client.get("/api/runs?page_size=1"))
    token = first["next_page_token"]
    assert token
    second = client.ok(client.get(f"/api/runs?page_size=1&page_token={quote(token)}"))
    assert [len(first["runs"]), len(second["runs"])] == [1, 1]
    assert first["runs"][0]["run_id"] != second["runs"][0]["run_id"]
