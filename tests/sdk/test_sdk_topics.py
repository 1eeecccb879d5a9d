"""Topics from the SDK and the command line: publish, list, read records."""

from __future__ import annotations

import json

from conftest import Running
from sdk_helpers import client_for, one_error_line, trellis, uid

from trellis.worker_sdk import InvalidArgument, NotFound

SUBSCRIBED = "name: Sub\non:\n  topic: ['mHv1.0/{area}/#']\njobs:\n  a: {{run: echo}}\n"


def test_the_client_publishes_and_reads_back(server: Running) -> None:
    area = uid("area")
    with client_for(server) as client:
        wf = client.create_workflow(SUBSCRIBED.format(area=area), workflow_id=uid())
        answer = client.publish(f"mHv1.0/{area}/line-1/motor", {"rpm": 1450}, source="plc-01")
        assert [run.workflow_id for run in answer.runs] == [wf.id]
        client.publish(f"mHv1.0/{area}/line-1/motor", {"rpm": 1500})
        names = [t.name for t in client.list_topics(f"mHv1.0/{area}")]
        assert names == [f"mHv1.0/{area}", f"mHv1.0/{area}/line-1", f"mHv1.0/{area}/line-1/motor"]
        records = client.topic_records(f"mHv1.0/{area}/line-1/motor", limit=1)
        assert [r.value.struct_value["rpm"] for r in records] == [1500]
        at = answer.record.published_at.ToMilliseconds()
        assert len(client.topic_records(f"mHv1.0/{area}/line-1/motor", since=at)) == 2
        assert client.topic_records(f"mHv1.0/{area}/line-1/motor", until=at) == []
        try:
            client.publish("factory/line-1", 1)
            raise AssertionError("published without a version prefix")
        except InvalidArgument as exc:
            assert "version prefix" in str(exc)
        try:
            client.topic_records(f"mHv1.0/{area}/nothing")
            raise AssertionError("read an unknown topic")
        except NotFound:
            pass


def test_the_commands(server: Running) -> None:
    area = uid("area")
    target = ("--target", server.grpc_target)
    topic = f"mHv1.0/{area}/line-1/temperature"
    with client_for(server) as client:
        wf = client.create_workflow(SUBSCRIBED.format(area=area), workflow_id=uid())

    done = trellis("publish", topic, "72.5", "--source", "plc-01", *target)
    assert done.returncode == 0, done.stderr
    first, run_line = done.stdout.splitlines()
    assert first.startswith(f"published to {topic} at ") and first.endswith("1 run(s) started")
    assert run_line.startswith("run ") and run_line.endswith(f" of {wf.id}")
    assert trellis("publish", topic, "hot", *target).returncode == 0

    listed = trellis("topics", f"mHv1.0/{area}", "--json", *target)
    assert [t["name"] for t in json.loads(listed.stdout)] == [
        f"mHv1.0/{area}",
        f"mHv1.0/{area}/line-1",
        topic,
    ]
    records = trellis("records", topic, "--json", *target)
    assert [(r["value"], r["source"]) for r in json.loads(records.stdout)] == [
        ("hot", ""),
        (72.5, "plc-01"),
    ]
    table = trellis("records", topic, "--since", "2000-01-01T00:00:00Z", *target)
    assert table.stdout.splitlines()[0].split() == ["PUBLISHED", "SOURCE", "VALUE"]
    none = trellis("records", topic, "--until", "2000-01-01T00:00:00Z", "--json", *target)
    assert json.loads(none.stdout) == []

    bad = trellis("publish", "factory/line-1", "1", *target)
    assert bad.returncode != 0
    assert "version prefix" in one_error_line(bad)
