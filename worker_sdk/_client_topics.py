"""The topic calls of :class:`~trellis.worker_sdk.Client`: publish values,
list the topic hierarchy, read a topic's records."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from ._channel import _unary
from ._inputs import _set_value
from ._pb import topics_pb2

if TYPE_CHECKING:
    from ._channel import Connection

_T = TypeVar("_T")
_MAX_PAGE = 1000


class TopicRpc:
    """The ``trellis.v1.TopicService`` calls."""

    def __init__(self, ch: grpc.Channel) -> None:
        s, m = "TopicService", topics_pb2
        self.Publish = _unary(ch, s, "Publish", m.PublishRequest, m.PublishResponse)
        self.ListTopics = _unary(ch, s, "ListTopics", m.ListTopicsRequest, m.ListTopicsResponse)
        self.ListTopicRecords = _unary(
            ch, s, "ListTopicRecords", m.ListTopicRecordsRequest, m.ListTopicRecordsResponse
        )


def _stamp(when: datetime | int | None) -> timestamp_pb2.Timestamp | None:
    """A time as a Timestamp: a datetime (naive ones are UTC) or epoch ms."""
    if when is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    if isinstance(when, datetime):
        stamp.FromDatetime(when)
    else:
        stamp.FromMilliseconds(when)
    return stamp


class TopicCalls:
    """Publishing to topics and reading them back (a part of ``Client``)."""

    if TYPE_CHECKING:
        _conn: Connection

        def _unary(self, method: Callable[..., _T], request: Any) -> _T: ...

    @property
    def _topics(self) -> TopicRpc:
        found = self.__dict__.get("_topic_rpc")
        if found is None:
            found = self.__dict__["_topic_rpc"] = TopicRpc(self._conn.channel)
        assert isinstance(found, TopicRpc)
        return found

    def publish(self, topic: str, value: Any, *, source: str = "") -> topics_pb2.PublishResponse:
        """Publishes ``value`` (JSON-like) to ``topic``, e.g.
        ``mHv1.0/factory/line-1/temperature``; the server creates the topic
        and its parents when they are new.

        Returns the ``PublishResponse``: the stored ``record`` and the
        ``runs`` it started, one per workflow whose `on:` subscribes to the
        topic (``skipped`` names those whose declared inputs refused the
        value). Raises :class:`InvalidArgument` for a topic without a version
        prefix, with an empty level or a wildcard, and ValueError, before any
        call, for a value JSON cannot carry.
        """
        message = struct_pb2.Value()
        _set_value(message, value, "value")
        return self._unary(
            self._topics.Publish,
            topics_pb2.PublishRequest(topic=topic, value=message, source=source),
        )

    def list_topics(self, prefix: str = "") -> list[topics_pb2.Topic]:
        """Topics by name: all of them, or ``prefix`` and the topics below it."""
        found: list[topics_pb2.Topic] = []
        token = ""
        while True:
            page = self._unary(
                self._topics.ListTopics,
                topics_pb2.ListTopicsRequest(prefix=prefix, page_size=_MAX_PAGE, page_token=token),
            )
            found.extend(page.topics)
            token = page.next_page_token
            if not token:
                return found

    def topic_records(
        self,
        topic: str,
        *,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        limit: int = 100,
    ) -> list[topics_pb2.TopicRecord]:
        """A topic's records, newest first: at most ``limit`` of those
        published at or after ``since`` and before ``until`` (datetimes, or
        epoch milliseconds). Raises :class:`NotFound` for an unknown topic."""
        found: list[topics_pb2.TopicRecord] = []
        token = ""
        while len(found) < limit:
            page = self._unary(
                self._topics.ListTopicRecords,
                topics_pb2.ListTopicRecordsRequest(
                    topic=topic,
                    since=_stamp(since),
                    until=_stamp(until),
                    page_size=min(limit - len(found), _MAX_PAGE),
                    page_token=token,
                ),
            )
            found.extend(page.records)
            token = page.next_page_token
            if not token:
                break
        return found[:limit]


__all__ = ["TopicCalls"]
