"""Topics over REST: a publish as the MaestroHub UNS document sends it
(`{topic, source, value}`), answered with the record and the runs started;
listing topics and a topic's records by time range; bad input refused with a
JSON body naming the problem."""

from __future__ import annotations

from urllib.parse import quote

from conftest import Running
from rest_helpers import assert_error, is_ms, rest, uid

from trellis.v1 import workflows_pb2


def test_a_publish_starts_the_subscribed_workflow(server: Running) -> None:
    admin = rest(server)
    area = uid("area")
    source = f"name: Hot\non:\n  topic: ['mHv1.0/{area}/+/motor']\njobs:\n  a: {{run: echo}}\n"
    # A workflow file's text, as `trellis apply` sends it.
    hot = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(source=source, workflow_id=uid())
    )
    topic = f"mHv1.0/{area}/line-1/motor"
    value = {"temperature": 72.5, "rpm": 1450, "status": "running"}

    body = admin.ok(
        admin.post("/api/topics/publish", {"topic": topic, "source": "plc-01", "value": value})
    )

    assert body["record"]["topic"] == topic
    assert body["record"]["value"] == value
    assert body["record"]["source"] == "plc-01"
    assert is_ms(body["record"]["published_at_ms"])
    (run,) = body["runs"]
    assert run["workflow_id"] == hot.id
    assert run["inputs"] == {"source": "plc-01", "topic": topic, "value": value}
    assert "skipped" not in body

    listed = admin.ok(admin.get(f"/api/topics?prefix={quote(f'mHv1.0/{area}')}"))
    assert [t["name"] for t in listed["topics"]] == [
        f"mHv1.0/{area}",
        f"mHv1.0/{area}/line-1",
        topic,
    ]
    records = admin.ok(admin.get(f"/api/topics/records?topic={quote(topic)}"))
    assert [r["value"] for r in records["records"]] == [value]
    at = body["record"]["published_at_ms"]
    later = admin.ok(admin.get(f"/api/topics/records?topic={quote(topic)}&since_ms={at + 1}"))
    assert later["records"] == []
    within = admin.ok(
        admin.get(f"/api/topics/records?topic={quote(topic)}&since_ms={at}&until_ms={at + 1}")
    )
    assert [r["value"] for r in within["records"]] == [value]


def test_bad_publishes_are_refused_with_a_json_body(server: Running) -> None:
    admin = rest(server)
    no_prefix = admin.post("/api/topics/publish", {"topic": "factory/line-1", "value": 1})
    assert_error(no_prefix, 400, "INVALID_ARGUMENT", "factory/line-1", "version prefix")
    no_topic = admin.post("/api/topics/publish", {"value": 1})
    assert_error(no_topic, 400, "INVALID_ARGUMENT", "topic")
    no_value = admin.post("/api/topics/publish", {"topic": "mHv1.0/a"})
    assert_error(no_value, 400, "INVALID_ARGUMENT", "value is required")
    wildcard = admin.post("/api/topics/publish", {"topic": "mHv1.0/+/a", "value": 1})
    assert_error(wildcard, 400, "INVALID_ARGUMENT", "wildcard")
    unknown = admin.get("/api/topics/records?topic=mHv1.0/never")
    assert_error(unknown, 404, "NOT_FOUND", "mHv1.0/never")
    backwards = admin.get("/api/topics/records?topic=mHv1.0/a&since_ms=5&until_ms=4")
    assert_error(backwards, 400, "INVALID_ARGUMENT", "since")
    assert admin.get("/api/topics?prefix=mHv1.0").status == 200
    bad_prefix = admin.get("/api/topics?prefix=a//b")
    assert_error(bad_prefix, 400, "INVALID_ARGUMENT", "empty level")
