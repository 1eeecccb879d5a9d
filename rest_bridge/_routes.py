"""Views that transcode one REST route onto one unary RPC."""

from __future__ import annotations

from collections.abc import Sequence

import flask
import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ._codec import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    CodecError,
    InvalidFormError,
    InvalidJsonError,
    ServerRefusal,
    UnsupportedBodyError,
    body_binder,
    form_binder,
    is_json_type,
    load_form,
    load_json,
    query_setters,
    response_renderer,
    text_setter,
)
from ._descriptors import INTEGER_TYPES, message_class
from ._errors import error_response, json_response, rpc_error_response
from ._http_rules import HttpBinding
from ._metadata import REFUSAL_KEY, InvalidHeaderError, forwarded_metadata
from ._response_headers import apply_headers, call_headers

#: The request field that asks the server to wait (long polling); the call's
#: deadline grows by its value so that a long poll is not cut short by the bridge.
WAIT_FIELD = "wait_secs"
# The server caps waits far lower; this only keeps a client's number from turning
# into an absurd deadline.
_MAX_WAIT_SECS = 3600


class TranscodedRoute:
    """A Flask view for one :class:`HttpBinding`.

    Everything derivable from descriptors (stub, binders, renderer) is prepared here,
    once, so that serving a request is: bind, call, render.
    """

    def __init__(
        self, binding: HttpBinding, channel: grpc.Channel, *, call_timeout_secs: float
    ) -> None:
        self.binding = binding
        request_type = binding.method.input_type
        response_type = binding.method.output_type
        self._request_class = message_class(request_type)
        response_class = message_class(response_type)
        self._stub = channel.unary_unary(
            binding.rpc_path,
            request_serializer=self._request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        self.surface = binding.surface
        self._style = binding.surface.error_style
        self._success_code = binding.success_code
        self._call_timeout = call_timeout_secs
        self._bind_body = body_binder(request_type, binding.body) if binding.body else None
        self._path_setters = tuple(
            (variable.rule_name, text_setter(variable.chain, variable.dotted))
            for variable in binding.path.variables
        )
        path_chains = {_names(variable.chain) for variable in binding.path.variables}
        body = binding.body
        ignored = binding.ignored_parameters

        def bound_elsewhere(chain: Sequence[FieldDescriptor]) -> bool:
            # Only fields bound by neither path nor body come from the query string,
            # and not those the binding's document does not have.
            return (
                body == "*"
                or chain[0].name == body
                or chain[0].name in ignored
                or _names(chain) in path_chains
            )

        self._query_setters = query_setters(request_type, bound_elsewhere)
        # Only the RFC 6749 endpoints declare a form spelling of their (whole) body.
        self._bind_form = (
            form_binder(request_type, lambda chain: _names(chain) in path_chains)
            if binding.form_body
            else None
        )
        self._unsupported = (
            "request body is neither JSON nor a form (Content-Type: {}); send "
            f"{JSON_CONTENT_TYPE} or {FORM_CONTENT_TYPE}"
            if binding.form_body
            else f"request body is not JSON (Content-Type: {{}}); send {JSON_CONTENT_TYPE}"
        )
        self._render = response_renderer(
            response_type,
            binding.response_body,
            json_names=binding.surface.json_names,
            additional=binding.surface.additional_fields,
            times=binding.surface.times,
        )
        if binding.confirmation:
            confirmation = binding.confirmation
            self._render = lambda response: confirmation
        wait = request_type.fields_by_name.get(WAIT_FIELD)
        self._wait_field = (
            WAIT_FIELD
            if wait is not None and not wait.is_repeated and wait.type in INTEGER_TYPES
            else None
        )

    def __call__(self, **path_args: str) -> flask.Response:
        request = flask.request
        message = self._request_class()
        try:
            metadata = forwarded_metadata(request)
            self._bind(request, message, path_args)
        except ServerRefusal as refusal:
            return self._refused_by_server(refusal, metadata)
        except (CodecError, InvalidJsonError, InvalidFormError, InvalidHeaderError) as error:
            return error_response(400, str(error), style=self._style)
        except UnsupportedBodyError as error:
            return error_response(415, str(error), style=self._style)
        timeout = self._call_timeout
        if self._wait_field is not None:
            timeout += min(max(0, getattr(message, self._wait_field)), _MAX_WAIT_SECS)
        try:
            response, call = self._stub.with_call(message, timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            return rpc_error_response(error, style=self._style)
        answer = json_response(self.surface.wrap(self._render(response)), self._success_code)
        apply_headers(answer, self.surface.headers)
        return apply_headers(answer, call_headers(call))

    def _refused_by_server(
        self, refusal: ServerRefusal, metadata: tuple[tuple[str, str], ...]
    ) -> flask.Response:
        """The server's refusal of a value the bridge could not read (its auth and
        limit checks come first, and their headers with the answer)."""
        try:
            self._stub.with_call(
                self._request_class(),
                timeout=self._call_timeout,
                metadata=(*metadata, (REFUSAL_KEY, str(refusal).encode())),
            )
        except grpc.RpcError as error:
            return rpc_error_response(error, style=self._style)
        # A server that does not know the convention took the call as empty.
        return error_response(400, str(refusal), style=self._style)

    def _bind(self, request: flask.Request, message: Message, path_args: dict[str, str]) -> None:
        # Later sources win: body, then query, then path (the URL names the resource).
        if self._bind_body is not None:
            self._bind_request_body(request, message)
        if self._query_setters and request.args:
            for key, values in request.args.lists():
                setter = self._query_setters.get(key)
                # Unknown parameters are ignored, as cache busters and tracking
                # parameters are common in browser and script clients.
                if setter is not None:
                    setter(message, values)
        for name, setter in self._path_setters:
            setter(message, (path_args[name],))

    def _bind_request_body(self, request: flask.Request, message: Message) -> None:
        """A body is read whole, as JSON or as a form, or refused; never half-read.

        Whatever the declared type, a body that parses as JSON is JSON: clients (curl
        ``-d``) often send JSON labelled as a form. Otherwise only a route that takes
        forms reads a form, and a body declared as neither is 415.
        """
        assert self._bind_body is not None
        data = request.get_data(cache=False)
        try:
            value = load_json(data)
        except InvalidJsonError:
            mimetype = request.mimetype
            if self._bind_form is not None and mimetype == FORM_CONTENT_TYPE:
                self._bind_form(message, load_form(data))
                return
            if not mimetype or is_json_type(mimetype):
                raise
            raise UnsupportedBodyError(self._unsupported.format(mimetype)) from None
        self._bind_body(message, value)


def _names(chain: Sequence[FieldDescriptor]) -> tuple[str, ...]:
    return tuple(field.name for field in chain)
