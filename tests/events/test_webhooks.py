"""Webhooks and backend callbacks, delivered from the event log to a receiver
on 127.0.0.1 (allow-listed), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import sqlalchemy
from conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Running, login, wait_until
from engine_helpers import (
    RPC_TIMEOUT,
    assert_status,
    complete,
    create_workflow,
    job,
    must_claim,
    rpc_error,
    start_run,
    uid,
)
from google.protobuf import struct_pb2
from rest_helpers import assert_error, rest
from sdk_helpers import PYTHON, Proc, client_for, trellis
from webhook_helpers import Received, always, key_of, receiving, verify

from trellis.server.cli import main
from trellis.server.events._webhooks import _wanted_by_backend
from trellis.v1 import (
    events_pb2,
    machine_pb2,
    machine_pb2_grpc,
    runs_pb2,
    topics_pb2,
    topics_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from trellis.worker_sdk import authorized_channel

FAST = {
    "egress_allow": "127.0.0.1/32",
    "webhook_retry_base_ms": 20,
    "webhook_retry_cap_ms": 100,
    "webhook_lease_secs": 5.0,
    "poll_interval_secs": 0.5,
}
DELIVERED = webhooks_pb2.WEBHOOK_DELIVERY_STATUS_DELIVERED
RETRYING = webhooks_pb2.WEBHOOK_DELIVERY_STATUS_RETRYING
FAILED = webhooks_pb2.WEBHOOK_DELIVERY_STATUS_FAILED


def _hooks(server: Running) -> webhooks_pb2_grpc.WebhookServiceStub:
    return webhooks_pb2_grpc.WebhookServiceStub(server.channel)


def _subscribe(server: Running, url: str, *types: str) -> webhooks_pb2.CreatedWebhook:
    request = webhooks_pb2.CreateWebhookRequest(url=url, event_types=list(types))
    created: webhooks_pb2.CreatedWebhook = _hooks(server).CreateWebhook(
        request, timeout=RPC_TIMEOUT
    )
    return created


def _deliveries(server: Running, webhook_id: str) -> list[webhooks_pb2.WebhookDelivery]:
    page = _hooks(server).ListWebhookDeliveries(
        webhooks_pb2.ListWebhookDeliveriesRequest(webhook_id=webhook_id), timeout=RPC_TIMEOUT
    )
    return list(page.deliveries)


def _wait_deliveries(
    server: Running, webhook_id: str, done: Callable[[list[webhooks_pb2.WebhookDelivery]], bool]
) -> list[webhooks_pb2.WebhookDelivery]:
    found: list[webhooks_pb2.WebhookDelivery] = []

    def check() -> bool:
        found[:] = _deliveries(server, webhook_id)
        return done(found)

    wait_until(check)
    return found


def _one_job_run(server: Running) -> tuple[str, str]:
    workflow_id = create_workflow(server, [job("a")])
    return workflow_id, start_run(server, workflow_id)


def test_events_arrive_signed_in_order(start_server: Callable[..., Running]) -> None:
    server = start_server(**FAST)
    with receiving() as receiver:
        created = _subscribe(server, receiver.url, "run.created", "JOB_SUCCEEDED", "run.finished")
        assert created.secret.startswith("whsec_")
        assert created.secret not in str(created.webhook)
        # A fingerprint, none of the secret's own characters.
        digest = hashlib.sha256(created.secret.encode()).hexdigest()
        assert created.webhook.secret_hint == "sha256:" + digest[:8]
        workflow_id, run_id = _one_job_run(server)
        lease = must_claim(server)
        complete(server, lease.lease.lease_id)
        got = receiver.wait_for(3)
        payloads = [verify(created.secret, r) for r in got]
        assert [p["event"] for p in payloads] == ["run.created", "job.succeeded", "run.finished"]
        assert {p["data"]["run_id"] for p in payloads} == {run_id}
        assert payloads[1]["data"]["job_id"] == "a"
        assert payloads[0]["data"]["workflow_id"] == workflow_id
        cursors = [p["data"]["cursor"] for p in payloads]
        assert cursors == sorted(cursors) and len(set(cursors)) == 3
        assert payloads[0]["timestamp"].endswith("Z")
        assert len({r.webhook_id for r in got}) == 3
        done = _wait_deliveries(server, created.webhook.id, lambda d: len(d) == 3)
        assert [d.status for d in done] == [DELIVERED] * 3
        assert [d.delivery_id for d in reversed(done)] == [r.webhook_id for r in got]
        assert {(d.attempt, d.status_code, d.answer) for d in done} == {(1, 200, "ok")}
        # The subscription's position is its last delivered event.
        hook = _hooks(server).GetWebhook(
            webhooks_pb2.GetWebhookRequest(webhook_id=created.webhook.id), timeout=RPC_TIMEOUT
        )
        assert hook.cursor == cursors[-1]


def test_a_new_subscription_hears_only_of_what_follows_it(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST)
    _, old_run = _one_job_run(server)
    api = rest(server)

    def readable() -> bool:
        # On PostgreSQL, once every older transaction (of any database) ended.
        shown = api.ok(api.get("/api/events")).get("events", [])
        return any(e.get("run_id") == old_run for e in shown)

    wait_until(readable)
    # "now" is a position (on PostgreSQL, one between events) a next read accepts.
    now = api.ok(api.get("/api/events?after_cursor=now"))["next_cursor"]
    assert api.ok(api.get(f"/api/events?after_cursor={now}")).get("events", []) == []
    with receiving() as receiver:
        created = _subscribe(server, receiver.url, "run.created")
        _, new_run = _one_job_run(server)
        _wait_deliveries(server, created.webhook.id, lambda d: len(d) >= 1)
        assert [r.json["data"]["run_id"] for r in receiver.requests] == [new_run]
        assert old_run != new_run


def test_a_cursor_stays_valid_when_its_event_was_deleted(
    start_server: Callable[..., Running],
) -> None:
    # Only a cursor older than the oldest event kept is one the log has lost.
    server = start_server(**FAST)
    _one_job_run(server)
    _one_job_run(server)
    api = rest(server)
    listed: list[dict[str, Any]] = []

    def three() -> bool:
        listed[:] = api.ok(api.get("/api/events")).get("events", [])
        return len(listed) >= 3

    wait_until(three)
    middle = listed[1]["cursor"]
    with server.server.db.write() as conn:
        conn.execute(
            sqlalchemy.text("DELETE FROM events WHERE id = :id"), {"id": int(middle[16:], 16)}
        )
    after = api.ok(api.get(f"/api/events?after_cursor={middle}"))["events"]
    assert [e["cursor"] for e in after] == [e["cursor"] for e in listed[2:]]
    with server.server.db.write() as conn:
        conn.execute(
            sqlalchemy.text("DELETE FROM events WHERE id = :id"),
            {"id": int(listed[0]["cursor"][16:], 16)},
        )
    # Older than the oldest kept: events after it may be gone.
    assert_error(
        api.get(f"/api/events?after_cursor={listed[0]['cursor']}"),
        400,
        "FAILED_PRECONDITION",
        "pruned",
    )


def test_failed_attempts_are_retried_with_the_same_id(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST)
    answers = [500, 500, 200]
    with receiving(lambda _r, n: (answers[min(n, 2)], b"busy" if n < 2 else b"fine")) as receiver:
        created = _subscribe(server, receiver.url, "run.created")
        _one_job_run(server)
        got = receiver.wait_for(3)
        assert len({r.webhook_id for r in got}) == 1
        for request in got:
            verify(created.secret, request)
        done = _wait_deliveries(server, created.webhook.id, lambda d: len(d) == 3)
        # Newest first.
        assert [(d.attempt, d.status, d.status_code, d.answer) for d in done] == [
            (3, DELIVERED, 200, "fine"),
            (2, RETRYING, 500, "busy"),
            (1, RETRYING, 500, "busy"),
        ]
        assert all(d.next_attempt_at.ToMilliseconds() for d in done[1:])
        assert not done[0].HasField("next_attempt_at") or not done[0].next_attempt_at.seconds
        retrying = _hooks(server).ListWebhookDeliveries(
            webhooks_pb2.ListWebhookDeliveriesRequest(
                webhook_id=created.webhook.id, status=RETRYING
            ),
            timeout=RPC_TIMEOUT,
        )
        assert [d.attempt for d in retrying.deliveries] == [2, 1]


def test_an_event_fails_finally_after_the_max_age_and_the_next_goes_on(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST, webhook_max_age_secs=0.3)
    first: list[str] = []

    def answer(request: Received, n: int) -> tuple[int, bytes]:
        if not first:
            first.append(request.webhook_id)
        return (503, b"down") if request.webhook_id == first[0] else (200, b"ok")

    with receiving(answer) as receiver:
        created = _subscribe(server, receiver.url, "run.created")
        _, run_1 = _one_job_run(server)
        _, run_2 = _one_job_run(server)

        def second_delivered() -> bool:
            return any(r.json["data"]["run_id"] == run_2 for r in receiver.requests)

        wait_until(second_delivered)
        order = [r.json["data"]["run_id"] for r in receiver.requests]
        # Head of line: the second event only once the first was given up.
        assert order[-1] == run_2 and set(order[:-1]) == {run_1} and len(order) >= 2
        done = _wait_deliveries(server, created.webhook.id, lambda d: d[0].status == DELIVERED)
        statuses = [d.status for d in reversed(done)]
        assert statuses[-2:] == [FAILED, DELIVERED]
        assert set(statuses[:-2]) <= {RETRYING}
        failed = done[1]
        assert failed.status_code == 503 and failed.answer == "down"
        assert failed.attempt == len(done) - 1 and failed.delivery_id == first[0]


def test_refused_destinations_are_recorded_and_never_contacted(
    start_server: Callable[..., Running],
) -> None:
    # 127.0.0.1 is not allow-listed here.
    server = start_server(egress_allow="", webhook_retry_base_ms=20, webhook_retry_cap_ms=50)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        port = listener.getsockname()[1]
        targets = {
            "loopback": f"http://127.0.0.1:{port}/hook",
            "name": f"http://localhost:{port}/hook",
            "private": "http://10.0.0.1/hook",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "ipv6": f"http://[::1]:{port}/hook",
        }
        hooks = {name: _subscribe(server, url, "run.created") for name, url in targets.items()}
        _one_job_run(server)
        for name, created in hooks.items():
            done = _wait_deliveries(server, created.webhook.id, lambda d: len(d) >= 1)
            last = done[-1]
            assert last.status == RETRYING and last.status_code == 0, name
            assert "refused" in last.error, (name, last.error)
        assert "private address" in _deliveries(server, hooks["private"].webhook.id)[-1].error
        assert "metadata" in _deliveries(server, hooks["metadata"].webhook.id)[-1].error
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_subscriptions_over_rest(start_server: Callable[..., Running]) -> None:
    server = start_server(**FAST)
    api = rest(server)
    with receiving() as receiver:
        made = api.ok(
            api.post("/api/webhooks", {"url": receiver.url, "event_types": ["task.completed"]}),
            201,
        )
        hook_id = made["webhook"]["id"]
        assert made["secret"].startswith("whsec_")
        assert made["webhook"]["event_types"] == ["job.succeeded"]
        assert made["webhook"]["enabled"] is True and made["webhook"]["source"] == "api"
        listed = api.ok(api.get("/api/webhooks"))["webhooks"]
        assert [h["id"] for h in listed] == [hook_id]
        assert "secret" not in listed[0]
        off = api.ok(api.request("PATCH", f"/api/webhooks/{hook_id}", {"enabled": False}))
        assert off["enabled"] is False and off["event_types"] == ["job.succeeded"]
        every = {"event_types": ["*"], "enabled": True}
        changed = api.ok(api.request("PATCH", f"/api/webhooks/{hook_id}", every))
        assert changed["enabled"] is True and changed.get("event_types", []) == []
        assert api.ok(api.get(f"/api/webhooks/{hook_id}/deliveries")).get("deliveries", []) == []
        assert_error(
            api.post("/api/webhooks", {"url": "ftp://example.com/x"}),
            400,
            "INVALID_ARGUMENT",
            "url",
        )
        assert_error(
            api.post(
                "/api/webhooks", {"url": "http://example.com/", "event_types": ["job.exploded"]}
            ),
            400,
            "INVALID_ARGUMENT",
            "event_types",
            "job.exploded",
        )
        assert_error(api.get("/api/webhooks/wh_nope"), 404, "NOT_FOUND", "wh_nope")
        assert_error(
            api.get("/api/webhooks/wh_nope/deliveries?status=WEBHOOK_DELIVERY_STATUS_FAILED"),
            404,
            "NOT_FOUND",
        )
        assert api.request("DELETE", f"/api/webhooks/{hook_id}").status == 200
        assert_error(api.get(f"/api/webhooks/{hook_id}"), 404, "NOT_FOUND")
        # Nothing stored half-way by the refusals.
        assert api.ok(api.get("/api/webhooks")).get("webhooks", []) == []


def test_webhooks_need_their_scopes(start_server: Callable[..., Running]) -> None:
    server = start_server(**FAST)
    token = _machine_user(server, uid("mu"))
    stub = webhooks_pb2_grpc.WebhookServiceStub(server.channel_with(token))
    error = rpc_error(stub.ListWebhooks, webhooks_pb2.ListWebhooksRequest())
    assert_status(error, grpc.StatusCode.PERMISSION_DENIED)


def _machine_user(server: Running, username: str) -> str:
    stub = machine_pb2_grpc.MachineUserServiceStub(server.channel)
    made = stub.CreateMachineUser(
        machine_pb2.CreateMachineUserRequest(username=username), timeout=RPC_TIMEOUT
    )
    return str(made.generated_token)


def test_backends_hear_of_the_runs_their_machine_user_started(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST)
    token = _machine_user(server, uid("mu"))
    machine = server.channel_with(token)
    with receiving() as receiver:
        backend = machine_pb2_grpc.MachineUserServiceStub(machine).RegisterBackend(
            machine_pb2.RegisterBackendRequest(name="payments", callback_url=receiver.url),
            timeout=RPC_TIMEOUT,
        )
        secret = (
            webhooks_pb2_grpc.WebhookServiceStub(machine)
            .GetBackendCallbackSecret(
                webhooks_pb2.GetBackendCallbackSecretRequest(backend_id=backend.id),
                timeout=RPC_TIMEOUT,
            )
            .secret
        )
        assert secret.startswith("whsec_")
        # A run of the administrator's first: no callback for it.
        workflow_id = create_workflow(server, [job("a")])
        start_run(server, workflow_id)
        complete(server, must_claim(server).lease.lease_id)
        mine = workflows_pb2_grpc.WorkflowServiceStub(machine).RunWorkflow(
            workflows_pb2.RunWorkflowRequest(workflow_id=workflow_id), timeout=RPC_TIMEOUT
        )
        complete(server, must_claim(server).lease.lease_id)
        (got,) = receiver.wait_for(1)
        payload = verify(secret, got)
        assert payload["event"] == "run.finished"
        assert payload["data"]["run_id"] == mine.run_id
        assert payload["data"]["details"]["created_by"].startswith("machine:")
        # The backend's subscription is listed, with its record of attempts.
        hooks = _hooks(server).ListWebhooks(webhooks_pb2.ListWebhooksRequest(), timeout=RPC_TIMEOUT)
        (implicit,) = [h for h in hooks.webhooks if h.source == "backend"]
        assert implicit.backend_id == backend.id and implicit.url == receiver.url
        done = _wait_deliveries(server, implicit.id, lambda d: len(d) == 1)
        assert done[0].status == DELIVERED and done[0].delivery_id == got.webhook_id
        # Another machine user may not read the secret.
        other = webhooks_pb2_grpc.WebhookServiceStub(
            server.channel_with(_machine_user(server, uid("mu")))
        )
        error = rpc_error(
            other.GetBackendCallbackSecret,
            webhooks_pb2.GetBackendCallbackSecretRequest(backend_id=backend.id),
        )
        assert_status(error, grpc.StatusCode.NOT_FOUND)


def test_backends_hear_of_the_runs_a_trigger_of_their_organization_starts(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST)
    machine = server.channel_with(_machine_user(server, uid("mu")))
    area = uid("area")
    source = f'name: Sub\non: {{topic: ["mHv1.0/{area}/#"]}}\njobs:\n  a: {{run: echo}}\n'
    workflow_id = uid()
    server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(source=source, workflow_id=workflow_id),
        timeout=RPC_TIMEOUT,
    )
    with receiving() as receiver:
        backend = machine_pb2_grpc.MachineUserServiceStub(machine).RegisterBackend(
            machine_pb2.RegisterBackendRequest(name="plant", callback_url=receiver.url),
            timeout=RPC_TIMEOUT,
        )
        secret = (
            webhooks_pb2_grpc.WebhookServiceStub(machine)
            .GetBackendCallbackSecret(
                webhooks_pb2.GetBackendCallbackSecretRequest(backend_id=backend.id),
                timeout=RPC_TIMEOUT,
            )
            .secret
        )
        # The administrator publishes; the run the trigger starts is the
        # organization's, so its backend hears of it, signed with its secret.
        published = topics_pb2_grpc.TopicServiceStub(server.channel).Publish(
            topics_pb2.PublishRequest(
                topic=f"mHv1.0/{area}/line-1", value=struct_pb2.Value(number_value=7)
            ),
            timeout=RPC_TIMEOUT,
        )
        (run,) = published.runs
        (got,) = receiver.wait_for(1)
        payload = verify(secret, got)
        assert payload["event"] == "run.created"
        assert payload["data"]["run_id"] == run.run_id
        assert payload["data"]["details"]["trigger"] == f"topic:mHv1.0/{area}/line-1"


def _config_file(tmp_path: Path, url: str, secret: str, events: list[str]) -> Path:
    path = tmp_path / "trellis.toml"
    quoted = ", ".join(f'"{e}"' for e in events)
    path.write_text(
        "[webhooks]\nenabled = true\nendpoints = [\n"
        f'  {{ url = "{url}", events = [{quoted}], secret = "{secret}" }},\n]\n'
    )
    return path


def test_subscriptions_from_the_configuration_file(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    with receiving() as receiver:
        config = _config_file(tmp_path, receiver.url, "webhook-secret", ["batch.completed"])
        server = start_server(**FAST, webhooks_config=config)
        server.stop()
        server = start_server(**FAST, webhooks_config=config)  # loaded again: no duplicate
        hooks = _hooks(server).ListWebhooks(webhooks_pb2.ListWebhooksRequest(), timeout=RPC_TIMEOUT)
        (hook,) = hooks.webhooks
        assert hook.source == "config" and list(hook.event_types) == ["run.finished"]
        _, run_id = _one_job_run(server)
        complete(server, must_claim(server).lease.lease_id)
        (got,) = receiver.wait_for(1)
        assert key_of("webhook-secret") == b"webhook-secret"
        payload = verify("webhook-secret", got)
        assert payload["event"] == "run.finished" and payload["data"]["run_id"] == run_id


def test_a_kill_between_commit_and_delivery_delivers_after_restart(
    start_server: Callable[..., Running], database_url: str, tmp_path: Path
) -> None:
    with receiving() as receiver:
        config = _config_file(tmp_path, receiver.url, "whsec_" + "A" * 43 + "=", ["run.created"])
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": "0",
            "GRPC_PORT": "0",
            "WORKFLOWS_DIR": "",
            "TRELLIS_ADMIN_USERNAME": ADMIN_USERNAME,
            "TRELLIS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "EGRESS_ALLOW": "127.0.0.1/32",
            "WEBHOOKS_CONFIG": str(config),
            "WEBHOOK_LEASE_SECS": "1",
            "WEBHOOK_RETRY_BASE_MS": "20",
        }
        receiver.release.clear()  # hold the first answer back
        proc = Proc([PYTHON, "-m", "trellis.server.cli", "serve"], env=env)
        try:
            line = proc.expect_stdout("trellis: gRPC on")
            target = line.split("gRPC on ", 1)[1].split(",", 1)[0].strip()
            channel = grpc.insecure_channel(target)
            token = login(channel, ADMIN_USERNAME, ADMIN_PASSWORD)
            workflows = workflows_pb2_grpc.WorkflowServiceStub(authorized_channel(channel, token))
            workflows.CreateWorkflow(
                workflows_pb2.CreateWorkflowRequest(
                    workflow=workflows_pb2.Workflow(id="killed", name="K", jobs=[job("a")])
                ),
                timeout=RPC_TIMEOUT,
            )
            run = workflows.RunWorkflow(
                workflows_pb2.RunWorkflowRequest(workflow_id="killed"), timeout=RPC_TIMEOUT
            )
            assert run.state == runs_pb2.RUN_STATE_RUNNING
            (first,) = receiver.wait_for(1)  # sent, its answer held back
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            channel.close()
        finally:
            proc.kill()
        receiver.release.set()
        # The same database and configuration: the event goes out again.
        server = start_server(**FAST, webhooks_config=config)
        got = receiver.wait_for(2)
        assert {r.webhook_id for r in got} == {first.webhook_id}
        assert all(r.json["data"]["run_id"] == run.run_id for r in got)
        (hook,) = (
            _hooks(server)
            .ListWebhooks(webhooks_pb2.ListWebhooksRequest(), timeout=RPC_TIMEOUT)
            .webhooks
        )
        done = _wait_deliveries(server, hook.id, lambda d: len(d) == 1)
        assert done[0].status == DELIVERED and done[0].delivery_id == first.webhook_id


def test_two_replicas_deliver_each_attempt_once(start_server: Callable[..., Running]) -> None:
    one = start_server(**FAST)
    two = start_server(**FAST)
    with receiving() as receiver:
        created = _subscribe(one, receiver.url, "run.created")
        workflow_id = create_workflow(one, [job("a")])
        runs = [start_run(one if i % 2 else two, workflow_id) for i in range(12)]
        _wait_deliveries(two, created.webhook.id, lambda d: len(d) == len(runs))
        seen = Counter(r.webhook_id for r in receiver.requests)
        assert len(seen) == len(runs) and set(seen.values()) == {1}
        assert [r.json["data"]["run_id"] for r in receiver.requests] == runs
        done = _deliveries(one, created.webhook.id)
        assert {d.status for d in done} == {DELIVERED} and len(done) == len(runs)


def test_the_cli_manages_subscriptions(
    start_server: Callable[..., Running], capsys: pytest.CaptureFixture[str]
) -> None:
    server = start_server(**FAST)
    target = ["--target", server.grpc_target]

    def cli(*args: str) -> str:
        assert main([*args, *target]) == 0, capsys.readouterr().err
        return capsys.readouterr().out

    with receiving(always(200)) as receiver:
        # One run as a separate process, as it is typed (TRELLIS_TOKEN is set).
        made = trellis("webhook", "create", receiver.url, "--event", "run.created", *target)
        assert made.returncode == 0, made.stderr
        hook_id, secret = made.stdout.split()
        _one_job_run(server)
        (got,) = receiver.wait_for(1)
        verify(secret, got)
        listed = cli("webhook", "list")
        assert hook_id in listed and "run.created" in listed
        _wait_deliveries(server, hook_id, lambda d: len(d) == 1)
        shown = cli("webhook", "deliveries", hook_id)
        assert got.webhook_id in shown and "delivered" in shown
        with client_for(server) as client:
            assert [h.id for h in client.list_webhooks()] == [hook_id]
            assert client.list_webhook_deliveries(hook_id, status="failed") == []
        cli("webhook", "delete", hook_id)
        with client_for(server) as client:
            assert client.list_webhooks() == []


def _readme_block(opening: str) -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(rf"```\w+\n{re.escape(opening)}\n(.*?)```", readme, re.DOTALL)
    assert found is not None, opening
    return found.group(1)


def test_the_readme_check_verifies_a_delivery(start_server: Callable[..., Running]) -> None:
    server = start_server(**FAST)
    namespace: dict[str, Any] = {}
    exec(_readme_block("# verify_webhook.py"), namespace)
    with receiving() as receiver:
        created = _subscribe(server, receiver.url, "run.created")
        _, run_id = _one_job_run(server)
        (got,) = receiver.wait_for(1)
    payload = namespace["verify"](created.secret, got.headers, got.body)
    assert payload["data"]["run_id"] == run_id
    tampered = got.body.replace(run_id.encode(), b"x" * len(run_id))
    with pytest.raises(AssertionError, match="bad webhook-signature"):
        namespace["verify"](created.secret, got.headers, tampered)


def test_the_readme_configuration_loads(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    path = tmp_path / "readme.toml"
    path.write_text("[webhooks]\n" + _readme_block("[webhooks]"))
    server = start_server(**FAST, webhooks_config=path)
    (hook,) = (
        _hooks(server)
        .ListWebhooks(webhooks_pb2.ListWebhooksRequest(), timeout=RPC_TIMEOUT)
        .webhooks
    )
    assert list(hook.event_types) == ["job.succeeded", "job.failed", "run.finished"]
    assert hook.url == "https://your-system.com/webhook" and hook.enabled


def test_a_bad_configuration_file_stops_the_start_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[webhooks]\nendpoints = [{ url = "http://x/", events = ["job.nope"] }]\n')
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bad.db'}")
    monkeypatch.setenv("TRELLIS_ADMIN_PASSWORD", ADMIN_PASSWORD)
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--grpc-port", "0"]
    assert main([*args, "--workflows-dir", "", "--webhooks-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "endpoints[0]: url and secret are required" in err and "Traceback" not in err


def test_what_a_backend_is_called_back_for() -> None:
    # Runs started by triggers (any `trigger` but "call") and the runs of the
    # backend's own machine user.
    def event(type_: int, **data: str) -> SimpleNamespace:
        return SimpleNamespace(type=type_, data=data)

    me = "machine:mu_1"
    created, finished = events_pb2.EVENT_TYPE_RUN_CREATED, events_pb2.EVENT_TYPE_RUN_FINISHED
    assert _wanted_by_backend(event(created, trigger="schedule", created_by=""), me)
    assert _wanted_by_backend(event(created, trigger="topic"), me)
    assert not _wanted_by_backend(event(created, trigger="call", created_by=me), me)
    assert not _wanted_by_backend(event(created), me)
    assert _wanted_by_backend(event(finished, trigger="call", created_by=me), me)
    assert not _wanted_by_backend(event(finished, created_by="machine:mu_2"), me)
    assert not _wanted_by_backend(event(events_pb2.EVENT_TYPE_JOB_FAILED, created_by=me), me)


def test_a_slow_receiver_holds_up_neither_the_others_nor_the_stop(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST, webhook_timeout_secs=60.0)
    replied: list[str] = []

    def slow_answer(request: Received, n: int) -> tuple[int, bytes]:
        replied.append(request.webhook_id)
        return 200, b"late"

    with receiving(slow_answer) as slow, receiving() as fast:
        slow.release.clear()
        _subscribe(server, slow.url, "run.created")
        _subscribe(server, fast.url, "run.created")
        _, first = _one_job_run(server)
        slow.wait_for(1)
        fast.wait_for(1)
        # The slow receiver still holds its first request.
        _, second = _one_job_run(server)
        got = fast.wait_for(2)
        assert [r.json["data"]["run_id"] for r in got] == [first, second]
        assert len(slow.requests) == 1 and not replied
        server.stop()
        # Stopped while the slow receiver had not answered yet.
        assert not replied
        slow.release.set()


def test_a_drain_claims_the_lease_it_was_judged_to_hold(
    start_server: Callable[..., Running],
) -> None:
    # A pass judged the lease held; by the time the drain runs another
    # replica has it: the drain sends nothing.
    server = start_server(**FAST)
    deliverer = server.server._deliverer
    assert deliverer is not None
    db = server.server.db
    subs = sqlalchemy.table(
        "webhook_subscriptions",
        sqlalchemy.column("id"),
        sqlalchemy.column("owner"),
        sqlalchemy.column("owner_until_ms"),
    )
    with receiving() as receiver:
        created = _subscribe(server, receiver.url, "run.created")
        _one_job_run(server)
        _wait_deliveries(server, created.webhook.id, lambda d: len(d) == 1)
        with db.read() as conn:
            row = conn.execute(
                sqlalchemy.text("SELECT * FROM webhook_subscriptions WHERE id = :id"),
                {"id": created.webhook.id},
            ).one()
        assert row.owner == deliverer.replica
        with db.write() as conn:
            conn.execute(
                sqlalchemy.update(subs)
                .where(subs.c.id == created.webhook.id)
                .values(owner="replica-other", owner_until_ms=db.now_ms(conn) + 600_000)
            )
        _one_job_run(server)
        wait_until(lambda: bool(deliverer.reader.read_after(row.org_id, row.cursor, (), 10)[0]))
        deliverer._drain(row)
        assert len(receiver.requests) == 1


def test_delivery_records_past_the_retention_are_pruned(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(**FAST, event_retention_days=1.0, event_prune_interval_secs=0.05)
    with receiving() as receiver:
        created = _subscribe(server, receiver.url, "run.created")
        _one_job_run(server)
        _wait_deliveries(server, created.webhook.id, lambda d: len(d) == 1)
        with server.server.db.write() as conn:
            conn.execute(
                sqlalchemy.text(
                    "UPDATE webhook_deliveries SET attempted_at_ms = attempted_at_ms - :by"
                ),
                {"by": 2 * 86_400_000},
            )
        _wait_deliveries(server, created.webhook.id, lambda d: not d)


def test_replicas_loading_the_configuration_at_once_both_start(
    start_server: Callable[..., Running], tmp_path: Path
) -> None:
    # The other replica's insert of the same row commits while this one's
    # load waits on it.
    server = start_server(**FAST)
    webhooks = server.server.webhooks
    org = server.config.org_id
    config = _config_file(tmp_path, "http://127.0.0.1:9/hook", "webhook-secret", [])
    webhooks.load_config(org, config)
    db = server.server.db
    with db.read() as conn:
        row = conn.execute(
            sqlalchemy.text("SELECT * FROM webhook_subscriptions WHERE source = 'config'")
        ).one()
    with db.write() as conn:
        conn.execute(
            sqlalchemy.text("DELETE FROM webhook_subscriptions WHERE id = :id"), row._asdict()
        )
    errors: list[BaseException] = []
    columns = ", ".join(row._fields)
    values = ", ".join(f":{c}" for c in row._fields)
    other = db.engine.connect()
    try:
        held = other.begin()
        other.execute(
            sqlalchemy.text(f"INSERT INTO webhook_subscriptions ({columns}) VALUES ({values})"),
            {**row._asdict(), "event_types": json.dumps(row.event_types)}
            if isinstance(row.event_types, list)
            else row._asdict(),
        )

        def load() -> None:
            try:
                webhooks.load_config(org, config)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=load)
        thread.start()
        if db.is_postgres:

            def waiting() -> bool:
                with db.read() as conn:
                    return bool(
                        conn.execute(
                            sqlalchemy.text(
                                "SELECT count(*) FROM pg_stat_activity "
                                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                            )
                        ).scalar()
                    )

            wait_until(waiting)
        held.commit()
    finally:
        other.close()
    thread.join()
    assert not errors
    hooks = _hooks(server).ListWebhooks(webhooks_pb2.ListWebhooksRequest(), timeout=RPC_TIMEOUT)
    assert [h.source for h in hooks.webhooks] == ["config"]


def test_the_installation_keys_exist_before_any_drain_reads_them(
    start_server: Callable[..., Running],
) -> None:
    # A drain reads them in a read-only transaction, which must not insert.
    server = start_server(**FAST)
    with server.server.db.read() as conn:
        names = set(
            conn.execute(sqlalchemy.text("SELECT name FROM server_secrets")).scalars().all()
        )
    assert {"webhook_secrets", "backend_callbacks"} <= names
