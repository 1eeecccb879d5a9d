"""Workflow file text into plain data: YAML or JSON, no duplicate keys, numbers as spelled."""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from trellis.server.engine.definitions._errors import DefinitionError, quote

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class SpelledInt(int):
    """An int that remembers how the document wrote it (for env values)."""

    spelling: str


class SpelledFloat(float):
    """A float that remembers how the document wrote it (for env values)."""

    spelling: str


class _DuplicateKey(Exception):
    def __init__(self, mapping: MappingNode, key_node: Node) -> None:
        super().__init__()
        self.mapping = mapping
        self.key_node = key_node


class _Loader(_BaseLoader):
    """PyYAML's safe loader, minus its habit of keeping the last of duplicate keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<` merges are meant to be overridden by the keys beside them
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable; the base class reports it
            if duplicate:
                raise _DuplicateKey(node, key_node)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _construct_int(self, node: ScalarNode) -> int:
        value = SpelledInt(self.construct_yaml_int(node))
        value.spelling = str(node.value)
        return value

    def _construct_float(self, node: ScalarNode) -> float:
        value = SpelledFloat(self.construct_yaml_float(node))
        value.spelling = str(node.value)
        return value

    def _construct_timestamp(self, node: ScalarNode) -> str:
        # Nothing in a workflow is a date; `name: 2024-01-01` means the text.
        return str(node.value)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader._construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader._construct_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader._construct_timestamp)


def load_yaml(text: str, source: str) -> Any:
    root: Node | None = None
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        root = loader.get_single_node()
        return None if root is None else loader.construct_document(root)
    except _DuplicateKey as dup:
        raise _yaml_duplicate_error(source, root, dup) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise DefinitionError(source, f"invalid YAML{at}: {exc.problem or exc}") from None
    except Exception as exc:
        # Anything else from the YAML library (over-long numbers, bad base64, deep nesting in
        # the pure-Python parser, ...) still means the text is not a usable document.
        raise DefinitionError(source, f"invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_documents(text: str, source: str) -> list[Any]:
    """Every document of a YAML stream (``---`` between them), checked as :func:`load_yaml`
    checks one."""
    root: Node | None = None
    loader: _Loader | None = None
    documents: list[Any] = []
    try:
        loader = _Loader(text)
        while loader.check_node():
            root = loader.get_node()
            documents.append(None if root is None else loader.construct_document(root))
        return documents
    except _DuplicateKey as dup:
        raise _yaml_duplicate_error(source, root, dup) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise DefinitionError(source, f"invalid YAML{at}: {exc.problem or exc}") from None
    except Exception as exc:
        raise DefinitionError(source, f"invalid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_duplicate_error(source: str, root: Node | None, dup: _DuplicateKey) -> DefinitionError:
    key_node = dup.key_node
    key = str(key_node.value) if isinstance(key_node, ScalarNode) else "(complex key)"
    line = key_node.start_mark.line + 1 if key_node.start_mark is not None else None
    return _duplicate_error(source, _node_path(root, dup.mapping), key, line)


def _node_path(root: Node | None, target: Node) -> tuple[str | int, ...]:
    """The keys leading from the root to ``target``; aliases may share nodes, so walk once."""
    stack: list[tuple[Node, tuple[str | int, ...]]] = [] if root is None else [(root, ())]
    visited: set[int] = set()
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                label = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
                stack.append((value_node, (*path, label)))
        elif isinstance(node, SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
    return ()


def load_json(text: str, source: str) -> Any:
    duplicates: list[tuple[dict[str, Any], str]] = []

    def make_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            keys: set[str] = set()
            for key, _ in pairs:
                if key in keys:
                    duplicates.append((obj, key))
                    break
                keys.add(key)
        return obj

    def make_int(spelling: str) -> int:
        value = SpelledInt(spelling)
        value.spelling = spelling
        return value

    def make_float(spelling: str) -> float:
        value = SpelledFloat(spelling)
        value.spelling = spelling
        return value

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(
            # A BOM is common in files saved on Windows and carries no meaning.
            text.removeprefix("\ufeff"),
            object_pairs_hook=make_object,
            parse_int=make_int,
            parse_float=make_float,
            parse_constant=reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            source, f"invalid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DefinitionError(source, f"invalid JSON: {exc}") from None
    if duplicates:
        obj, key = duplicates[0]
        raise _duplicate_error(source, _data_path(data, obj), key, None)
    return data


def _data_path(root: Any, target: object) -> tuple[str | int, ...]:
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        value, path = stack.pop()
        if value is target:
            return path
        if isinstance(value, dict):
            stack.extend((item, (*path, key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
    return ()


def _duplicate_error(
    source: str, path: tuple[str | int, ...], key: str, line: int | None
) -> DefinitionError:
    at = f" (line {line})" if line is not None else ""
    if path == ("jobs",):
        return DefinitionError(source, f"defined more than once{at}", job_id=key)
    job_id: str | None = None
    if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], str):
        job_id, path = path[1], path[2:]
    inside = f" in {_dotted(path)}" if path else ""
    return DefinitionError(source, f"duplicate key {quote(key)}{inside}{at}", job_id=job_id)


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
