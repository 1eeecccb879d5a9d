"""Times as the identity surfaces spell them: epoch milliseconds <-> ISO 8601 UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from trellis.server.core.errors import InvalidArgument


def iso(ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 UTC ("2025-09-26T10:00:00Z"); "" for none."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str, field: str) -> int | None:
    """An ISO 8601 time as epoch milliseconds (UTC unless it says otherwise)."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"{field}: not an ISO 8601 time: {text[:40]!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)
