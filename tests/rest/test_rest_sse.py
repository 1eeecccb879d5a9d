"""The SSE log stream ``GET /api/workflows/{wf}/jobs/{job}/logs/stream`` against
the real server: replay then live chunks, the `end` event, resuming with
Last-Event-ID, keep-alives, the stream cap, disconnects and shutdown.

Reads block with socket timeouts; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Callable
from typing import Any

from conftest import Running, wait_until
from rest_helpers import (
    Event,
    EventStream,
    Rest,
    assert_chunk_shape,
    assert_error,
    chunk,
    rest,
    stream_path,
)


def _running_job(client: Rest, *lines: str) -> tuple[str, str]:
    """A fresh one-job workflow, run and claimed, with ``lines`` logged; (wf, lease)."""
    workflow_id = client.create_workflow([{"id": "job", "command": "true"}])["id"]
    client.run(workflow_id)
    lease_id: str = client.must_claim()["lease"]["lease_id"]
    if lines:
        pushed = [chunk(n, line) for n, line in enumerate(lines)]
        assert client.push_logs(lease_id, pushed) == len(lines)
    return workflow_id, lease_id


def _log_frame(found: dict[str, Any]) -> str:
    """The exact frame the bridge sends for a chunk of the log history."""
    data = json.dumps(found, separators=(",", ":"), ensure_ascii=False)
    return f"id: {found['id']}\nevent: log\ndata: {data}"


def _log(stream: EventStream) -> dict[str, Any]:
    """The next `log` event's chunk, skipping keep-alives."""
    frame = stream.next_event()
    assert frame is not None, "the stream ended early"
    assert frame.event == "log", frame.text
    found: dict[str, Any] = frame.json
    assert_chunk_shape(found)
    assert frame.id == str(found["id"])
    return found


def _assert_end(stream: EventStream, status: str) -> None:
    """The next event is `end` with the job's final status, and then the stream closes."""
    frame = stream.next_event()
    assert frame is not None, "the stream ended without an end event"
    assert frame.text == f'event: end\ndata: {{"status":"{status}"}}'
    assert frame.id is None
    assert stream.next() is None


def test_stream_replays_history_then_follows_live_chunks_then_ends(server: Running) -> None:
    client = rest(server)
    workflow_id, lease_id = _running_job(client, "first line\n", "h\u00e9llo \u2713\n")
    with EventStream(client, stream_path(workflow_id, "job")) as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-cache"
        assert stream.headers["X-Accel-Buffering"] == "no"
        assert stream.headers["Access-Control-Allow-Origin"] == "*"

        history = client.logs(workflow_id, "job")
        for expected in history:
            frame = stream.next_event()
            assert isinstance(frame, Event)
            assert frame.text == _log_frame(expected)

        # Live: pushed after the stream opened, on both streams.
        assert client.push_logs(lease_id, [chunk(0, "oops\n", "stderr"), chunk(2, "last\n")]) == 2
        live = [_log(stream), _log(stream)]
        assert [(c["stream"], c["sequence"], c["data"]) for c in live] == [
            ("stderr", 0, "oops\n"),
            ("stdout", 2, "last\n"),
        ]
        assert live == client.logs(workflow_id, "job")[2:]
        assert history[-1]["id"] < live[0]["id"] < live[1]["id"]

        client.complete(lease_id)
        _assert_end(stream, "success")


def test_stream_resumes_after_last_event_id_without_duplicates_or_loss(
    server: Running,
) -> None:
    client = rest(server)
    workflow_id, lease_id = _running_job(client, "0\n", "1\n", "2\n")
    path = stream_path(workflow_id, "job")
    with EventStream(client, path) as first:
        seen = [_log(first), _log(first)]
    # Chunks logged while the client was away are delivered on reconnect.
    assert client.push_logs(lease_id, [chunk(3, "3\n"), chunk(4, "4\n")]) == 2
    with EventStream(client, path, {"Last-Event-ID": str(seen[-1]["id"])}) as second:
        seen += [_log(second) for _ in range(3)]
        assert client.push_logs(lease_id, [chunk(5, "5\n")]) == 1
        seen.append(_log(second))
        client.complete(lease_id)
        _assert_end(second, "success")

    history = client.logs(workflow_id, "job")
    assert seen == history
    assert [c["data"] for c in seen] == [f"{n}\n" for n in range(6)]
    assert len({c["id"] for c in seen}) == 6

    # Resuming a finished job: the rest of its history, then the end.
    last = {"Last-Event-ID": str(history[3]["id"])}
    with EventStream(client, path, last) as resumed:
        assert [_log(resumed) for _ in range(2)] == history[4:]
        _assert_end(resumed, "success")
    # The id can also come as a query parameter (EventSource cannot set headers).
    with EventStream(client, f"{path}?last_event_id={history[-1]['id']}") as resumed:
        _assert_end(resumed, "success")
    with EventStream(client, path, {"Last-Event-ID": "0"}) as replayed:
        assert [_log(replayed) for _ in range(6)] == history
        _assert_end(replayed, "success")


