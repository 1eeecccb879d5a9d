"""The TopicService servicer: messages in, the engine's answers out."""

from __future__ import annotations

import grpc

from trellis.server.api._edge import caller_of, principal_of, unary
from trellis.server.core.times import millis
from trellis.server.engine import Service
from trellis.v1 import topics_pb2, topics_pb2_grpc


class Topics(topics_pb2_grpc.TopicServiceServicer):
    def __init__(self, service: Service) -> None:
        self.s = service

    @unary
    def Publish(
        self, request: topics_pb2.PublishRequest, context: grpc.ServicerContext
    ) -> topics_pb2.PublishResponse:
        principal, ip = caller_of(context)
        return self.s.publish(
            principal,
            request.topic,
            request.value if request.HasField("value") else None,
            request.source,
            ip=ip,
        )

    @unary
    def ListTopics(
        self, request: topics_pb2.ListTopicsRequest, context: grpc.ServicerContext
    ) -> topics_pb2.ListTopicsResponse:
        return self.s.list_topics(
            principal_of(context),
            prefix=request.prefix,
            page_size=request.page_size,
            page_token=request.page_token,
        )

    @unary
    def ListTopicRecords(
        self, request: topics_pb2.ListTopicRecordsRequest, context: grpc.ServicerContext
    ) -> topics_pb2.ListTopicRecordsResponse:
        return self.s.list_topic_records(
            principal_of(context),
            request.topic,
            since_ms=millis(request, "since") or 0,
            until_ms=millis(request, "until") or 0,
            page_size=request.page_size,
            page_token=request.page_token,
        )


def add_to(server: grpc.Server, service: Service) -> None:
    # The generated registration helpers are untyped.
    topics_pb2_grpc.add_TopicServiceServicer_to_server(Topics(service), server)  # type: ignore[no-untyped-call]


__all__ = ["Topics", "add_to"]
