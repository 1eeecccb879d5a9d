"""The event log through the SDK's Client and the ``trellis events`` command."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from conftest import Running
from events_helpers import SMALL_RUN, list_all, shape, small_run
from sdk_helpers import TRELLIS, Proc, client_for, one_error_line, trellis

from trellis.worker_sdk import FailedPrecondition, InvalidArgument
from trellis.worker_sdk._client_events import event_type, event_type_name


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    return start_server(rest_enabled=False)


def test_the_client_lists_and_follows_events(server: Running) -> None:
    _, run_id = small_run(server)
    with client_for(server) as client:
        page = client.list_events(run_id=run_id, page_size=5)
        assert shape(page.events) == SMALL_RUN[:5]
        rest = client.list_events(page.next_cursor, run_id=run_id)
        assert shape(rest.events) == SMALL_RUN[5:]
        failed = client.list_events(run_id=run_id, types=["job_failed", "JOB_RETRYING"])
        assert [event_type_name(e.type) for e in failed.events] == ["job_retrying", "job_failed"]
        followed = list(itertools.islice(client.follow_events(run_id=run_id), len(SMALL_RUN)))
        assert followed == list_all(server.channel, run_id=run_id)
        resumed = client.follow_events(followed[3].cursor, run_id=run_id)
        assert list(itertools.islice(resumed, len(SMALL_RUN) - 4)) == followed[4:]
        with pytest.raises(InvalidArgument, match="after_cursor"):
            client.list_events("not-a-cursor")
        with pytest.raises(InvalidArgument, match="after_cursor"):
            next(client.follow_events("not-a-cursor"))
        with pytest.raises(FailedPrecondition, match="pruned"):
            client.list_events("0" * 16 + "7" + "f" * 15)
    with pytest.raises(ValueError, match="unknown event type"):
        event_type("job_exploded")


def test_trellis_events_lists_filters_and_resumes(server: Running) -> None:
    wf, run_id = small_run(server)
    target = ("--target", server.grpc_target)
    listed = trellis("events", "--run", run_id, *target)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split("  ")[2] for line in lines] == [t.lower() for t, _, _ in SMALL_RUN]
    first = lines[0].split("  ")
    assert first[3] == f"{wf}@1" and first[4] == run_id and first[5] == "-"
    assert '"trigger":"call"' in lines[0]
    assert "  b#1  " in lines[11] and '"second"' in lines[11]

    after = trellis("events", "--run", run_id, "--after", lines[11].split("  ")[0], *target)
    assert after.stdout.splitlines() == lines[12:]
    only = trellis(
        "events", "--workflow", wf, "--type", "job_skipped", "--type", "run_finished", *target
    )
    assert [line.split("  ")[2] for line in only.stdout.splitlines()] == [
        "job_skipped",
        "run_finished",
    ]
    limited = trellis("events", "--run", run_id, "--limit", "3", *target)
    assert limited.stdout.splitlines() == lines[:3]

    bad = trellis("events", "--after", "nope", *target)
    assert bad.returncode == 1
    assert "after_cursor" in one_error_line(bad)
    unknown = trellis("events", "--type", "exploded", *target)
    assert unknown.returncode == 2 and "unknown event type" in unknown.stderr


def test_trellis_events_follow_prints_new_events(server: Running) -> None:
    proc = Proc([TRELLIS, "events", "--follow", "--target", server.grpc_target])
    try:
        # The sample workflows' events come first.
        proc.expect_stdout("workflow_created")
        _, run_id = small_run(server)
        line = proc.expect_stdout("run_finished")
        assert run_id in line
    finally:
        proc.kill()
