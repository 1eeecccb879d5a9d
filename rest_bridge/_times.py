"""``google.protobuf.Timestamp`` fields as the surfaces spell them in JSON.

Canonical messages carry times as Timestamps; a surface's ``times`` convention
(``trellis.v1.TimeFormat``) says how they render: proto3's RFC 3339, ISO 8601 to the
second, or epoch milliseconds under a ``_ms`` key (null or 0 when unset). A field's
own ``(times)`` option overrides its surface's, for a field its document spells
unlike its neighbours. Requests take every spelling on every surface, so a client
may send back any time it read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from trellis.v1 import options_pb2

from ._descriptors import message_type
from ._json_values import CodecError, Json, describe

TIMESTAMP = "google.protobuf.Timestamp"

TimeRenderer = Callable[[Any], Json]
"""Renders one set Timestamp (unset ones are the caller's: see ``unset_time``)."""

_EPOCH_MS_FORMATS = frozenset(
    (
        options_pb2.TIME_FORMAT_EPOCH_MS,
        options_pb2.TIME_FORMAT_EPOCH_MS_OR_ZERO,
        options_pb2.TIME_FORMAT_EPOCH_MS_UNSUFFIXED,
    )
)
_SUFFIXED_FORMATS = frozenset(
    (options_pb2.TIME_FORMAT_EPOCH_MS, options_pb2.TIME_FORMAT_EPOCH_MS_OR_ZERO)
)

# The Python range of datetime, which every parsed time must fit.
_MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() * 1000)


def is_time(field: FieldDescriptor) -> bool:
    """Whether the field holds Timestamps."""
    return field.type == FieldDescriptor.TYPE_MESSAGE and message_type(field).full_name == TIMESTAMP


def field_times(field: FieldDescriptor, times: int) -> int:
    """The ``trellis.v1.TimeFormat`` of a Timestamp field on a surface spelling times
    in ``times``: the field's own ``(times)`` option when it has one."""
    # Untyped, as for every custom option (see ``_descriptors.option``); presence
    # counts, so that a field may ask for RFC 3339 (UNSPECIFIED) on any surface.
    options: Any = field.GetOptions()
    if options.HasExtension(options_pb2.times):
        return int(options.Extensions[options_pb2.times])
    return times


def time_key(key: str, times: int, *, json_names: bool) -> str:
    """The JSON key of a Timestamp field whose plain key is ``key``."""
    if times in _SUFFIXED_FORMATS:
        return key + ("Ms" if json_names else "_ms")
    return key


def ms_keys(field: FieldDescriptor) -> tuple[str, ...]:
    """The keys under which a request may give a Timestamp as epoch milliseconds."""
    return tuple(dict.fromkeys((field.name + "_ms", field.json_name + "Ms")))


def time_renderer(times: int) -> TimeRenderer:
    """Renders a set Timestamp in a ``trellis.v1.TimeFormat``."""
    if times == options_pb2.TIME_FORMAT_ISO_SECONDS:
        return lambda ts: datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if times in _EPOCH_MS_FORMATS:
        return lambda ts: ts.seconds * 1000 + ts.nanos // 1_000_000
    return lambda ts: ts.ToJsonString()


def unset_time(times: int) -> Json:
    """How an unset Timestamp field renders in a ``trellis.v1.TimeFormat``."""
    if times == options_pb2.TIME_FORMAT_ISO_SECONDS:
        return ""
    if times == options_pb2.TIME_FORMAT_EPOCH_MS_OR_ZERO:
        return 0
    return None


def parse_time_text(text: str, path: str) -> timestamp_pb2.Timestamp | None:
    """An RFC 3339 / ISO 8601 time (UTC when it names no offset); None for ``""``."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        # The wording of seed 002, whose time filters are refused this way.
        raise CodecError(path, f"not an ISO 8601 time: {text[:40]!r}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def parse_ms(value: Json, path: str) -> timestamp_pb2.Timestamp:
    """Integer epoch milliseconds (a number, or its decimal text) as a Timestamp."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(path, f"expected epoch milliseconds, got {describe(value)}")
    if not _MIN_MS <= value <= _MAX_MS:
        raise CodecError(path, f"{value} is out of range for a time")
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(value)
    return stamp


def _is_ms(value: Json) -> bool:
    if isinstance(value, str):
        return value.lstrip("-").isdigit()
    return isinstance(value, int) and not isinstance(value, bool)


def _parse(value: Json, path: str, *, ms: bool) -> timestamp_pb2.Timestamp | None:
    if ms:
        return parse_ms(value, path)
    if not isinstance(value, str):
        raise CodecError(path, f"expected an ISO 8601 time, got {describe(value)}")
    return parse_time_text(value, path)


def time_setter(field: FieldDescriptor, *, ms: bool) -> Callable[[Message, Json, str], None]:
    """Sets a singular Timestamp field from JSON: text, or epoch milliseconds if ``ms``.

    A field spelt TIME_FORMAT_EPOCH_MS_UNSUFFIXED takes epoch milliseconds (a number,
    or its decimal text) under its own name too."""
    name = field.name
    numbers = field_times(field, 0) == options_pb2.TIME_FORMAT_EPOCH_MS_UNSUFFIXED

    def set_time(message: Message, value: Json, path: str) -> None:
        stamp = _parse(value, path, ms=ms or (numbers and _is_ms(value)))
        if stamp is None:
            message.ClearField(name)
        else:
            getattr(message, name).CopyFrom(stamp)

    return set_time


def time_text_setter(
    chain: Sequence[FieldDescriptor], path: str, *, ms: bool
) -> Callable[[Message, Sequence[str]], None]:
    """Sets the Timestamp reached through ``chain`` from URL text (the last value)."""
    parents = [field.name for field in chain[:-1]]
    name = chain[-1].name

    def set_text(message: Message, texts: Sequence[str]) -> None:
        target: Any = message
        for parent in parents:
            target = getattr(target, parent)
        stamp = _parse(texts[-1], path, ms=ms)
        if stamp is None:
            target.ClearField(name)
        else:
            getattr(target, name).CopyFrom(stamp)

    return set_text
