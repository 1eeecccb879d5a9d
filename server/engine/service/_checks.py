"""Checks of what callers send, shared by the service's operations."""

from __future__ import annotations

from collections.abc import Sequence

from trellis.server.core.errors import InvalidArgument
from trellis.server.engine._capabilities import MAX_HANDLER_CHARS, MAX_HANDLERS, Capabilities

DEFAULT_TTL_SECS = 30
MAX_TTL_SECS = 3600
# The most jobs one claim may take, and results one report may carry.
MAX_BATCH = 500


def ttl(ttl_secs: int | None) -> int:
    if ttl_secs is None or ttl_secs == 0:
        return DEFAULT_TTL_SECS
    if not 1 <= ttl_secs <= MAX_TTL_SECS:
        raise InvalidArgument(f"lease_ttl_secs: must be between 1 and {MAX_TTL_SECS}")
    return ttl_secs


def check_text(value: str, field: str) -> None:
    # PostgreSQL text cannot hold NUL; refusing it on every backend keeps the
    # two alike instead of storing on one what the other rejects.
    if "\x00" in value:
        raise InvalidArgument(f"{field}: contains a NUL character")


def check_worker(
    worker_id: str, labels: Sequence[str], capabilities: Capabilities | None = None
) -> None:
    if not worker_id:
        raise InvalidArgument("worker_id: required")
    check_text(worker_id, "worker_id")
    if len(worker_id) > 200:
        raise InvalidArgument("worker_id: longer than 200 characters")
    for i, label in enumerate(labels):
        if not label or "," in label or len(label) > 64 or "\x00" in label:
            raise InvalidArgument(f"labels[{i}]: must be 1-64 characters without commas")
    if capabilities is None:
        return
    if len(capabilities.handlers) > MAX_HANDLERS:
        raise InvalidArgument(f"capabilities.handlers: at most {MAX_HANDLERS}")
    for i, name in enumerate(capabilities.handlers):
        if not name or len(name) > MAX_HANDLER_CHARS or "\x00" in name:
            raise InvalidArgument(
                f"capabilities.handlers[{i}]: must be 1-{MAX_HANDLER_CHARS} characters without NUL"
            )


__all__ = ["DEFAULT_TTL_SECS", "MAX_BATCH", "MAX_TTL_SECS", "check_text", "check_worker", "ttl"]
