"""The EventService servicer: the event log's pages and followers."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from trellis.server.api._edge import principal_of, streaming, unary
from trellis.server.engine import Service
from trellis.server.events import EventLog
from trellis.v1 import events_pb2, events_pb2_grpc


class Events(events_pb2_grpc.EventServiceServicer):
    def __init__(self, log: EventLog) -> None:
        self.log = log

    @unary
    def ListEvents(
        self, request: events_pb2.ListEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.ListEventsResponse:
        return self.log.list_events(
            principal_of(context),
            after_cursor=request.after_cursor,
            filter=request.filter if request.HasField("filter") else None,
            page_size=request.page_size,
        )

    @streaming
    def StreamEvents(
        self, request: events_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[events_pb2.Event]:
        yield from self.log.stream_events(
            principal_of(context),
            after_cursor=request.after_cursor,
            filter=request.filter if request.HasField("filter") else None,
            is_active=context.is_active,
            # The headers go out once the stream knows where it starts: a
            # client that waits for them knows what commits next reaches it.
            opened=lambda: context.send_initial_metadata(()),
        )


def event_log_of(service: Service) -> EventLog:
    """The event log's readers over the service's database and wake-ups."""
    return EventLog(
        service.db,
        service.notifier,
        poll_interval=service.poll_interval,
        closing=lambda: service.closing,
    )


def add_to(server: grpc.Server, service: Service) -> None:
    # The generated registration helpers are untyped.
    events_pb2_grpc.add_EventServiceServicer_to_server(  # type: ignore[no-untyped-call]
        Events(event_log_of(service)), server
    )


__all__ = ["Events", "add_to", "event_log_of"]
