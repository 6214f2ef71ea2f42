"""OpenAPI 3.1 export, derived from the manifest and msgspec's JSON schemas.

``tinker-actors openapi [-o FILE]`` prints the document. Protobuf bodies are
described as binary with the equivalent JSON-shaped Struct named in an
``x-tinker-schema`` extension; future routes name their result type in
``x-tinker-future-result``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from . import manifest
from .types import schema_hook

REF = "#/components/schemas/{name}"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _ref(type_: Any) -> dict[str, str]:
    return {"$ref": REF.format(name=type_.__name__)}


def _all_types() -> list[Any]:
    seen: dict[str, Any] = {}
    for r in manifest.ROUTE_LIST:
        for tp in (r.request_type, r.response_type, r.result_type, *r.response_alternatives):
            if tp is not None:
                seen.setdefault(tp.__name__, tp)
    return list(seen.values())


def _body_content(type_: Any, encoding: str) -> dict[str, Any]:
    if encoding == "protobuf":
        return {
            PROTOBUF: {
                "schema": {"type": "string", "format": "binary"},
                "x-tinker-schema": _ref(type_),
            }
        }
    return {JSON: {"schema": _ref(type_)}}


def _operation(r: manifest.Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.name, "tags": ["legacy" if r.legacy else "v1"]}
    summary = r.summary or r.name.replace("_", " ")
    op["summary"] = summary
    params = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            **(
                {"description": "checkpoint id '{kind}/{name}' (contains a slash)"}
                if p in manifest.MULTI_SEGMENT_PARAMS
                else {}
            ),
        }
        for p in r.path_params
    ]
    params += [
        {"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
        for q in r.query_params
    ]
    if params:
        op["parameters"] = params
    if r.request_type is not None:
        op["requestBody"] = {
            "required": True,
            "content": _body_content(r.request_type, r.request_encoding),
        }
    ok: dict[str, Any] = {"description": "OK"}
    if r.response_alternatives:
        ok["content"] = {JSON: {"schema": {"oneOf": [_ref(t) for t in r.response_alternatives]}}}
        ok["description"] = "the future's result (JSON or protobuf), or a polling reply"
    elif r.event_stream:
        ok["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        ok["description"] = "server-sent events"
    elif r.response_type is not None:
        ok["content"] = {JSON: {"schema": _ref(r.response_type)}}
    op["responses"] = {
        "200": ok,
        "default": {
            "description": 'error ({"detail": ...})',
            "content": {JSON: {"schema": {"type": "object"}}},
        },
    }
    if r.is_future:
        op["x-tinker-future-result"] = {
            "schema": _ref(r.result_type),
            "encoding": r.result_encoding,
            "request-type-header": r.request_type_header,
        }
    return op


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document for every manifest route."""
    _, components = msgspec.json.schema_components(
        _all_types(), schema_hook=schema_hook, ref_template=REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for r in manifest.ROUTE_LIST:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    try:
        from importlib.metadata import version as _dist_version

        version = _dist_version("tinker-actors")
    except Exception:  # not installed (a bare checkout)
        version = "0.0.0"

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tinker API (as served and spoken by tinker_actors)",
            "version": str(version),
            "description": "Derived from tinker_actors.manifest; wire-compatible with tinker 0.38.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"ApiKey": []}],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    parser.add_argument("--indent", type=int, default=2)


def run(args: argparse.Namespace) -> int:
    text = json.dumps(build_openapi(), indent=args.indent, sort_keys=False)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0
