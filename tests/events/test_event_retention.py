"""Retention: the reaper prunes events older than EVENT_RETENTION_DAYS in the
background, and a reader whose cursor was pruned is told so."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from conftest import Running, wait_until
from engine_helpers import RPC_TIMEOUT, assert_status
from events_helpers import list_all, small_run, stream, stub
from rest_helpers import assert_error, rest
from sqlalchemy import text

from trellis.server.config import Config
from trellis.server.events import prune
from trellis.server.events._retention import DAY_MS
from trellis.v1 import events_pb2


def _age(server: Running, through_id: int, days: float) -> None:
    """Moves the events up to ``through_id`` ``days`` into the past."""
    with server.server.db.write() as conn:
        conn.execute(
            text("UPDATE events SET time_ms = time_ms - :by WHERE id <= :last"),
            {"by": int(days * DAY_MS), "last": through_id},
        )


def _id_of(cursor: str) -> int:
    return int(cursor[16:], 16)


def test_old_events_are_pruned_and_their_cursors_refused(
    start_server: Callable[..., Running],
) -> None:
    server = start_server(event_retention_days=1.0, event_prune_interval_secs=0.05)
    _, run_id = small_run(server)
    before = list_all(server.channel)
    of_run = [e.cursor for e in before if e.run_id == run_id]
    # The first five of the run and everything before them are two days old.
    last_old = of_run[4]
    _age(server, _id_of(last_old), 2)
    wait_until(lambda: list_all(server.channel)[0].cursor > last_old)
    kept = list_all(server.channel)
    assert kept == [e for e in before if e.cursor > last_old]

    # A reader that had read up to a pruned event may have missed others.
    for cursor in (before[0].cursor, last_old):
        with pytest.raises(grpc.RpcError) as listed:
            stub(server.channel).ListEvents(
                events_pb2.ListEventsRequest(after_cursor=cursor), timeout=RPC_TIMEOUT
            )
        assert_status(listed.value, grpc.StatusCode.FAILED_PRECONDITION, "empty cursor")
        with pytest.raises(grpc.RpcError) as streamed:
            next(stream(server.channel, after=cursor))
        assert_status(streamed.value, grpc.StatusCode.FAILED_PRECONDITION, "pruned")
    reply = rest(server).get(f"/api/events?after_cursor={last_old}")
    assert_error(reply, 400, "FAILED_PRECONDITION", "pruned")
    # One still kept resumes as before.
    assert list_all(server.channel, after=kept[0].cursor) == kept[1:]


def test_zero_days_keeps_every_event(start_server: Callable[..., Running]) -> None:
    server = start_server(event_retention_days=0.0, event_prune_interval_secs=0.05)
    small_run(server)
    everything = list_all(server.channel)
    _age(server, _id_of(everything[-1].cursor), 10_000)
    assert prune(server.server.db, retention_days=0) == 0
    assert prune(server.server.db, retention_days=20_000) == 0
    assert [e.cursor for e in list_all(server.channel)] == [e.cursor for e in everything]


def test_retention_is_configured_by_env_and_flag() -> None:
    from trellis.server.cli import build_parser, config_from_args

    assert Config.from_env({}).event_retention_days == 30
    assert Config.from_env({"EVENT_RETENTION_DAYS": "0"}).event_retention_days == 0
    with pytest.raises(ValueError, match="EVENT_RETENTION_DAYS"):
        Config.from_env({"EVENT_RETENTION_DAYS": "-1"})
    args = build_parser().parse_args(["serve", "--event-retention-days", "7.5"])
    assert config_from_args(args, {"EVENT_RETENTION_DAYS": "3"}).event_retention_days == 7.5
