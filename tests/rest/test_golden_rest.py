"""Golden answers of every documented REST path (see ``golden_helpers``).

Each test is one scripted scenario over real HTTP against a fresh server, with
fixed inputs; its transcript must equal ``tests/golden/<scenario>.txt`` byte for
byte, on SQLite and on PostgreSQL alike. ``TRELLIS_GOLDEN_UPDATE=1 pytest
tests/test_golden_rest.py`` rewrites the files after an intended change.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, NO_LIMITS, Running
from golden_helpers import RecordingRest, Transcript, golden
from rest_helpers import Reply, chunk, stream_path

from trellis.server.identity import totp
from trellis.server.identity.ratelimit import Limit

_WRITTEN: set[str] = set()

PUBLIC_URL = "https://trellis.example.com"
PASSWORD = "Correct-horse-battery-9"
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
REDIRECT = "https://app.example.com/callback"
# A fixed PKCE pair (RFC 7636: S256 of the verifier).
VERIFIER = "golden-verifier-0123456789-abcdefghijklmnopqrstuvwxyz"
CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
)
# Sent with every answer (no CORS_ORIGINS: any origin); named once per file.
CORS = ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers")

# Loaded at start from WORKFLOWS_DIR, beside the ones created over the API.
NIGHTLY_YML = """\
name: Nightly
on: [schedule, push]
env: {TZ: UTC}
jobs:
  fetch:
    run: ./fetch.sh
    labels: [linux]
  report:
    needs: fetch
    steps:
      - {name: render, run: ./render.sh}
      - {name: upload, run: ./upload.sh, env: {DEST: s3}}
    retries: 2
    backoff: {exponential: {base_secs: 1, max_secs: 30}}
    timeout: 5m
