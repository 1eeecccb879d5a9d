"""``(trellis.v1.rest).bindings`` over a contract compiled here with protoc.

Each case is a small proto package of its own, generated into a temporary directory
and imported, so that the bridge reads real descriptors carrying the options as a
contract author would write them, including the mistakes it must refuse at start-up.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from trellis.rest_bridge import UnsupportedRuleError

# Bindings the bridge must refuse at start-up come from contracts compiled here, so
# they are read with the bridge's own rule reader rather than a running app.
from trellis.rest_bridge._http_rules import HttpBinding, discover_bindings
from trellis.v1 import options_pb2

ROOT = Path(__file__).resolve().parents[2]
_numbers = itertools.count()

SURFACES = """
service Plain {
  option (trellis.v1.surface) = {name: "plain" error_style: ERROR_STYLE_GOOGLE};
}
service Flagged {
  option (trellis.v1.surface) = {
    name: "flagged"
    error_style: ERROR_STYLE_SUCCESS_FLAG
    envelope: ENVELOPE_SUCCESS_DATA
    times: TIME_FORMAT_ISO_SECONDS
  };
}
"""


Compile = Callable[[str], str]


@pytest.fixture
def contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Compile:
    """Compiles ``body`` (services and messages) as a package of its own; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def compile_package(body: str) -> str:
        package = f"bridgetest{next(_numbers)}"
        folder = tmp_path / package / "v1"
        folder.mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
        (folder / "__init__.py").write_text("")
        source = folder / "things.proto"
        source.write_text(
            'syntax = "proto3";\n'
            f"package {package}.v1;\n"
            'import "google/api/annotations.proto";\n'
            'import "trellis/v1/options.proto";\n'
            "message Thing { string id = 1; }\n"
            "message GetThingRequest { string id = 1; }\n" + body
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{tmp_path}",
                f"-I{ROOT / 'proto'}",
                f"-I{ROOT / 'third_party' / 'googleapis'}",
                f"--python_out={tmp_path}",
                str(source),
            ],
            check=True,
            capture_output=True,
        )
        return f"{package}.v1"

    return compile_package


def _bindings(package: str) -> dict[str, HttpBinding]:
    return {binding.path.template: binding for binding in discover_bindings(package)}


GET_THING = """
service Things {
  option (trellis.v1.surface) = {name: "plain"};
  rpc GetThing(GetThingRequest) returns (Thing) {
    option (google.api.http) = {
      get: "/things/{id}"
      additional_bindings: {get: "/v2/things/{id}"}
      additional_bindings: {post: "/v2/things/{id}/fetch" body: "*"}
    };
    option (trellis.v1.rest) = {%s};
  }
}
"""


def test_bindings_take_the_surface_they_name_and_others_their_service_s(
    contract: Compile,
) -> None:
    package = contract(
        SURFACES
        + GET_THING
        % """
      success_code: 202
      bindings: {path: "/v2/things/{id}" surface: "flagged" confirmation: "Fetched"}
      bindings: {path: "/v2/things/{id}/fetch" surface: "flagged" times: TIME_FORMAT_EPOCH_MS
                 success_code: 200}
    """
    )
    found = _bindings(package)
    plain, named, fetch = (
        found["/things/{id}"],
        found["/v2/things/{id}"],
        found["/v2/things/{id}/fetch"],
    )
    assert plain.surface.name == "plain" and plain.confirmation == ""
    assert plain.surface.error_style == options_pb2.ERROR_STYLE_GOOGLE
    assert named.surface.name == "flagged" and named.confirmation == "Fetched"
    assert named.surface.error_style == options_pb2.ERROR_STYLE_SUCCESS_FLAG
    assert named.surface.times == options_pb2.TIME_FORMAT_ISO_SECONDS
    # A binding's own time format refines its surface for that binding only.
    assert fetch.surface.times == options_pb2.TIME_FORMAT_EPOCH_MS
    assert fetch.surface.envelope == options_pb2.ENVELOPE_SUCCESS_DATA
    # The method's success code holds unless a binding says otherwise.
    assert (plain.success_code, named.success_code, fetch.success_code) == (202, 202, 200)


@pytest.mark.parametrize(
    ("declared", "refusal"),
    [
        ('bindings: {path: "/v3/things/{id}" surface: "plain"}', "names no binding"),
        ('bindings: {path: "/v2/things/{id}" surface: "nowhere"}', "undeclared surface"),
        (
            'bindings: {path: "/things/{id}" surface: "plain"}'
            ' bindings: {path: "/things/{id}" surface: "flagged"}',
            "names a path twice",
        ),
        (
            'bindings: {path: "/things/{id}" ignored_parameters: "colour"}',
            "are no request fields",
        ),
    ],
)
def test_bindings_that_name_nothing_fail_start_up(
    contract: Compile, declared: str, refusal: str
) -> None:
    package = contract(SURFACES + GET_THING % declared)
    with pytest.raises(UnsupportedRuleError, match=refusal):
        discover_bindings(package)


def test_a_surface_name_declared_with_two_conventions_fails_start_up(contract: Compile) -> None:
    clash = 'service Other {\n  option (trellis.v1.surface) = {name: "flagged"};\n}\n'
    package = contract(SURFACES + clash)
    with pytest.raises(UnsupportedRuleError, match="'flagged' is declared with other conventions"):
        discover_bindings(package)
