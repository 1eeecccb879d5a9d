"""Triggers over real gRPC: a publish records its value and starts the
workflows whose `on:` subscribes to the topic, with the value as input; topic
patterns; listing topics and records; `on:` refused whole when Trellis cannot
read an entry; schedules firing once per fire across replicas, and the
catch-up policy for fires missed while no replica ran."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from conftest import ROOT, Running, wait_until
from engine_helpers import RPC_TIMEOUT, assert_status, job, rpc_error, uid
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from sqlalchemy import select, text, update

from trellis.server.core.db import connect, upgrade_schema
from trellis.server.core.models import EventRow, ScheduleRow, TopicTriggerRow, table
from trellis.server.engine import RunEventType
from trellis.server.engine.definitions import (
    DefinitionError,
    TriggerDef,
    next_fire_ms,
    parse_text,
    topic_matches,
)
from trellis.v1 import runs_pb2, topics_pb2, topics_pb2_grpc, workflows_pb2

schedules = table(ScheduleRow)
events = table(EventRow)
topic_triggers = table(TopicTriggerRow)


def topics(server: Running) -> topics_pb2_grpc.TopicServiceStub:
    return topics_pb2_grpc.TopicServiceStub(server.channel)


def apply(server: Running, source: str, workflow_id: str = "") -> workflows_pb2.Workflow:
    wf_id = workflow_id or uid()
    created: workflows_pb2.Workflow = server.workflows.CreateWorkflow(
        workflows_pb2.CreateWorkflowRequest(source=source, workflow_id=wf_id), timeout=RPC_TIMEOUT
    )
    return created


def subscribed(on: str, extra: str = "") -> str:
    return f"name: Sub\non: {on}\n{extra}jobs:\n  a: {{run: echo}}\n"


def publish(
    server: Running, topic: str, value: Any, source: str = ""
) -> topics_pb2.PublishResponse:
    answer: topics_pb2.PublishResponse = topics(server).Publish(
        topics_pb2.PublishRequest(
            topic=topic, value=json_format.ParseDict(value, struct_pb2.Value()), source=source
        ),
        timeout=RPC_TIMEOUT,
    )
    return answer


def started_by(server: Running, run_id: str) -> str:
    """What RUN_CREATED says started the run: the trigger."""
    with server.server.db.engine.connect() as conn:
        data = conn.execute(
            select(events.c.data).where(
                events.c.run_id == run_id, events.c.type == RunEventType.RUN_CREATED
            )
        ).scalar_one()
    return str(data["trigger"])


def runs_of(server: Running, workflow_id: str) -> list[runs_pb2.Run]:
    found: runs_pb2.ListRunsResponse = server.runs.ListRuns(
        runs_pb2.ListRunsRequest(workflow_id=workflow_id, page_size=1000), timeout=RPC_TIMEOUT
    )
    return list(found.runs)


def test_a_publish_starts_the_subscribed_workflow_with_the_value(server: Running) -> None:
    area = uid("area")
    hot = apply(server, subscribed(f'{{topic: ["mHv1.0/{area}/+/temperature"]}}'))
    other = apply(server, subscribed(f'{{topic: ["mHv1.0/{area}/+/pressure"]}}'))
    topic = f"mHv1.0/{area}/line-1/temperature"

    answer = publish(server, topic, 72.5, source="plc-01")

    assert (answer.record.topic, answer.record.source) == (topic, "plc-01")
    assert answer.record.value.number_value == 72.5
    assert answer.record.published_at.ToMilliseconds() > 0
    (run,) = answer.runs
    assert run.workflow_id == hot.id
    inputs = json_format.MessageToDict(run.inputs)
    assert inputs == {"value": 72.5, "topic": topic, "source": "plc-01"}
    assert [r.run_id for r in runs_of(server, hot.id)] == [run.run_id]
    assert runs_of(server, other.id) == []
    # The run says what started it.
    assert started_by(server, run.run_id) == f"topic:{topic}"


def test_disabled_and_deleted_workflows_are_not_fired(server: Running) -> None:
    area = uid("area")
    wf = apply(server, subscribed(f'{{topic: ["mHv1.0/{area}/#"]}}'))
    topic = f"mHv1.0/{area}/line-1"
    server.workflows.DisableWorkflow(workflows_pb2.DisableWorkflowRequest(workflow_id=wf.id))
    assert publish(server, topic, 1).runs == []
    server.workflows.EnableWorkflow(workflows_pb2.EnableWorkflowRequest(workflow_id=wf.id))
    assert [r.workflow_id for r in publish(server, topic, 2).runs] == [wf.id]
    server.workflows.DeleteWorkflow(workflows_pb2.DeleteWorkflowRequest(workflow_id=wf.id))
    assert publish(server, topic, 3).runs == []
    assert len(runs_of(server, wf.id)) == 1


def test_exports_and_job_edits_keep_topics_and_schedules(server: Running) -> None:
    area = uid("area")
    on = f'{{topic: ["mHv1.0/{area}/#"], schedule: [{{cron: "0 3 * * *", timezone: UTC}}]}}'
    wf = apply(server, subscribed(on))
    server.workflows.AddWorkflowJob(
        workflows_pb2.AddWorkflowJobRequest(workflow_id=wf.id, job=job("extra"))
    )
    edited = server.workflows.GetWorkflow(workflows_pb2.GetWorkflowRequest(workflow_id=wf.id))
    assert edited.version == wf.version + 1
    assert list(edited.triggers) == list(wf.triggers)
    exported = server.workflows.ExportWorkflows(
        workflows_pb2.ExportWorkflowsRequest(workflow_id=wf.id)
    )
    assert f"mHv1.0/{area}/#" in exported.text and "0 3 * * *" in exported.text
    imported = server.workflows.ImportWorkflows(
        workflows_pb2.ImportWorkflowsRequest(text=exported.text, dry_run=True)
    )
    assert [w.action for w in imported.workflows] == [workflows_pb2.IMPORT_ACTION_UNCHANGED]


def test_named_events_are_topics_and_the_sample_workflows_still_load(server: Running) -> None:
    listed = server.workflows.ListWorkflows(workflows_pb2.ListWorkflowsRequest())
    by_id = {wf.id: wf for wf in listed.workflows}
    assert [t.topic for t in by_id["ci"].triggers] == ["push", "pull_request"]
    assert by_id["ci"].trigger == "push, pull_request"
    event = uid("deploy").replace("-", "_")
    prod = apply(server, subscribed(f"{{{event}: {{env: [prod, 'stag*']}}}}"))
    assert [(t.topic, list(t.filters["env"].patterns)) for t in prod.triggers] == [
        (event, ["prod", "stag*"])
    ]

    assert [r.workflow_id for r in publish(server, event, {"env": "staging"}).runs] == [prod.id]
    assert publish(server, event, {"env": "dev"}).runs == []
    assert publish(server, event, "prod").runs == []  # not an object: no field to filter


@pytest.mark.parametrize(
    ("pattern", "topic", "matches"),
    [
        ("mHv1.0/factory/+/temperature", "mHv1.0/factory/line-1/temperature", True),
        ("mHv1.0/factory/+/temperature", "mHv1.0/factory/line-1/x/temperature", False),
        ("mHv1.0/factory/#", "mHv1.0/factory/line-1/temperature", True),
        ("mHv1.0/factory/#", "mHv1.0/factory", True),
        ("mHv1.0/factory/#", "mHv1.0/factoryx", False),
        ("mHv1.0/factory", "mHv1.0/factory/line-1", False),
        ("mHv1.0/+", "mHv1.0/factory", True),
        ("push", "push", True),
    ],
)
def test_patterns(pattern: str, topic: str, matches: bool) -> None:
    assert topic_matches(pattern, topic) is matches


def test_wildcards_and_exact_topics_fire_through_the_index(server: Running) -> None:
    area = uid("plant")
    every = apply(server, subscribed(f'{{topic: "mHv1.0/{area}/#"}}'))
    one_level = apply(server, subscribed(f'{{topic: ["mHv1.0/{area}/+"]}}'))
    exact = apply(server, subscribed(f'{{topic: ["mHv1.0/{area}/a/b"]}}'))
    # Two of its patterns match: still one run.
    both = apply(server, subscribed(f'{{topic: ["mHv1.0/{area}/+/b", "mHv1.0/{area}/a/+"]}}'))

    def started(topic: str) -> set[str]:
        return {r.workflow_id for r in publish(server, topic, 1).runs}

    assert started(f"mHv1.0/{area}/a/b") == {every.id, exact.id, both.id}
    assert started(f"mHv1.0/{area}/a") == {every.id, one_level.id}
    assert started(f"mHv1.0/{area}") == {every.id}
    assert started(f"mHv2.0/{area}/a/b") == set()


def test_declared_inputs_take_the_values_they_declare(server: Running) -> None:
    topic = f"mHv1.0/{uid('t')}/level"
    typed = apply(
        server,
        subscribed(
            f'{{topic: ["{topic}"]}}',
            "inputs:\n  value: {type: number, required: true}\n"
            "  limit: {type: number, default: 5}\n",
        ),
    )
    answer = publish(server, topic, 3, source="s")
    (run,) = answer.runs
    assert run.workflow_id == typed.id
    assert json_format.MessageToDict(run.inputs) == {"value": 3, "limit": 5}

    refused = publish(server, topic, "high")
    assert refused.runs == []
    (skipped,) = refused.skipped
    assert skipped.workflow_id == typed.id
    assert "inputs.value" in skipped.reason
    assert len(runs_of(server, typed.id)) == 1


def test_topics_and_records_are_listed(server: Running) -> None:
    area = uid("site")
    first = publish(server, f"mHv1.0/{area}/line-1/temperature", 70)
    publish(server, f"mHv1.0/{area}/line-1/temperature", {"c": 71})
    last = publish(server, f"mHv1.0/{area}/line-1/temperature", 72)
    publish(server, f"mHv1.0/{area}/line-2/motor", True)

    listed = topics(server).ListTopics(topics_pb2.ListTopicsRequest(prefix=f"mHv1.0/{area}"))
    assert [(t.name, t.parent) for t in listed.topics] == [
        (f"mHv1.0/{area}", "mHv1.0"),
        (f"mHv1.0/{area}/line-1", f"mHv1.0/{area}"),
        (f"mHv1.0/{area}/line-1/temperature", f"mHv1.0/{area}/line-1"),
        (f"mHv1.0/{area}/line-2", f"mHv1.0/{area}"),
        (f"mHv1.0/{area}/line-2/motor", f"mHv1.0/{area}/line-2"),
    ]
    assert not listed.topics[1].HasField("last_published_at")
    assert listed.topics[2].HasField("last_published_at")
    paged = topics(server).ListTopics(
        topics_pb2.ListTopicsRequest(prefix=f"mHv1.0/{area}/line-1", page_size=1)
    )
    rest = topics(server).ListTopics(
        topics_pb2.ListTopicsRequest(
            prefix=f"mHv1.0/{area}/line-1", page_token=paged.next_page_token
        )
    )
    assert [t.name for t in [*paged.topics, *rest.topics]] == [
        f"mHv1.0/{area}/line-1",
        f"mHv1.0/{area}/line-1/temperature",
    ]

    def values(**range_: timestamp_pb2.Timestamp) -> list[Any]:
        found = topics(server).ListTopicRecords(
            topics_pb2.ListTopicRecordsRequest(topic=f"mHv1.0/{area}/line-1/temperature", **range_)
        )
        return [json_format.MessageToDict(r.value) for r in found.records]

    assert values() == [72, {"c": 71}, 70]
    # Times are the database's milliseconds: publishes may share one.
    assert values(since=last.record.published_at)[0] == 72
    assert values(until=first.record.published_at) == []
    assert values(since=first.record.published_at, until=last.record.published_at) == (
        [] if first.record.published_at == last.record.published_at else values()[1:]
    )
    page = topics(server).ListTopicRecords(
        topics_pb2.ListTopicRecordsRequest(topic=f"mHv1.0/{area}/line-1/temperature", page_size=2)
    )
    more = topics(server).ListTopicRecords(
        topics_pb2.ListTopicRecordsRequest(
            topic=f"mHv1.0/{area}/line-1/temperature", page_token=page.next_page_token
        )
    )
    assert [json_format.MessageToDict(r.value) for r in [*page.records, *more.records]] == [
        72,
        {"c": 71},
        70,
    ]
    assert more.next_page_token == ""


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("factory/line-1", "lacks a version prefix"),
        ("mHv1.0//x", "empty level"),
        ("mHv1.0/+/x", "wildcard"),
        ("mHv1.0/#", "wildcard"),
        ("mHv1.0", "needs a version prefix and a level"),
        ("", "topic is required"),
    ],
)
def test_bad_topics_are_refused(server: Running, topic: str, fragment: str) -> None:
    value = struct_pb2.Value(number_value=1)
    err = rpc_error(topics(server).Publish, topics_pb2.PublishRequest(topic=topic, value=value))
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, fragment)


def test_a_value_is_required_and_nothing_is_stored_without_one(server: Running) -> None:
    topic = f"mHv1.0/{uid('x')}"
    err = rpc_error(topics(server).Publish, topics_pb2.PublishRequest(topic=topic))
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "value is required")
    nan = struct_pb2.Value()
    nan.list_value.values.add().number_value = float("nan")
    err = rpc_error(topics(server).Publish, topics_pb2.PublishRequest(topic=topic, value=nan))
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, "value: NaN")
    err = rpc_error(
        topics(server).ListTopicRecords, topics_pb2.ListTopicRecordsRequest(topic=topic)
    )
    assert_status(err, grpc.StatusCode.NOT_FOUND, "not found")


@pytest.mark.parametrize(
    ("on", "fragment"),
    [
        ("{schedule: [{cron: '* * *'}]}", "must have 5 fields"),
        ("{schedule: [{cron: '61 * * * *'}]}", "not a valid cron expression"),
        ("{schedule: [{cron: '0 3 * * *', timezone: Mars/Olympus}]}", "not a known IANA"),
        ("{schedule: [{cron: '0 3 * * *', at: noon}]}", "unknown key"),
        ("{schedule: '0 3 * * *'}", "must be a list"),
        ("{topic: ['factory/line-1']}", "lacks a version prefix"),
        ("{topic: ['mHv1.0/#/x']}", "# must be the last level"),
        ("{push: 5}", "must be a mapping"),
        ("['mHv1.0/a']", "an event name has letters"),
    ],
)
def test_bad_on_entries_are_refused_with_the_reason(
    server: Running, on: str, fragment: str
) -> None:
    wf_id = uid()
    err = rpc_error(
        server.workflows.CreateWorkflow,
        workflows_pb2.CreateWorkflowRequest(source=subscribed(on), workflow_id=wf_id),
    )
    assert_status(err, grpc.StatusCode.INVALID_ARGUMENT, f"workflow '{wf_id}'", "`on`", fragment)
    with pytest.raises(DefinitionError, match="workflow 'w'"):
        parse_text(subscribed(on), source="w.yml", workflow_id="w")


def test_schedules_follow_their_time_zone_across_daylight_saving() -> None:
    nine = TriggerDef(kind="schedule", cron="0 9 * * *", timezone="Europe/Berlin")
    winter = int(datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp() * 1000)
    # Berlin moves from UTC+1 to UTC+2 in the night of 29 March 2026.
    first = next_fire_ms(nine, winter)
    second = next_fire_ms(nine, first)
    assert datetime.fromtimestamp(first / 1000, UTC).hour == 7
    assert first == int(datetime(2026, 3, 29, 7, tzinfo=UTC).timestamp() * 1000)
    assert second - first == 24 * 3_600_000
    assert datetime.fromtimestamp(second / 1000, UTC).hour == 7


def every_second(server: Running) -> workflows_pb2.Workflow:
    # Six fields: seconds first, so that a test sees fires within seconds.
    return apply(server, subscribed("{schedule: [{cron: '* * * * * *'}]}"))


def fire_times(server: Running, workflow_id: str) -> list[int]:
    found = []
    for run in runs_of(server, workflow_id):
        prefix, wf, entry, at = run.request_id.split(":")
        assert (prefix, wf, entry) == ("schedule", workflow_id, "0")
        found.append(int(at))
    return sorted(found)


def test_a_schedule_fires_once_per_fire_across_two_replicas(
    start_server: Callable[..., Running],
) -> None:
    # Two replicas on one database, each with its scheduler, polling often.
    one = start_server(schedule_interval_secs=0.05)
    two = start_server(schedule_interval_secs=0.05)
    wf = every_second(one)
    assert [t.schedule.cron for t in wf.triggers] == ["* * * * * *"]
    wait_until(lambda: len(runs_of(two, wf.id)) >= 3, timeout=30)
    one.stop()
    two.stop()
    third = start_server(api_only=True)
    times = fire_times(third, wf.id)
    # One run per fire time, never two.
    assert len(times) == len(set(times)) >= 3
    assert all(t % 1000 == 0 for t in times)
    run = runs_of(third, wf.id)[0]
    assert started_by(third, run.run_id) == "schedule:* * * * * *"


@pytest.mark.parametrize(("policy", "runs"), [("latest", 1), ("skip", 0)])
def test_fires_missed_while_down_follow_the_catch_up_policy(
    start_server: Callable[..., Running], policy: Any, runs: int
) -> None:
    # No scheduler thread (API_ONLY): the test makes the passes itself.
    server = start_server(api_only=True)
    wf = apply(server, subscribed("{schedule: [{cron: '0 * * * *'}]}"))
    db = server.server.db
    key = (schedules.c.workflow_id == wf.id, schedules.c.entry == 0)
    with db.engine.begin() as conn:
        upcoming = conn.execute(select(schedules.c.next_fire_ms).where(*key)).scalar_one()
        # As if every replica had been down for the last five fires.
        conn.execute(update(schedules).where(*key).values(next_fire_ms=upcoming - 5 * 3_600_000))

    started = server.server.service.fire_schedules(catch_up=policy)

    assert started == runs
    assert fire_times(server, wf.id) == ([upcoming - 3_600_000] if runs else [])
    with db.engine.connect() as conn:
        after = conn.execute(select(schedules.c.next_fire_ms).where(*key)).scalar_one()
    assert after == upcoming
    # Nothing more is due.
    assert server.server.service.fire_schedules(catch_up=policy) == 0


def test_the_readme_example() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```yaml\n# sensors\.yml\n(.*?)```", readme, re.DOTALL)
    assert found is not None
    wf = parse_text(found.group(1), source="sensors.yml", workflow_id="sensors")
    assert [(t.kind, t.pattern or t.cron) for t in wf.triggers] == [
        ("topic", "deploy"),
        ("topic", "mHv1.0/factory/+/temperature"),
        ("topic", "mHv1.0/factory/line-1/#"),
        ("schedule", "*/5 * * * *"),
    ]
    assert wf.triggers[0].filters == (("env", ("prod", "stag*")),)
    assert wf.triggers[3].timezone == "Europe/Berlin"
    assert wf.trigger == "deploy, topic, schedule, workflow_dispatch"
    bad = found.group(1).replace("Europe/Berlin", "Mars/Olympus")
    with pytest.raises(DefinitionError, match="workflow 'sensors': `on`: schedule\\[0\\]"):
        parse_text(bad, source="sensors.yml", workflow_id="sensors")


def test_the_migration_indexes_the_event_names_of_stored_workflows(database_url: str) -> None:
    # Stored before triggers existed, `on: [schedule, push]` must still fire on `push`.
    db = connect(database_url)
    try:
        upgrade_schema(db, "0009")
        definition = {"id": "old", "name": "Old", "trigger": "schedule, push", "jobs": []}
        with db.engine.begin() as conn:
            # Spelled out: today's model has columns that schema 0009 lacks.
            conn.execute(
                text(
                    "INSERT INTO workflows (org_id, id, name, version, fingerprint, definition,"
                    " source, created_at_ms, updated_at_ms) VALUES ('default', 'old', 'Old', 1,"
                    " 'f', :definition, 'api', 1, 1)"
                ),
                {"definition": json.dumps(definition)},
            )
        upgrade_schema(db)
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    topic_triggers.c.workflow_id,
                    topic_triggers.c.pattern,
                    topic_triggers.c.prefix,
                    topic_triggers.c.exact,
                )
            ).all()
        assert [tuple(row) for row in rows] == [("old", "push", "push", True)]
    finally:
        db.dispose()
