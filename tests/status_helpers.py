"""What error answers carry: the ``google.rpc.Status`` of a failed gRPC call, and no
error in the server's log."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a failed call; fails the test when it has none or when its
    ``google.rpc.Status`` disagrees with the call's own code and message."""
    assert isinstance(error, grpc.Call)
    found = [v for k, v in error.trailing_metadata() or () if k == DETAILS_KEY]
    assert len(found) == 1, f"{error.code()} {error.details()!r} carries no status details"
    status = status_pb2.Status.FromString(found[0])
    assert (status.code, status.message) == (error.code().value[0], error.details())
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1, status
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.domain == "trellis" and info.reason, info
    return info


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged at ERROR or above (a traceback is logged so)."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
