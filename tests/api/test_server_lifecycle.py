"""Start-up, configuration and graceful shutdown of a whole server."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import Running, wait_until

from trellis.server.cli import build_parser, config_from_args, main
from trellis.server.config import Config
from trellis.v1 import jobs_pb2, workers_pb2, workflows_pb2


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_config_reads_the_documented_environment() -> None:
    config = Config.from_env(
        {
            "PORT": "8080",
            "GRPC_PORT": "9090",
            "DATABASE_URL": "postgresql://u:p@db:5432/trellis",
            "WORKFLOWS_DIR": "/srv/workflows",
            "API_ONLY": "1",
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "REAP_INTERVAL_SECS": "2.5",
            "TRELLIS_MAX_LOST_LEASES": "0",
        }
    )
    assert config.port == 8080
    assert config.grpc_port == 9090
    assert config.database_url == "postgresql://u:p@db:5432/trellis"
    assert config.workflows_dir == Path("/srv/workflows")
    assert config.api_only is True
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.reap_interval_secs == 2.5
    assert config.max_lost_leases == 0
    defaults = Config.from_env({})
    assert (defaults.port, defaults.grpc_port, defaults.api_only) == (3000, 50051, False)
    assert defaults.cors_origins is None
    assert defaults.workflows_dir == Path("workflows")
    assert (defaults.reap_interval_secs, defaults.max_lost_leases) == (5.0, 3)


def test_serve_flags_override_the_environment_and_an_empty_dir_loads_none() -> None:
    args = build_parser().parse_args(["serve", "--workflows-dir", "", "--port", "0"])
    config = config_from_args(args, {"WORKFLOWS_DIR": "/srv/workflows", "PORT": "8080"})
    assert (config.workflows_dir, config.port) == (None, 0)
    args = build_parser().parse_args(["serve", "--workflows-dir", "flows"])
    assert config_from_args(args, {}).workflows_dir == Path("flows")
    assert (
        config_from_args(build_parser().parse_args(["serve"]), {"WORKFLOWS_DIR": ""}).workflows_dir
        is None
    )


def test_serve_refuses_a_bad_environment_variable_with_its_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRELLIS_MAX_LOST_LEASES", "three")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trellis: error: TRELLIS_MAX_LOST_LEASES='three'"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["-1", "three", "2.5"])
def test_a_bad_lost_lease_bound_is_refused_naming_it(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=f"TRELLIS_MAX_LOST_LEASES={value!r}: use a whole"):
        Config.from_env({"TRELLIS_MAX_LOST_LEASES": value})
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["serve", "--max-lost-leases", value])
    assert exited.value.code == 2
    assert f"--max-lost-leases: {value!r}: use a whole number" in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "--max-lost-leases", "7"])
    assert args.max_lost_leases == 7


def test_a_taken_rest_port_moves_on_to_the_next(start_server: Callable[..., Running]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = start_server(port=port)
        assert running.server.rest_port != port
        assert running.server.rest_port > port
        assert _get_json(f"{running.rest_url}/healthz") == {"status": "ok"}


def test_shutdown_ends_streams_cleanly_and_loses_no_lease(
    start_server: Callable[..., Running],
) -> None:
    first = start_server(rest_enabled=False)
    workflow = workflows_pb2.Workflow(
        id="graceful",
        name="graceful",
        jobs=[
            jobs_pb2.Job(id="a", command="noop"),
            jobs_pb2.Job(id="b", command="noop", depends_on=["a"]),
        ],
    )
    first.workflows.CreateWorkflow(workflows_pb2.CreateWorkflowRequest(workflow=workflow))
    stream = first.workers.StreamAssignments(
        workers_pb2.StreamAssignmentsRequest(worker_id="w1", slots=1), timeout=30
    )
    first.workflows.RunWorkflow(workflows_pb2.RunWorkflowRequest(workflow_id="graceful"))
    lease = next(stream).assignments[0].lease

    # A long-polling claim in flight when the server stops still gets its answer.
    answers: list[workers_pb2.ClaimJobResponse | grpc.RpcError] = []

    def long_poll() -> None:
        try:
            answers.append(
                first.workers.ClaimJob(
                    workers_pb2.ClaimJobRequest(worker_id="w2", wait_secs=20),
                    timeout=30,
                )
            )
        except grpc.RpcError as exc:
            answers.append(exc)

    poller = threading.Thread(target=long_poll)
    poller.start()
    # The poll is in flight once its worker is registered (claims register).
    wait_until(
        lambda: any(
            w.worker_id == "w2"
            for w in first.workers.ListWorkers(workers_pb2.ListWorkersRequest()).workers
        )
    )
    first.server.stop(grace=5.0)  # the server alone: the client channel stays open
    poller.join(timeout=30)

    # The stream ended with OK rather than an error, the long poll was answered.
    assert list(stream) == []
    assert stream.code() == grpc.StatusCode.OK
    assert len(answers) == 1
    assert isinstance(answers[0], workers_pb2.ClaimJobResponse)
    assert not answers[0].HasField("assignment")
    first.stop_clients()

    # The lease lives in the database: the next server honours it.
    second = start_server(rest_enabled=False)
    second.workers.CompleteJob(workers_pb2.CompleteJobRequest(lease_id=lease.lease_id))
    got = second.workers.ClaimJob(workers_pb2.ClaimJobRequest(worker_id="w1"))
    assert got.assignment.job.job_id == "b"
