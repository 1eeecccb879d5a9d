"""Workers over real gRPC: label matching, the worker registry, and the
standard health and reflection services."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import Running
from engine_helpers import (
    RPC_TIMEOUT,
    claim,
    complete,
    create_workflow,
    get_run,
    job,
    must_claim,
    start_run,
    uid,
)
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from trellis.v1 import runs_pb2, workers_pb2


@pytest.fixture
def server(start_server: Callable[..., Running]) -> Running:
    """A gRPC-only server: the engine tests need no REST bridge."""
    return start_server(rest_enabled=False)


def _workers(server: Running) -> dict[str, workers_pb2.Worker]:
    listed = server.workers.ListWorkers(workers_pb2.ListWorkersRequest(), timeout=RPC_TIMEOUT)
    return {w.worker_id: w for w in listed.workers}


def test_required_labels_pick_the_worker(server: Running) -> None:
    wf = create_workflow(
        server,
        [job("train", labels=["gpu"]), job("report", needs=["train"], labels=["gpu"])],
    )
    run_id = start_run(server, wf)
    cpu, gpu = uid("cpu"), uid("gpu")

    assert claim(server, cpu, ["linux"]) is None
    assert claim(server, cpu, []) is None
    got = must_claim(server, gpu, ["gpu", "linux"])
    assert got.job.job_id == "train"
    assert list(got.job.required_labels) == ["gpu"]
    assert got.lease.worker_id == gpu
    complete(server, got.lease.lease_id)

    # A downstream job keeps its own labels once its parent is done.
    assert claim(server, cpu, ["linux"]) is None
    got = must_claim(server, gpu, ["linux", "gpu"])
    assert got.job.job_id == "report"
    assert list(got.job.required_labels) == ["gpu"]
    complete(server, got.lease.lease_id)
    assert get_run(server, run_id).run.state == runs_pb2.RUN_STATE_SUCCEEDED


def test_unlabelled_jobs_go_to_any_worker(server: Running) -> None:
    wf = create_workflow(server, [job("plain")])
    start_run(server, wf)
    got = must_claim(server, uid("w"), ["whatever"])
    assert got.job.job_id == "plain"
    assert not got.job.required_labels


def test_registry_shows_idle_then_busy_with_the_current_job(server: Running) -> None:
    worker = uid("w")
    registered = server.workers.RegisterWorker(
        workers_pb2.RegisterWorkerRequest(worker_id=worker, labels=["linux", "arm"]),
        timeout=RPC_TIMEOUT,
    )
    assert registered.worker_id == worker
    assert list(registered.labels) == ["arm", "linux"]
    assert registered.status == workers_pb2.WORKER_STATUS_IDLE
    assert registered.registered_at.ToMilliseconds() > 0
    listed = _workers(server)[worker]
    assert listed.status == workers_pb2.WORKER_STATUS_IDLE
    assert not listed.HasField("current_job")

    wf = create_workflow(server, [job("build")])
    start_run(server, wf)
    got = must_claim(server, worker, ["linux", "arm"])
    listed = _workers(server)[worker]
    assert listed.status == workers_pb2.WORKER_STATUS_BUSY
    assert listed.current_job == f"{wf}/build"
    assert listed.last_heartbeat.ToMilliseconds() >= registered.last_heartbeat.ToMilliseconds()

    complete(server, got.lease.lease_id)
    listed = _workers(server)[worker]
    assert listed.status == workers_pb2.WORKER_STATUS_IDLE
    assert not listed.HasField("current_job")

    # Claiming registers an unknown worker too.
    other = uid("w")
    assert claim(server, other, ["x"]) is None
    assert list(_workers(server)[other].labels) == ["x"]


def test_health_and_reflection(server: Running) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "trellis.v1.WorkflowService", "trellis.v1.WorkerService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    database = ProtoReflectionDescriptorDatabase(server.channel)
    services = set(database.get_services())
    assert {
        "trellis.v1.WorkflowService",
        "trellis.v1.RunService",
        "trellis.v1.WorkerService",
        "trellis.v1.LogService",
        "grpc.health.v1.Health",
    } <= services
    # A client can build the full descriptors from reflection alone.
    pool = descriptor_pool.DescriptorPool(database)
    claim_rpc = pool.FindServiceByName("trellis.v1.WorkerService").methods_by_name["ClaimJob"]
    assert claim_rpc.input_type.full_name == "trellis.v1.ClaimJobRequest"
    assert "lease_ttl_secs" in claim_rpc.input_type.fields_by_name
