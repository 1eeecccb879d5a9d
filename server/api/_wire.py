"""The edge of every gRPC call: requests decoded strictly, statuses sent with details.

``WireInterceptor`` is the server's outermost interceptor (the REST bridge's
in-process channel passes it too). Before anything else sees a request, and so
before authentication and rate limits:

- a message that does not decode is INVALID_ARGUMENT, not gRPC's INTERNAL with
  a traceback in the log (the deserializer must not raise, so it hands the
  handler a refusal instead);
- text holding NUL is INVALID_ARGUMENT naming the field. PostgreSQL cannot store
  it, and an id or name with one in it is no one's: refusing it here keeps both
  databases answering alike. Invalid UTF-8 (lone surrogates included) never
  decodes in the first place.

Whatever a handler ends with, the status carries a ``google.rpc.ErrorInfo``
(``_status.ensure_details``), and an exception no handler expected is logged
once and answered INTERNAL without its text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from trellis.server.api import _status
from trellis.server.api._handlers import Wrapped, rewrap

log = logging.getLogger(__name__)

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
INTERNAL_MESSAGE = "internal error; see the server log"


class _Refused:
    """What the deserializer hands on for a request it will not let through."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def nul_field(message: Message, path: str = "") -> str | None:
    """The path of the first string (or map key) in ``message`` holding NUL."""
    for field, value in message.ListFields():
        here = f"{path}.{field.name}" if path else field.name
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            is_text = entry.fields_by_name["value"].type == _STRING
            for key, item in value.items():
                at = f"{here}[{json.dumps(key, ensure_ascii=True)}]"
                if isinstance(key, str) and "\x00" in key:
                    return at
                if is_text and "\x00" in item:
                    return at
                if isinstance(item, Message) and (found := nul_field(item, at)):
                    return found
        elif field.type == _STRING:
            items = value if field.is_repeated else (value,)
            for index, text in enumerate(items):
                if "\x00" in text:
                    return f"{here}[{index}]" if field.is_repeated else here
        elif field.type == _MESSAGE:
            items = value if field.is_repeated else (value,)
            for index, item in enumerate(items):
                at = f"{here}[{index}]" if field.is_repeated else here
                if found := nul_field(item, at):
                    return found
    return None


def _strict(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            request = deserialize(data) if deserialize is not None else data
        except Exception as exc:
            return _Refused(f"request: {exc}")
        # A NUL character is a 0x00 byte on the wire: most requests have none.
        if b"\x00" in data and isinstance(request, Message):
            path = nul_field(request)
            if path is not None:
                return _Refused(f"{path}: text must not contain NUL (\\u0000) characters")
        return request

    return decode


def _refuse(context: grpc.ServicerContext, refused: _Refused) -> None:
    _status.abort(context, grpc.StatusCode.INVALID_ARGUMENT, refused.message)


def _failed(context: grpc.ServicerContext, method: str, exc: Exception) -> None:
    """Gives the status of a call that raised its details; an unexpected exception
    becomes INTERNAL (raising). A client that went away is nobody's error."""
    if isinstance(exc, grpc.RpcError) or not context.is_active():
        return
    if _status.error_code(context) is None:
        log.exception("%s failed", method)
        _status.abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    _status.ensure_details(context)


def _checked_requests(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for request in requests:
        if isinstance(request, _Refused):
            _refuse(context, request)
        yield request


def _guarded_responses(
    responses: Iterator[Any], context: grpc.ServicerContext, method: str
) -> Iterator[Any]:
    try:
        yield from responses
    except Exception as exc:
        _failed(context, method, exc)
        raise
    _status.ensure_details(context)


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    def around(behavior: Callable[..., Any], arg: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(arg, _Refused):
            _refuse(context, arg)
        if handler.request_streaming:
            arg = _checked_requests(arg, context)
        try:
            answer = behavior(arg, context)
        except Exception as exc:
            _failed(context, method, exc)
            raise
        if handler.response_streaming:
            return _guarded_responses(answer, context, method)
        _status.ensure_details(context)
        return answer

    return rewrap(handler, around, request_deserializer=_strict(handler.request_deserializer))


class WireInterceptor(grpc.ServerInterceptor):
    """See the module docstring; put it first, before authentication."""

    def __init__(self) -> None:
        self._wrapped = Wrapped()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        return self._wrapped.get(method, handler, lambda h: _guarded(h, method))
