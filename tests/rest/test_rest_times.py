"""Canonical times: ``google.protobuf.Timestamp`` fields in each surface's spelling.

Rendering and parsing go through the bridge's codec over real messages (the user of
users.proto, the engine's job and run, and a request type built here with settable
Timestamps, one of them spelt by its own ``(times)`` option); the documented user
paths are checked against a real server on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import Running
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from google.protobuf.message import Message
from rest_helpers import rest, uid

from trellis.rest_bridge import CodecError, parse_message, render_message

# A request type with its own (times) option is built here; only the codec's
# renderers and query setters take it, since no route of the contract carries it.
from trellis.rest_bridge._codec import (
    query_setters,
    response_renderer,
)
from trellis.v1 import jobs_pb2, options_pb2, runs_pb2, users_pb2

RFC3339 = options_pb2.TIME_FORMAT_UNSPECIFIED
ISO_SECONDS = options_pb2.TIME_FORMAT_ISO_SECONDS
EPOCH_MS = options_pb2.TIME_FORMAT_EPOCH_MS
EPOCH_MS_OR_ZERO = options_pb2.TIME_FORMAT_EPOCH_MS_OR_ZERO
FORMATS = (RFC3339, ISO_SECONDS, EPOCH_MS, EPOCH_MS_OR_ZERO)
# 2025-09-26T10:00:00.250Z
MS = 1758880800250


def _user() -> users_pb2.User:
    user = users_pb2.User(id="u1", username="ana")
    user.created_at.FromMilliseconds(MS)
    return user


def _times(rendered: Any) -> dict[str, Any]:
    return {
        key: value
        for key, value in rendered.items()
        if "created" in key.lower() or "login" in key.lower()
    }


@pytest.mark.parametrize(
    ("times", "json_names", "expected"),
    [
        (RFC3339, False, {"created_at": "2025-09-26T10:00:00.250Z", "last_login": None}),
        (ISO_SECONDS, False, {"created_at": "2025-09-26T10:00:00Z", "last_login": ""}),
        (EPOCH_MS, False, {"created_at_ms": MS, "last_login_ms": None}),
        (EPOCH_MS, True, {"createdAtMs": MS, "lastLoginMs": None}),
        (EPOCH_MS_OR_ZERO, False, {"created_at_ms": MS, "last_login_ms": 0}),
        (EPOCH_MS_OR_ZERO, True, {"createdAtMs": MS, "lastLoginMs": 0}),
        (ISO_SECONDS, True, {"createdAt": "2025-09-26T10:00:00Z", "lastLogin": ""}),
    ],
)
def test_timestamps_render_in_the_surface_format(
    times: int, json_names: bool, expected: dict[str, Any]
) -> None:
    rendered = render_message(_user(), json_names=json_names, times=times)
    assert _times(rendered) == expected
    # Inside a list (response_body) the same.
    listing = users_pb2.ListUsersResponse(users=[_user()])
    render = response_renderer(listing.DESCRIPTOR, "users", json_names=json_names, times=times)
    (only,) = render(listing)
    assert _times(only) == expected


def test_a_time_before_the_epoch_renders_in_every_format() -> None:
    user = users_pb2.User()
    user.created_at.FromMilliseconds(-1500)
    assert render_message(user, times=EPOCH_MS)["created_at_ms"] == -1500
    assert render_message(user, times=ISO_SECONDS)["created_at"] == "1969-12-31T23:59:58Z"


def test_a_run_reads_as_the_workflow_graph_documents_it() -> None:
    # A running run: its finish is unset, which the document spells 0.
    run = runs_pb2.Run(run_id="r1")
    run.created_at.FromMilliseconds(MS)
    rendered = render_message(run, times=EPOCH_MS_OR_ZERO)
    assert (rendered["created_at_ms"], rendered["finished_at_ms"]) == (MS, 0)  # type: ignore[index]
    assert "created_at" not in rendered  # type: ignore[operator]


@pytest.mark.parametrize("times", FORMATS)
def test_a_jobs_start_reads_as_documented_on_every_surface(times: int) -> None:
    # Job.started_at is `(times) = TIME_FORMAT_EPOCH_MS_UNSUFFIXED`: epoch ms under
    # its own name, null when unset, whatever its neighbours do.
    job = jobs_pb2.Job(id="a")
    job.delayed_until.FromMilliseconds(MS)
    assert render_message(job, times=times)["started_at"] is None  # type: ignore[index]
    job.started_at.FromMilliseconds(MS)
    rendered: Any = render_message(job, times=times)
    assert rendered["started_at"] == MS and "started_at_ms" not in rendered
    assert render_message(job, times=times, json_names=True)["startedAt"] == MS  # type: ignore[index]
    # The job's other time follows the surface.
    neighbour = {key: value for key, value in rendered.items() if "delayed" in key}
    assert neighbour == _DELAYED_UNTIL_MS_SPELT[times]


_DELAYED_UNTIL_MS_SPELT: dict[int, dict[str, Any]] = {
    RFC3339: {"delayed_until": "2025-09-26T10:00:00.250Z"},
    ISO_SECONDS: {"delayed_until": "2025-09-26T10:00:00Z"},
    EPOCH_MS: {"delayed_until_ms": MS},
    EPOCH_MS_OR_ZERO: {"delayed_until_ms": MS},
}


def _event_class() -> type[Message]:
    """``bridge_times_test.Event {Timestamp at = 1; Inner inner = 2; Timestamp started = 3
    [(trellis.v1.times) = TIME_FORMAT_EPOCH_MS_UNSUFFIXED]}``: request-side times."""
    pool = descriptor_pool.Default()
    name = "bridge_times_test/event.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(
            name=name,
            package="bridge_times_test",
            syntax="proto3",
            dependency=["google/protobuf/timestamp.proto", "trellis/v1/options.proto"],
        )
        stamp = descriptor_pb2.FieldDescriptorProto
        inner = file.message_type.add(name="Inner")
        inner.field.add(
            name="due", number=1, type=stamp.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"
        )
        event = file.message_type.add(name="Event")
        event.field.add(
            name="at", number=1, type=stamp.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"
        )
        event.field.add(
            name="inner", number=2, type=stamp.TYPE_MESSAGE, type_name=".bridge_times_test.Inner"
        )
        started = event.field.add(
            name="started",
            number=3,
            type=stamp.TYPE_MESSAGE,
            type_name=".google.protobuf.Timestamp",
        )
        started.options.Extensions[options_pb2.times] = options_pb2.TIME_FORMAT_EPOCH_MS_UNSUFFIXED
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bridge_times_test.Event"))


def _parsed(value: Any) -> Any:
    message: Any = _event_class()()
    parse_message(value, message)
    return message


@pytest.mark.parametrize(
    "value",
    [
        {"at": "2025-09-26T10:00:00.250Z"},
        {"at": "2025-09-26T12:00:00.250+02:00"},
        # No offset: UTC, as the server reads ISO times.
        {"at": "2025-09-26T10:00:00.250"},
        {"at_ms": MS},
        {"atMs": str(MS)},
    ],
)
def test_requests_take_every_rendered_spelling(value: Any) -> None:
    message = _parsed(value)
    assert message.at.ToMilliseconds() == MS


@pytest.mark.parametrize(
    "value",
    [
        {"started": MS},
        {"started": str(MS)},
        {"started_ms": MS},
        {"started": "2025-09-26T10:00:00.250Z"},
    ],
)
def test_a_field_spelt_unsuffixed_takes_milliseconds_under_its_own_name(value: Any) -> None:
    message = _parsed(value)
    assert message.started.ToMilliseconds() == MS


@pytest.mark.parametrize("times", FORMATS)
def test_a_field_option_spells_its_time_whatever_the_surface(times: int) -> None:
    event: Any = _event_class()()
    assert render_message(event, times=times)["started"] is None  # type: ignore[index]
    event.started.FromMilliseconds(MS)
    rendered: Any = render_message(event, times=times)
    assert rendered["started"] == MS and "started_ms" not in rendered
    assert render_message(event, times=times, json_names=True)["started"] == MS  # type: ignore[index]


def test_empty_text_and_null_leave_a_time_unset() -> None:
    for value in ({"at": ""}, {"at": None}, {"at_ms": None}):
        assert not _parsed(value).HasField("at")


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"at": "yesterday"}, "at"),
        ({"at": 5}, "at"),
        ({"at_ms": "soon"}, "at_ms"),
        ({"at_ms": True}, "at_ms"),
        ({"at_ms": 10**20}, "at_ms"),
        ({"inner": {"due": "26/09/2025"}}, "inner.due"),
    ],
)
def test_bad_times_are_refused_naming_the_field(value: Any, path: str) -> None:
    with pytest.raises(CodecError) as refused:
        _parsed(value)
    assert refused.value.path == path


def test_query_parameters_take_times_in_both_spellings() -> None:
    event_class = _event_class()
    setters = query_setters(event_class.DESCRIPTOR, lambda chain: False)
    message: Any = event_class()
    setters["at"](message, ["2025-09-26T10:00:00.250Z"])
    setters["inner.due_ms"](message, [str(MS)])
    assert message.at.ToMilliseconds() == MS == message.inner.due.ToMilliseconds()
    setters["at"](message, [""])
    assert not message.HasField("at")


ISO_TO_THE_SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_user_times_read_as_iso_seconds_on_both_documented_surfaces(server: Running) -> None:
    client = rest(server)
    created = client.post("/users", {"username": uid("t"), "password": "Correct-horse-battery-9"})
    user = created.json["data"]
    assert ISO_TO_THE_SECOND.fullmatch(user["created_at"]) and user["last_login"] == ""
    bare = client.get(f"/api/v1/admin/users/{user['id']}").json
    assert (bare["created_at"], bare["last_login"]) == (user["created_at"], "")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(user["created_at"])
    assert stamp.seconds > 0