"""

BUILD_GRAPH = {
    "id": "build-graph",
    "name": "Build graph",
    "trigger": "push",
    "env": {"APP": "app"},
    "jobs": [
        {
            "id": "checkout",
            "name": "Checkout",
            "command": "git clone",
            "required_labels": ["linux"],
        },
        {"id": "test", "command": "make test", "depends_on": ["checkout"], "timeout_secs": 600},
        {
            "id": "lint",
            "command": "make lint",
            "depends_on": ["checkout"],
            "retry_policy": {"max_retries": 1, "backoff": "None"},
        },
        {
            "id": "build",
            "command": "make build",
            "depends_on": ["test", "lint"],
            "env": {"MODE": "release"},
            "retry_policy": {"max_retries": 2, "backoff": {"Fixed": {"delay_secs": 3}}},
        },
    ],
}


@pytest.fixture
def backend(database_url: str) -> str:
    return database_url.split(":", 1)[0]


def _start(
    start_server: Callable[..., Running],
    tmp_path: Path,
    files: dict[str, str] | None = None,
    **config: Any,
) -> Running:
    """A fresh server on fixed inputs: these workflow files and nothing else."""
    workflows = tmp_path / "golden-workflows"
    workflows.mkdir()
    for name, text in (files or {}).items():
        (workflows / name).write_text(text)
    return start_server(workflows_dir=workflows, public_url_override=PUBLIC_URL, **config)


def test_workflow_graph_surface(
    start_server: Callable[..., Running], tmp_path: Path, backend: str
) -> None:
    server = _start(start_server, tmp_path, {"nightly.yml": NIGHTLY_YML})
    with _golden(server, "workflow_graph", "workflow-graph REST API (seed 004)", backend) as t:
        admin = t.client("admin", server.token)
        anonymous = t.client("anonymous")

        t.note("health and credentials")
        anonymous.get("/healthz")
        anonymous.get("/api/workflows")
        t.client("bad token", "not-a-token").get("/api/workflows")

        t.note("workflows: list, create, new version, refusals")
        admin.get("/api/workflows")
        admin.post("/api/workflows", BUILD_GRAPH)
        admin.post("/api/workflows", BUILD_GRAPH)  # unchanged: the same version
        admin.post(
            "/api/workflows",
            {"id": "single", "name": "Single", "jobs": [{"id": "only", "command": "v1"}]},
        )
        admin.post(
            "/api/workflows",
            {"id": "single", "name": "Single", "jobs": [{"id": "only", "command": "v2"}]},
        )
        admin.post("/api/workflows", raw=b'{"name":', headers={"Content-Type": "application/json"})
        admin.post("/api/workflows", [])
        admin.post("/api/workflows", {"id": "bad", "name": "X", "jobs": [], "colour": "red"})
        admin.post(
            "/api/workflows",
            {
                "id": "bad",
                "name": "Cycle",
                "jobs": [
                    {"id": "a", "command": "true", "depends_on": ["b"]},
                    {"id": "b", "command": "true", "depends_on": ["a"]},
                ],
            },
        )
        admin.post(
            "/api/workflows",
            {"id": "bad", "name": "X", "jobs": [{"id": "a", "command": "x", "depends_on": ["zz"]}]},
        )
        admin.get("/api/workflows/bad/status")
        admin.get("/api/workflows/nope/status")
        admin.post("/api/workflows/nope/run")
        admin.post("/api/workflows/nope/cancel")

        t.note("a run of build-graph, driven by a REST worker")
        first_run = admin.post("/api/workflows/build-graph/run").json["run_id"]
        admin.get("/api/workflows/build-graph/status")
        admin.get(f"/api/runs/{first_run}")  # no worker yet: says why checkout waits
        admin.get("/api/workflows?limit=1")
        admin.get("/api/workflows?limit=2&offset=1")
        admin.get("/api/workflows?status=queued")
        admin.get("/api/workflows?status=running&limit=10&offset=0")
        admin.get("/api/workflows?limit=0")
        admin.get("/api/workflows?limit=ten")
        admin.get("/api/workflows?offset=-1")
        admin.get("/api/workflows?status=bogus")

        admin.post("/api/workers/register", {"worker_id": "w1", "labels": ["linux"]})
        admin.post("/api/workers/register", {"labels": ["linux"]})
        admin.post("/api/workers/register", {"worker_id": "w1", "labels": "linux"})
        admin.get("/api/workers")
        admin.post("/api/jobs/claim", {"worker_id": "w2", "labels": ["gpu"]})  # nothing for it
        admin.post("/api/jobs/claim", {"labels": ["linux"]})
        admin.post("/api/jobs/claim", {"worker_id": "w1", "lease_ttl_secs": "x"})
        admin.post("/api/jobs/claim", {"worker_id": "w1", "wait_secs": 61})
        admin.post(
            "/api/jobs/claim",
            {"worker_id": "w3", "labels": ["linux"], "capabilities": {"handlers": ["deploy"]}},
        )
        # A job is ready: the long poll answers at once.
        claimed = admin.post(
            "/api/jobs/claim",
            {"worker_id": "w1", "labels": ["linux"], "lease_ttl_secs": 30, "wait_secs": 5},
        ).json
        lease = claimed["lease"]["lease_id"]
        admin.post(f"/api/jobs/{lease}/heartbeat")
        admin.post(f"/api/jobs/{lease}/heartbeat", {"lease_ttl_secs": 60})
        admin.post(f"/api/jobs/{lease}/heartbeat", {"lease_ttl_secs": 0.5})
        admin.get("/api/workers")
        admin.post(
            f"/api/jobs/{lease}/logs",
            {"chunks": [chunk(0, "cloning\n"), chunk(1, "warning: shallow\n", "stderr")]},
        )
        admin.post(f"/api/jobs/{lease}/logs", {"chunks": [{"sequence": 2, "stream": "stdin"}]})
        admin.get("/api/jobs/build-graph/checkout/cancelled")
        admin.get("/api/jobs/build-graph/nope/cancelled")
        admin.get("/api/workflows?status=running")
        admin.post(f"/api/jobs/{lease}/complete", {"outputs": {"n": 1}})
        admin.post(f"/api/jobs/{lease}/complete", {"outputs": {"sha": "abc123"}})
        admin.post(f"/api/jobs/{lease}/complete", {"outputs": {"sha": "abc123"}})  # spent: 409
        admin.post(f"/api/jobs/{lease}/heartbeat")
        admin.post(f"/api/jobs/{UNKNOWN_ID}/fail", {"error": "x"})

        batch = admin.post(
            "/api/jobs/claim-batch", {"worker_id": "w1", "labels": ["linux"], "max_jobs": 5}
        ).json["assignments"]
        leases = {a["job"]["job_id"]: a["lease"]["lease_id"] for a in batch}
        admin.post(
            "/api/jobs/results",
            {
                "results": [
                    {"complete": {"lease_id": leases["test"], "outputs": {"coverage": "94%"}}},
                    {
                        "fail": {
                            "lease_id": leases["lint"],
                            "error": "exit code 1: lint failed",
                            "retryable": True,
                        }
                    },
                ]
            },
        )
        retry = admin.post("/api/jobs/claim", {"worker_id": "w1", "labels": ["linux"]}).json
        admin.post(f"/api/jobs/{retry['lease']['lease_id']}/complete", {"outputs": {}})
        build = admin.post("/api/jobs/claim", {"worker_id": "w1", "labels": ["linux"]}).json
        build_lease = build["lease"]["lease_id"]
        admin.post(f"/api/jobs/{build_lease}/logs", {"chunks": [chunk(0, "built\n")]})
        admin.post(f"/api/jobs/{build_lease}/complete", {"outputs": {"artifact": "dist/app.tgz"}})
        admin.post("/api/jobs/claim", {"worker_id": "w1", "labels": ["linux"]})
        admin.get("/api/workflows/build-graph/status")
        run_id = first_run

        t.note("logs: history and the SSE stream of a finished job")
        admin.get("/api/workflows/build-graph/jobs/checkout/logs")
        admin.get(f"/api/workflows/build-graph/jobs/checkout/logs?run_id={run_id}")
        admin.get("/api/workflows/build-graph/jobs/nope/logs")
        admin.get(stream_path("build-graph", "checkout"))
        first_id = admin.get("/api/workflows/build-graph/jobs/checkout/logs").json[0]["id"]
        admin.get(stream_path("build-graph", "checkout"), headers={"Last-Event-ID": str(first_id)})
        admin.get(stream_path("build-graph", "nope"))

        t.note("runs")
        admin.get(f"/api/runs/{run_id}")
        admin.get(f"/api/runs/{UNKNOWN_ID}")

        t.note("cancelling: the latest run of a workflow, and one run")
        admin.post("/api/workflows/build-graph/run")
        held = admin.post("/api/jobs/claim", {"worker_id": "w1", "labels": ["linux"]}).json
        held_lease = held["lease"]["lease_id"]
        admin.post("/api/workflows/build-graph/cancel")
        admin.post(f"/api/jobs/{held_lease}/heartbeat")
        admin.get("/api/jobs/build-graph/checkout/cancelled")
        admin.post(f"/api/jobs/{held_lease}/complete", {"outputs": {}})
        admin.post("/api/workflows/build-graph/cancel")  # over already: left as it is
        single_run = admin.post("/api/workflows/single/run").json["run_id"]
        admin.post(f"/api/runs/{single_run}/cancel")
        admin.post(f"/api/runs/{single_run}/cancel")
        admin.post(f"/api/runs/{UNKNOWN_ID}/cancel")

        t.note("a failure skips the jobs downstream")
        admin.post(
            "/api/workflows",
            {
                "id": "fragile",
                "name": "Fragile",
                "jobs": [
                    {"id": "first", "command": "false"},
                    {"id": "second", "command": "true", "depends_on": ["first"]},
                ],
            },
        )
        admin.post("/api/workflows/fragile/run")
        failing = admin.post("/api/jobs/claim", {"worker_id": "w1"}).json
        admin.post(f"/api/jobs/{failing['lease']['lease_id']}/fail", {"retryable": "yes"})
        admin.post(
            f"/api/jobs/{failing['lease']['lease_id']}/fail",
            {"error": "exit code 1", "retryable": False},
        )
        admin.get("/api/workflows/fragile/status")

        t.note("listing runs, page by page")
        admin.get("/api/runs")
        admin.get("/api/runs?workflow_id=build-graph")
        first_page = admin.get("/api/runs?page_size=2").json
        admin.get(f"/api/runs?page_size=2&page_token={first_page['next_page_token']}")
        admin.get("/api/runs?page_token=bogus")
        admin.get("/api/workers")
        admin.get("/api/workflows")

        t.note("what the router refuses")
        admin.request("PUT", "/api/workflows")
        admin.request("DELETE", "/api/jobs/claim")
        admin.get("/api/nothing/here")


def test_control_center_surface(
    start_server: Callable[..., Running], tmp_path: Path, backend: str
) -> None:
    server = _start(start_server, tmp_path)
    with _golden(
        server, "control_center", "sign-in, users, policies, audit (seed 002)", backend
    ) as t:
        admin = t.client("admin", server.token)
        anonymous = t.client("anonymous")

        t.note("sign-in, refresh, sign-out")
        signed_in = anonymous.post(
            "/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        )
        anonymous.post("/auth/login", {"username": ADMIN_USERNAME, "password": "wrong-password-1"})
        anonymous.post("/auth/login", {"username": "nobody", "password": "wrong-password-1"})
        anonymous.post("/auth/login", {"username": ADMIN_USERNAME})
        anonymous.post("/auth/login", raw=b"{", headers={"Content-Type": "application/json"})
        anonymous.post(
            "/auth/login",
            {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
            headers={"X-Organization-ID": "nowhere"},
        )
        access = signed_in.json["data"]["token"]
        refreshed = anonymous.post("/auth/refresh", {"token": access})
        anonymous.post("/auth/refresh", {"token": access})  # exchanged already: the session ends
        t.client("refreshed", refreshed.json["data"]["token"]).get("/users")
        second = anonymous.post(
            "/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        )
        pair = anonymous.post("/auth/refresh", {"token": second.json["data"]["refresh_token"]}).json
        anonymous.post("/auth/refresh", {})
        leaving = t.client("signed out", pair["data"]["token"])
        leaving.post("/auth/logout", {})
        leaving.post("/auth/logout", {})
        anonymous.post("/auth/logout", {})

        t.note("users")
        anonymous.get("/users")
        admin.get("/users")
        olivia = admin.post(
            "/users",
            {
                "username": "olivia",
                "email": "olivia@example.com",
                "password": PASSWORD,
                "roles": ["operator"],
            },
        ).json["data"]
        victor = admin.post(
            "/users",
            {"username": "victor", "password": PASSWORD, "roles": ["viewer"], "enabled": True},
        ).json["data"]
        admin.post("/users", {"username": "olivia", "password": PASSWORD})
        admin.post("/users", {"username": "weak", "password": "123"})
        admin.post("/users", {"username": "emperor", "password": PASSWORD, "roles": ["emperor"]})
        admin.post("/users", {"username": 5, "password": PASSWORD})
        admin.post("/users", raw=b"[]", headers={"Content-Type": "application/json"})
        admin.get("/users?role=viewer")
        admin.get("/users?enabled=true&limit=2&offset=1")
        admin.get("/users?limit=1")
        admin.get("/users?enabled=maybe")
        admin.request(
            "PUT",
            f"/users/{olivia['id']}",
            {"email": "o@example.com", "roles": ["admin", "operator"], "enabled": False},
        )
        admin.request("PUT", f"/users/{UNKNOWN_ID}", {"email": "x@example.com"})
        admin.get("/users?enabled=false")

        viewer_login = anonymous.post("/auth/login", {"username": "victor", "password": PASSWORD})
        viewer = t.client("victor (viewer)", viewer_login.json["data"]["token"])
        viewer.get("/users")
        viewer.post("/policies", {"name": "mine"})
        viewer.get("/audit/logs")
        viewer.post("/api/workflows/any/run")

        t.note("two-factor sign-in")
        enrolled = admin.post(f"/users/{victor['id']}/mfa", {})
        secret = parse_qs(urlsplit(enrolled.json["data"]["otpauth_uri"]).query)["secret"][0]
        anonymous.post("/auth/login", {"username": "victor", "password": PASSWORD})
        code = totp.code_at(secret, time.time())
        with_code = {"username": "victor", "password": PASSWORD, "mfa_code": code}
        anonymous.post("/auth/login", with_code)
        anonymous.post("/auth/login", with_code)  # a code is good once
        admin.request("DELETE", f"/users/{victor['id']}/mfa")
        admin.request("DELETE", f"/users/{UNKNOWN_ID}/mfa")
        anonymous.post("/auth/login", {"username": "victor", "password": PASSWORD})

        admin.request("DELETE", f"/users/{olivia['id']}")
        admin.request("DELETE", f"/users/{olivia['id']}")

        t.note("policies: Deny wins over the scopes")
        admin.get("/policies")
        policy = admin.post(
            "/policies",
            {
                "name": "no_runs_of_prod",
                "version": "1.0.0",
                "rules": [{"effect": "Deny", "resource": "workflows:prod-*", "action": ["run"]}],
            },
        ).json["data"]
        admin.post(
            "/policies",
            {"name": "odd", "rules": [{"effect": "Maybe", "resource": "*", "action": ["run"]}]},
        )
        admin.post("/policies", {"version": "1"})
        admin.post(
            "/api/workflows",
            {"id": "prod-deploy", "name": "Deploy", "jobs": [{"id": "ship", "command": "ship"}]},
        )
        admin.post("/api/workflows/prod-deploy/run")
        admin.request("PUT", f"/policies/{policy['id']}", {"name": "renamed", "enabled": False})
        admin.request("PUT", f"/policies/{UNKNOWN_ID}", {"name": "x"})
        admin.get("/policies")
        admin.post("/api/workflows/prod-deploy/run")

        t.note("the audit log, newest first")
        admin.get("/audit/logs?limit=5")
        admin.get("/audit/logs?action=user.create")
        admin.get(f"/audit/logs?user_id=user:{victor['id']}&limit=2&offset=1")
        admin.get("/audit/logs?resource=workflow:prod-deploy")
        admin.get("/audit/logs?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z")
        admin.get("/audit/logs?from=yesterday")
        admin.get("/audit/logs?limit=1&offset=1000")


def test_organizations_and_oauth2_surface(
    start_server: Callable[..., Running], tmp_path: Path, backend: str
) -> None:
    server = _start(start_server, tmp_path)
    with _golden(
        server,
        "organizations_oauth2",
        "organizations, admin users, OAuth2, discovery (seed 003)",
        backend,
    ) as t:
        admin = t.client("admin", server.token)
        anonymous = t.client("anonymous")

        t.note("organizations")
        anonymous.get("/api/v1/organizations")
        admin.get("/api/v1/organizations")
        new_org = {
            "id": "acme",
            "name": "Acme",
            "admin_username": "root",
            "admin_password": PASSWORD,
        }
        admin.post("/api/v1/organizations", new_org)
        admin.post("/api/v1/organizations", new_org)
        admin.post("/api/v1/organizations", {**new_org, "id": "half", "admin_password": "123"})
        admin.post("/api/v1/organizations", {"id": "Bad Id!", "name": "Bad"})
        admin.post("/api/v1/organizations", {"id": "nameless"})
        admin.get("/api/v1/organizations/acme")
        admin.get("/api/v1/organizations/half")
        admin.request("PUT", "/api/v1/organizations/acme", {"name": "Acme Corp"})
        admin.request("PUT", "/api/v1/organizations/nope", {"name": "Nope"})
        admin.post("/api/v1/organizations/acme/suspend", {})
        at_acme = {"X-Organization-ID": "acme"}
        root_login = {"username": "root", "password": PASSWORD}
        anonymous.post("/auth/login", root_login, headers=at_acme)
        admin.post("/api/v1/organizations/acme/activate", {})
        admin.post("/api/v1/organizations/nope/activate", {})
        root = t.client(
            "root@acme",
            anonymous.post("/auth/login", root_login, headers=at_acme).json["data"]["token"],
        )
        root.get("/api/v1/organizations")
        root.get("/api/v1/organizations/default")
        root.post("/api/v1/organizations", {"id": "mine", "name": "Mine"})
        root.get("/api/workflows")
        admin.get("/api/v1/organizations?limit=1&offset=1")

        t.note("admin users")
        admin.get("/api/v1/admin/users")
        dana = admin.post(
            "/api/v1/admin/users",
            {
                "username": "dana",
                "email": "dana@example.com",
                "password": PASSWORD,
                "roles": ["operator"],
            },
        ).json
        admin.post("/api/v1/admin/users", {"username": "dana", "password": PASSWORD})
        admin.post("/api/v1/admin/users", {"username": "weak", "password": "123"})
        admin.get(f"/api/v1/admin/users/{dana['id']}")
        admin.get("/api/v1/admin/users/nobody")
        admin.request("PUT", f"/api/v1/admin/users/{dana['id']}", {"email": "d@example.com"})
        admin.request("PUT", f"/api/v1/admin/users/{dana['id']}/status", {"enabled": False})
        anonymous.post("/auth/login", {"username": "dana", "password": PASSWORD})
        admin.request("PUT", f"/api/v1/admin/users/{dana['id']}/status", {"enabled": True})
        admin.request("DELETE", f"/api/v1/admin/users/{dana['id']}")
        admin.get("/api/v1/admin/users")
        admin.get("/api/v1/admin/users?include_deleted=true")
        admin.post(f"/api/v1/admin/users/{dana['id']}/restore", {})
        admin.post("/api/v1/admin/users/nobody/restore", {})
        operator = t.client(
            "dana (operator)",
            anonymous.post("/auth/login", {"username": "dana", "password": PASSWORD}).json["data"][
                "token"
            ],
        )
        operator.get("/api/v1/admin/users")
        operator.get("/api/v1/oauth2/clients")

        t.note("scopes and personal access tokens")
        anonymous.get("/api/v1/oauth2/scopes")
        anonymous.get("/api/v1/oauth2/tokens")
        created = admin.post(
            "/api/v1/oauth2/tokens", {"name": "script", "scopes": ["workflows:read"]}
        )
        admin.post("/api/v1/oauth2/tokens", {"name": "forever", "expires_in_days": 0})
        admin.post("/api/v1/oauth2/tokens", {"scopes": ["workflows:read"]})
        operator.post("/api/v1/oauth2/tokens", {"name": "ops", "scopes": ["admin:orgs"]})
        admin.get("/api/v1/oauth2/tokens")
        pat = t.client("personal access token", created.json["access_token"])
        pat.get("/api/workflows")
        pat.get("/api/v1/oauth2/tokens")
        pat.get("/users")
        pat.get("/api/machine/check")
        pat.get("/api/workflows", headers={"X-Organization-ID": "default"})
        pat.get("/api/workflows", headers={"X-Organization-ID": "acme"})
        pat.post("/api/workflows/any/run", headers={"X-Organization-ID": "default"})
        token_id = created.json["token"]["id"]
        admin.request("DELETE", f"/api/v1/oauth2/tokens/{token_id}")
        admin.request("DELETE", f"/api/v1/oauth2/tokens/{token_id}")
        pat.get("/api/workflows", headers={"X-Organization-ID": "default"})

        t.note("OAuth2 clients and the client credentials grant")
        erp = admin.post(
            "/api/v1/oauth2/clients",
            {"name": "erp-sync", "scopes": ["workflows:read", "workflows:run"]},
        ).json
        spa = admin.post(
            "/api/v1/oauth2/clients", {"name": "spa", "public": True, "redirect_uris": [REDIRECT]}
        ).json["client"]
        admin.post("/api/v1/oauth2/clients", {"name": ""})
        admin.post("/api/v1/oauth2/clients", {"name": "x", "public": True})
        admin.get("/api/v1/oauth2/clients")
        client_id, secret = erp["client"]["client_id"], erp["client_secret"]
        credentials = {
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
        }
        issued = _form(
            anonymous, "/api/v1/oauth2/token", {**credentials, "scope": "workflows:read"}
        )
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        _form(
            anonymous,
            "/api/v1/oauth2/token",
            {"grant_type": "client_credentials"},
            Authorization=f"Basic {basic}",
        )
        _form(
            anonymous, "/api/v1/oauth2/token", {**credentials, "scope": "workflows:read admin:orgs"}
        )
        _form(anonymous, "/api/v1/oauth2/token", {**credentials, "client_secret": "nope"})
        _form(anonymous, "/api/v1/oauth2/token", {"grant_type": "password"})
        _form(anonymous, "/api/v1/oauth2/token", {})
        anonymous.post("/api/v1/oauth2/token", {"grant_type": "client_credentials"})
        client_token = issued.json["access_token"]
        t.client("client token", client_token).get("/api/workflows")
        t.client("client token", client_token).post("/api/workflows/any/run")

        t.note("the authorization code grant with PKCE")
        authorize = {
            "response_type": "code",
            "client_id": spa["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "workflows:read",
            "state": "xyz",
            "code_challenge": CHALLENGE,
            "code_challenge_method": "S256",
        }
        first = admin.get(f"/api/v1/oauth2/authorize?{urlencode(authorize)}").json["code"]
        second = admin.post("/api/v1/oauth2/authorize", authorize).json["code"]
        admin.get(
            f"/api/v1/oauth2/authorize?{urlencode({**authorize, 'redirect_uri': 'https://evil.example.com/'})}"
        )
        admin.get(
            f"/api/v1/oauth2/authorize?{urlencode({**authorize, 'code_challenge_method': 'plain'})}"
        )
        anonymous.get(f"/api/v1/oauth2/authorize?{urlencode(authorize)}")
        exchange = {
            "grant_type": "authorization_code",
            "client_id": spa["client_id"],
            "redirect_uri": REDIRECT,
        }
        _form(
            anonymous,
            "/api/v1/oauth2/token",
            {**exchange, "code": first, "code_verifier": "x" * 43},
        )
        granted = _form(
            anonymous,
            "/api/v1/oauth2/token",
            {**exchange, "code": second, "code_verifier": VERIFIER},
        )
        _form(
            anonymous,
            "/api/v1/oauth2/token",
            {**exchange, "code": second, "code_verifier": VERIFIER},
        )
        t.client("authorized app", granted.json["access_token"]).get("/api/workflows")
        _form(
            anonymous,
            "/api/v1/oauth2/token",
            {
                "grant_type": "refresh_token",
                "client_id": spa["client_id"],
                "refresh_token": "trl_rt_unknown",
            },
        )

        t.note("revocation and introspection")
        _form(admin, "/api/v1/oauth2/introspect", {"token": client_token})
        _form(admin, "/api/v1/oauth2/introspect", {"token": server.token})
        _form(admin, "/api/v1/oauth2/introspect", {"token": "nope"})
        _form(anonymous, "/api/v1/oauth2/introspect", {"token": server.token})
        _form(root, "/api/v1/oauth2/introspect", {"token": server.token})
        _form(
            anonymous,
            "/api/v1/oauth2/revoke",
            {"token": client_token, "client_id": client_id, "client_secret": secret},
        )
        _form(
            anonymous,
            "/api/v1/oauth2/revoke",
            {"token": "not-a-token", "client_id": client_id, "client_secret": secret},
        )
        _form(
            anonymous,
            "/api/v1/oauth2/revoke",
            {"token": client_token, "client_id": client_id, "client_secret": "nope"},
        )
        _form(admin, "/api/v1/oauth2/introspect", {"token": client_token})
        admin.request("DELETE", f"/api/v1/oauth2/clients/{client_id}")
        admin.request("DELETE", f"/api/v1/oauth2/clients/{client_id}")
        _form(anonymous, "/api/v1/oauth2/token", {**credentials, "scope": "workflows:read"})

        t.note("discovery")
        anonymous.get("/.well-known/openid-configuration")
        anonymous.get("/.well-known/oauth-authorization-server")
        anonymous.get("/.well-known/jwks.json")


def test_machine_users_surface(
    start_server: Callable[..., Running], tmp_path: Path, backend: str
) -> None:
    server = _start(start_server, tmp_path)
    with _golden(server, "machine_users", "machine users (seed 000)", backend) as t:
        admin = t.client("admin", server.token)
        anonymous = t.client("anonymous")

        t.note("machine users")
        anonymous.get("/api/machine-users")
        admin.get("/api/machine-users")
        created = admin.post(
            "/api/machine-users", {"username": "payment-service", "name": "Payment Service"}
        ).json
        admin.post("/api/machine-users", {"username": "payment-service"})
        admin.post("/api/machine-users", {"name": "No username"})
        admin.post("/api/machine-users", {"username": "reporting"})
        admin.get("/api/machine-users")
        token = created["generatedToken"]
        machine_id = created["machineUser"]["id"]

        t.note("validation, for a proxy")
        anonymous.post(
            "/api/validate-machine-user", {"username": "payment-service", "token": token}
        )
        anonymous.post(
            "/api/validate-machine-user", {"username": "payment-service", "token": _altered(token)}
        )
        anonymous.post("/api/validate-machine-user", {"username": "reporting", "token": token})
        anonymous.post(
            "/api/validate-machine-user", {"username": "nobody", "token": "muser_abc123"}
        )
        anonymous.post("/api/validate-machine-user", {"username": "payment-service"})

        t.note("the calling machine user")
        machine = t.client("payment-service", token)
        machine.get("/api/machine/check")
        admin.get("/api/machine/check")
        anonymous.get("/api/machine/check")
        t.client("bad token", "muser_abc123").get("/api/machine/check")
        backend_body = {
            "name": "Payment Service",
            "callbackUrl": "https://payment.example.com/triggers/callback",
            "description": "Handles payment processing triggers",
        }
        machine.post("/api/machine/register-backend", backend_body)
        machine.post("/api/machine/register-backend", backend_body)
        machine.post(
            "/api/machine/register-backend",
            {
                "name": "Payment Service",
                "callbackUrl": "https://payment.example.com/v2",
                "replace": True,
            },
        )
        machine.post(
            "/api/machine/register-backend", {"name": "x", "callbackUrl": "ftp://example.com/"}
        )
        machine.post(
            "/api/machine/register-backend",
            {"name": "x", "callbackUrl": "https://u:p@example.com/"},
        )
        machine.post("/api/machine/register-backend", {"callbackUrl": "https://example.com/"})
        admin.post("/api/machine/register-backend", backend_body)
        machine.post("/api/jobs/claim", {"worker_id": "payment-worker"})
        machine.get("/users")

        t.note("disabling a machine user")
        admin.post(f"/api/machine-users/{machine_id}/enabled", {"enabled": False})
        admin.post(f"/api/machine-users/{UNKNOWN_ID}/enabled", {"enabled": False})
        anonymous.post(
            "/api/validate-machine-user", {"username": "payment-service", "token": token}
        )
        machine.get("/api/machine/check")
        admin.post(f"/api/machine-users/{machine_id}/enabled", {"enabled": True})
        machine.get("/api/machine/check")
        admin.get("/api/machine-users")


def test_rate_limits(start_server: Callable[..., Running], tmp_path: Path, backend: str) -> None:
    limits = {**NO_LIMITS, "auth": Limit(3, 60.0), "general": Limit(4, 60.0)}
    server = _start(start_server, tmp_path, rate_limits=limits)
    with _golden(
        server, "rate_limits", "rate limits (auth 3/min per address, general 4/min)", backend
    ) as t:
        admin = t.client("admin", server.token)
        anonymous = t.client("anonymous")

        # The fixture's own sign-in at start (over gRPC) spent one of the three.
        t.note("sign-in and token exchange share the auth budget of an address")
        for _ in range(3):
            anonymous.post(
                "/auth/login", {"username": ADMIN_USERNAME, "password": "wrong-password-1"}
            )
        anonymous.post("/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        anonymous.post("/auth/refresh", {"token": server.token})
        _form(anonymous, "/api/v1/oauth2/token", {"grant_type": "client_credentials"})
        anonymous.get("/.well-known/jwks.json")

        t.note("the general budget of a principal, on each surface")
        for _ in range(4):
            admin.get("/api/workflows")
        admin.get("/api/workflows")
        admin.get("/users")
        admin.get("/api/v1/organizations")
        admin.get("/api/machine-users")
        admin.post("/api/jobs/claim", {"worker_id": "w1"})  # the worker budget is another


@contextmanager
def _golden(server: Running, scenario: str, title: str, backend: str) -> Iterator[Transcript]:
    with golden(server.rest_url, scenario, title, backend, _WRITTEN, CORS) as transcript:
        yield transcript


def _form(client: RecordingRest, path: str, fields: dict[str, str], **headers: str) -> Reply:
    return client.request(
        "POST",
        path,
        raw=urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


def _altered(token: str) -> str:
    """``token`` with its last character changed (never to itself)."""
    return token[:-1] + ("y" if token.endswith("x") else "x")