def test_stream_ends_with_the_final_status_of_the_job(server: Running) -> None:
    client = rest(server)
    cancelled_wf, _ = _running_job(client, "working\n")
    with EventStream(client, stream_path(cancelled_wf, "job")) as stream:
        assert _log(stream)["data"] == "working\n"
        client.ok(client.post(f"/api/workflows/{cancelled_wf}/cancel"), 202)
        _assert_end(stream, "cancelled")

    failed_wf, lease_id = _running_job(client, "trying\n")
    client.fail(lease_id, "exit code 2")
    with EventStream(client, stream_path(failed_wf, "job")) as stream:
        assert _log(stream)["data"] == "trying\n"
        _assert_end(stream, "failure")


def test_idle_stream_sends_keep_alive_comments(start_server: Callable[..., Running]) -> None:
    client = rest(start_server(sse_keepalive_secs=0.2))
    workflow_id, lease_id = _running_job(client, "started\n")
    with EventStream(client, stream_path(workflow_id, "job")) as stream:
        assert _log(stream)["data"] == "started\n"
        # Nothing is logged: the stream sends comments to keep proxies from hanging up.
        for _ in range(3):
            frame = stream.next()
            assert frame is not None
            assert frame.text == ": keep-alive"
            assert (frame.comments, frame.event, frame.data) == (["keep-alive"], None, None)
        assert client.push_logs(lease_id, [chunk(1, "more\n")]) == 1
        assert _log(stream)["data"] == "more\n"
        client.complete(lease_id)
        _assert_end(stream, "success")


def test_unknown_job_is_a_json_404_before_any_stream(
    start_server: Callable[..., Running],
) -> None:
    # A keep-alive far shorter than the server's lookup: the 404 must not depend on it.
    client = rest(start_server(sse_keepalive_secs=0.001))
    client.run("hello")
    for _ in range(5):
        refused = EventStream(client, stream_path("hello", "nope")).read_json_error()
        assert_error(refused, 404, "NOT_FOUND", "job 'nope' not found")
        refused = EventStream(client, stream_path("nope", "hello")).read_json_error()
        assert_error(refused, 404, "NOT_FOUND", "workflow 'nope' not found")
    bad = EventStream(client, stream_path("hello", "hello"), {"Last-Event-ID": "abc"})
    assert_error(bad.read_json_error(), 400, "INVALID_ARGUMENT", "Last-Event-ID")


def test_streams_are_capped_never_starve_requests_and_free_their_slot_on_disconnect(
    start_server: Callable[..., Running],
) -> None:
    # Two stream slots, and only two more threads for everything else.
    client = rest(start_server(sse_keepalive_secs=0.2, max_sse_streams=2, rest_threads=4))
    workflow_id, lease_id = _running_job(client, "line\n")
    path = stream_path(workflow_id, "job")
    streams = [EventStream(client, path) for _ in range(2)]
    try:
        for stream in streams:
            assert stream.status == 200
            assert _log(stream)["data"] == "line\n"
        refused = EventStream(client, path).read_json_error()
        assert_error(refused, 503, "UNAVAILABLE", "too many log streams open (limit 2)")

        # Ordinary requests are served while both streams hold their threads,
        # including a long poll that holds a third thread.
        assert client.ok(client.get("/healthz")) == {"status": "ok"}
        assert client.status(workflow_id)["jobs"][0]["status"] == "running"
        assert client.claim("idle-worker", wait=1) is None
        assert client.push_logs(lease_id, [chunk(1, "live\n")]) == 1
        for stream in streams:
            assert _log(stream)["data"] == "live\n"

        # A client that hangs up gives its slot back.
        streams.pop().close()

        def reopened() -> EventStream | None:
            stream = EventStream(client, path)
            if stream.status == 200:
                return stream
            assert_error(stream.read_json_error(), 503, "UNAVAILABLE")
            return None

        streams.append(wait_until(reopened))
        assert [c["data"] for c in (_log(streams[-1]), _log(streams[-1]))] == ["line\n", "live\n"]
        client.complete(lease_id)
        for stream in streams:
            _assert_end(stream, "success")
    finally:
        for stream in streams:
            stream.close()
    # Streams that ended by themselves free their slots too.
    with EventStream(client, path) as first, EventStream(client, path) as second:
        for stream in (first, second):
            assert stream.status == 200
            assert [_log(stream)["data"] for _ in range(2)] == ["line\n", "live\n"]
            _assert_end(stream, "success")


def test_stopping_the_server_ends_open_streams(start_server: Callable[..., Running]) -> None:
    running = start_server()
    client = rest(running)
    workflow_id, _ = _running_job(client, "line\n")
    with EventStream(client, stream_path(workflow_id, "job")) as stream:
        assert _log(stream)["data"] == "line\n"
        running.stop()
        # The stream ends (cleanly or cut off) instead of hanging the client; a
        # socket timeout here would fail the test.
        with contextlib.suppress(http.client.IncompleteRead, ConnectionError):
            while stream.next() is not None:
                pass
