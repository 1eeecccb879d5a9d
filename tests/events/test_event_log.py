"""The event log over real gRPC and REST: every state change of a run once,
in order; followers that resume where they stopped, across a restart;
filters; refused cursors."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from urllib.parse import urlencode

import grpc
import pytest
from conftest import Running
from engine_helpers import RPC_TIMEOUT, assert_status
from events_helpers import SMALL_RUN, list_all, shape, small_run, stream, stub, type_name
from rest_helpers import assert_error, rest

from trellis.v1 import events_pb2


def test_every_change_of_a_run_is_listed_once_in_order(server: Running) -> None:
    wf, run_id = small_run(server)
    events = list_all(server.channel, run_id=run_id)
    assert shape(events) == SMALL_RUN
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert all(e.workflow_id == wf and e.workflow_version == 1 for e in events)
    assert all(e.occurred_at.ToMilliseconds() > 0 for e in events)
    created, finished = events[0], events[-1]
    assert created.data["created_by"] == server.subject
    assert created.data["trigger"] == "call"
    assert list(created.data["jobs"]) == ["a", "b", "c"]
    assert finished.message == "failed"
    assert dict(finished.data) == {
        "state": "failed",
        "created_by": server.subject,
        "trigger": "call",
    }
    leased = [e for e in events if type_name(e) == "JOB_LEASED"]
    assert [e.data["worker_id"] for e in leased] == ["w1", "w1", "w2"]
    assert all(len(e.data["lease_id"]) == 32 for e in leased)
    retrying = next(e for e in events if type_name(e) == "JOB_RETRYING")
    assert retrying.message == "first" and "delayed_until_ms" in retrying.data

    # The workflow's own event comes first, and a page of two at a time
    # reads the same log.
    of_workflow = list_all(server.channel, workflow_id=wf, page_size=2)
    expected = ["WORKFLOW_CREATED", *(t for t, _, _ in SMALL_RUN)]
    assert [type_name(e) for e in of_workflow] == expected
    assert of_workflow[0].run_id == "" and of_workflow[0].data["source"] == "api"
    assert of_workflow[1:] == events


def test_filters_combine(server: Running) -> None:
    wf, run_id = small_run(server)
    b = list_all(server.channel, run_id=run_id, job_id="b")
    assert [type_name(e) for e in b] == [t for t, j, _ in SMALL_RUN if j == "b"]
    ends = list_all(server.channel, workflow_id=wf, types=["JOB_FAILED", "RUN_FINISHED"])
    assert shape(ends) == [("JOB_FAILED", "b", 1), ("RUN_FINISHED", "", 0)]
    # A filter that matches nothing still moves the cursor past what it examined.
    page = stub(server.channel).ListEvents(
        events_pb2.ListEventsRequest(filter=events_pb2.EventFilter(run_id="no-such-run")),
        timeout=RPC_TIMEOUT,
    )
    assert not page.events
    assert page.next_cursor >= list_all(server.channel, run_id=run_id)[-1].cursor
    assert list_all(server.channel, after=page.next_cursor, run_id=run_id) == []


def test_the_same_log_over_rest(server: Running) -> None:
    _, run_id = small_run(server)
    client = rest(server)
    found: list[dict[str, object]] = []
    after = ""
    while True:
        query = urlencode({"filter.run_id": run_id, "page_size": 5, "after_cursor": after})
        page = client.ok(client.get(f"/api/events?{query}"))
        found.extend(page["events"])
        if not page["events"]:
            break
        after = str(page["next_cursor"])
    grpc_events = list_all(server.channel, run_id=run_id)
    assert [e["cursor"] for e in found] == [e.cursor for e in grpc_events]
    assert [e["type"] for e in found] == [type_name(e).lower() for e in grpc_events]
    assert found[0]["data"]["trigger"] == "call"  # type: ignore[index]
    # Types are spelled as the answers spell them, repeated for several.
    query = urlencode(
        {"filter.run_id": run_id, "filter.types": ["job_failed", "run_finished"]}, doseq=True
    )
    ends = client.ok(client.get(f"/api/events?{query}"))["events"]
    assert [e["type"] for e in ends] == ["job_failed", "run_finished"]
    assert_error(client.get("/api/events?filter.types=exploded"), 400, "INVALID_ARGUMENT", "types")


# Not hex, too short or long, upper case, beyond a signed 64-bit id.
BAD_CURSORS = [
    "nope",
    "0" * 31,
    "g" * 32,
    "0" * 33,
    "ABCDEF" + "0" * 26,
    "f" * 32,
    "0" * 16 + "8" * 16,
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_bad_cursor_is_refused(server: Running, cursor: str) -> None:
    with pytest.raises(grpc.RpcError) as listed:
        stub(server.channel).ListEvents(
            events_pb2.ListEventsRequest(after_cursor=cursor), timeout=RPC_TIMEOUT
        )
    assert_status(listed.value, grpc.StatusCode.INVALID_ARGUMENT, "after_cursor")
    with pytest.raises(grpc.RpcError) as streamed:
        list(stream(server.channel, after=cursor))
    assert_status(streamed.value, grpc.StatusCode.INVALID_ARGUMENT, "after_cursor")
    reply = rest(server).get(f"/api/events?{urlencode({'after_cursor': cursor})}")
    assert_error(reply, 400, "INVALID_ARGUMENT", "after_cursor")


def test_an_unknown_type_is_refused(server: Running) -> None:
    with pytest.raises(grpc.RpcError) as listed:
        stub(server.channel).ListEvents(
            events_pb2.ListEventsRequest(filter=events_pb2.EventFilter(types=[999])),
            timeout=RPC_TIMEOUT,
        )
    assert_status(listed.value, grpc.StatusCode.INVALID_ARGUMENT, "filter.types")


def test_a_stream_replays_then_follows(server: Running) -> None:
    call = stream(server.channel)
    try:
        _, run_id = small_run(server)
        seen: list[events_pb2.Event] = []
        for event in call:
            seen.append(event)
            if type_name(event) == "RUN_FINISHED" and event.run_id == run_id:
                break
    finally:
        call.cancel()
    assert seen == list_all(server.channel)[: len(seen)]
    assert shape(e for e in seen if e.run_id == run_id) == SMALL_RUN


def test_a_stream_from_now_skips_the_past(server: Running) -> None:
    small_run(server)
    call = stub(server.channel).StreamEvents(
        events_pb2.StreamEventsRequest(after_cursor="now"), timeout=RPC_TIMEOUT
    )
    try:
        # The stream's headers arrive once it has found where "now" is.
        call.initial_metadata()
        wf, _ = small_run(server)
        first = next(call)
    finally:
        call.cancel()
    assert type_name(first) == "WORKFLOW_CREATED" and first.workflow_id == wf


def test_a_follower_resumes_after_a_restart_with_no_gap_or_repeat(
    start_server: Callable[..., Running],
) -> None:
    first = start_server(rest_enabled=False)
    _, run_1 = small_run(first)
    got: list[events_pb2.Event] = []
    call = stream(first.channel)
    try:
        got.extend(itertools.islice(call, 7))
    finally:
        call.cancel()
    first.stop()
    second = start_server(rest_enabled=False)
    _, run_2 = small_run(second)
    call = stream(second.channel, after=got[-1].cursor)
    try:
        for event in call:
            got.append(event)
            if type_name(event) == "RUN_FINISHED" and event.run_id == run_2:
                break
    finally:
        call.cancel()
    everything = list_all(second.channel)
    assert got == everything
    assert shape(e for e in got if e.run_id == run_1) == SMALL_RUN
    assert shape(e for e in got if e.run_id == run_2) == SMALL_RUN
