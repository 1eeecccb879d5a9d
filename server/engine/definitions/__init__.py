"""Workflow definitions: one model, one parser, validated as a whole, then frozen.

Definitions arrive as workflow files (workflow-graph's YAML/JSON format, read from
``WORKFLOWS_DIR``), as the workflow of ``POST /api/workflows`` / ``CreateWorkflow`` (a mapping
or a ``Workflow`` message), and as the stored JSON of a version. Each is first read into the
same plain draft, which one validation pass turns into the immutable :class:`WorkflowDef` that
the engine stores and runs. A definition is either accepted completely or rejected with one
:class:`DefinitionError` that names the source and, where it applies, the job; no other
exception escapes for any input.

A definition may declare the inputs its runs take (:class:`InputDef`);
:meth:`WorkflowDef.resolve_inputs` checks a run's values against them and raises
:class:`InputError`, and :func:`input_env_name` names the variable a shell job sees one as.

Definitions travel between installations as documents of the file format with their ids in
them (:func:`dump_documents`, :func:`parse_documents`).
"""

from trellis.server.engine.definitions._api import parse_api_mapping, parse_message, parse_request
from trellis.server.engine.definitions._errors import DefinitionError, InputError
from trellis.server.engine.definitions._export import (
    dump_documents,
    parse_documents,
    to_api_mapping,
    to_document,
)
from trellis.server.engine.definitions._file import (
    load_dir,
    parse_file,
    parse_file_mapping,
    parse_text,
)
from trellis.server.engine.definitions._model import (
    MAX_BACKOFF_SECS,
    MAX_ID_LENGTH,
    MAX_JOBS,
    MAX_LABEL_LENGTH,
    MAX_RETRIES,
    MAX_TIMEOUT_SECS,
    Backoff,
    BackoffKind,
    InputDef,
    InputType,
    JobDef,
    TriggerDef,
    WorkflowDef,
)
from trellis.server.engine.definitions._triggers import (
    TRIGGER_INPUTS,
    TopicError,
    filters_match,
    latest_fire_ms,
    literal_prefix,
    next_fire_ms,
    topic_matches,
    topic_name,
    topic_pattern,
    topic_prefixes,
)
from trellis.server.engine.definitions._values import input_env_name

__all__ = [
    "MAX_BACKOFF_SECS",
    "MAX_ID_LENGTH",
    "MAX_JOBS",
    "MAX_LABEL_LENGTH",
    "MAX_RETRIES",
    "MAX_TIMEOUT_SECS",
    "TRIGGER_INPUTS",
    "Backoff",
    "BackoffKind",
    "DefinitionError",
    "InputDef",
    "InputError",
    "InputType",
    "JobDef",
    "TopicError",
    "TriggerDef",
    "WorkflowDef",
    "dump_documents",
    "filters_match",
    "input_env_name",
    "latest_fire_ms",
    "literal_prefix",
    "load_dir",
    "next_fire_ms",
    "parse_api_mapping",
    "parse_documents",
    "parse_file",
    "parse_file_mapping",
    "parse_message",
    "parse_request",
    "parse_text",
    "to_api_mapping",
    "to_document",
    "topic_matches",
    "topic_name",
    "topic_pattern",
    "topic_prefixes",
]
