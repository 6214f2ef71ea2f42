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


# The checkpoint id ``{kind}/{name}`` spans two path segments; OpenAPI path parameters
# cannot hold a ``/``, so the export spells it as two parameters.
CHECKPOINT_ID_PARAMS = ("checkpoint_kind", "checkpoint_name")
CHECKPOINT_KINDS = ["weights", "sampler_weights", "external_weights"]
PUBLIC_ROUTES = frozenset({"healthz"})  # no X-API-Key needed
ERROR = "#/components/schemas/ErrorResponse"
# Query parameters the server reads as bounded integers (everything else is a string).
INT_QUERY = {"limit": (0, 10_000), "offset": (0, 10**9)}
# Statuses beyond the ones every route can answer, by route name (server/app.py and the
# service parts: 404 unknown or someone else's id, 409 seq id or state conflicts, 410 an
# expired future/model/session, 429 a full sampler queue).
_EXTRA_STATUSES: dict[str, tuple[int, ...]] = {
    "session_heartbeat": (404, 410),
    "session_finish": (404,),
    "create_model": (404, 409, 410),
    "get_info": (404,),
    "forward_backward": (404, 409, 410),
    "forward": (404, 409, 410),
    "optim_step": (404, 409, 410),
    "save_weights": (404, 409, 410),
    "save_weights_for_sampler": (404, 409, 410),
    "save_weights_external": (404, 409, 410),
    "load_weights": (404, 409, 410),
    "unload_model": (404, 410),
    "create_sampling_session": (404, 409, 410),
    "join_sampling_session": (404,),
    "get_sampler": (404,),
    "asample": (404, 409, 410, 429),
    "stream_sample": (404, 409, 410, 429),
    "retrieve_future": (410,),
    "create_custom_loss": (404,),
    "copy_weights": (404, 409),
    "weights_info": (404,),
    "get_training_run": (404,),
    "list_checkpoints": (404,),
    "delete_checkpoint": (404,),
    "publish_checkpoint": (404, 409),
    "unpublish_checkpoint": (404, 409),
    "set_checkpoint_ttl": (404,),
    "get_external_weights_urls": (404,),
    "checkpoint_archive": (302, 404),
    "get_session": (404,),
    "assign_session_project": (404,),
    "export_session_trace": (404,),
}
_REASONS = {
    302: "redirect to a signed download URL (Location, Expires)",
    400: "malformed request (bad JSON or protobuf, nesting too deep, an invalid value)",
    401: "missing or invalid X-API-Key",
    404: "not found (or not the caller's)",
    409: "conflict (a seq id reused with another body, a state already set)",
    410: "gone (an expired or unknown future, a released model, a finished session)",
    413: "body too large",
    415: "unsupported Content-Encoding",
    422: "a body or parameter of the wrong shape or out of its bounds (names the field)",
    429: "the sampler's queue is full: retry with the same seq_id",
}


# Request bodies the server also accepts empty (treated as ``{}``).
OPTIONAL_BODY = frozenset({"auth_token", "session_finish"})
TINKER_PATH = "^tinker://[^/]+/(weights|sampler_weights|external_weights)/[^/]+$"
# server/context.check_name: 1-200 characters, no '/', '\\' or NUL, not starting with '.'
CHECKPOINT_NAME = r"^[^./\\\u0000][^/\\\u0000]{0,199}$"
# Telemetry is decoded leniently (server/app.TelemetryIngest): any event objects.
TELEMETRY_BODY = {
    "type": "object",
    "properties": {"events": {"type": "array", "items": {"type": "object"}}},
    "required": ["events"],
}


def _nonnull(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an ``anyOf [X, null]`` property."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    out = dict(branches[0]) if len(branches) == 1 else {"anyOf": branches}
    if "default" in prop and prop["default"] is not None:
        out["default"] = prop["default"]
    return out


def _narrow(comp: dict[str, Any], name: str, **extra: Any) -> None:
    """Adds constraints to a property's value (its non-null branch when nullable)."""
    prop = comp["properties"][name]
    if "anyOf" in prop:
        prop["anyOf"] = [{**b, **extra} if b.get("type") != "null" else b for b in prop["anyOf"]]
    else:
        prop.update(extra)


def _require(comp: dict[str, Any], *names: str) -> None:
    for name in names:
        comp["properties"][name] = _nonnull(comp["properties"][name])
        if name not in comp.setdefault("required", []):
            comp["required"].append(name)


def _one_of_present(*names: str) -> dict[str, Any]:
    """At least one of ``names`` is present and not null."""
    return {
        "anyOf": [{"required": [n], "properties": {n: {"not": {"type": "null"}}}} for n in names]
    }


def _server_constraints(c: dict[str, Any]) -> None:
    """What the local server checks beyond the wire types, so the export is its truth:
    fields it requires that the types leave to the client, tinker:// paths, checkpoint
    names, and the sampling options it supports."""
    for name in ("OptimStepRequest", "SaveWeightsRequest", "SaveWeightsForSamplerRequest"):
        _require(c[name], "seq_id")
    _require(c["SaveWeightsExternalRequest"], "seq_id")
    _require(c["ForwardRequest"], "seq_id")
    for name in ("SaveWeightsRequest", "SaveWeightsForSamplerRequest"):
        _narrow(c[name], "path", pattern=CHECKPOINT_NAME)
    _narrow(c["SaveWeightsExternalRequest"], "path", pattern=CHECKPOINT_NAME)
    for comp, prop in (
        ("WeightsInfoRequest", "tinker_path"),
        ("LoadWeightsRequest", "path"),
        ("CopyWeightsRequest", "source_path"),
        ("CreateSamplingSessionRequest", "model_path"),
        ("SampleRequest", "model_path"),
    ):
        _narrow(c[comp], prop, pattern=TINKER_PATH)
    # load_weights: in place (model_id + seq_id) or create-via-load (session + model_seq_id)
    c["LoadWeightsRequest"]["anyOf"] = [
        {
            "required": ["model_id", "seq_id"],
            "properties": {
                "model_id": {"type": "string"},
                "seq_id": {"type": "integer"},
                "session_id": {"type": "null"},
            },
        },
        {
            "required": ["session_id", "model_seq_id"],
            "properties": {"session_id": {"type": "string"}, "model_seq_id": {"type": "integer"}},
        },
    ]
    c["CopyWeightsRequest"]["anyOf"] = [
        _one_of_present("destination_project_id"),
        {
            "required": ["session_id", "model_seq_id"],
            "properties": {
                "session_id": {"type": "string", "minLength": 1},
                "model_seq_id": {"type": "integer"},
            },
        },
    ]
    c["SampleRequest"]["anyOf"] = [
        {"required": [n], "properties": {n: {"type": "string", "minLength": 1}}}
        for n in ("sampling_session_id", "base_model", "model_path")
    ]
    # provenance comes as a pair: both span lists or neither
    spans = ("model_input_spans", "loss_fn_input_spans")
    c["Datum"]["anyOf"] = [
        {"required": list(spans), "properties": {k: {"type": "array"} for k in spans}},
        {"properties": {k: {"type": "null"} for k in spans}},
    ]
    c["CreateSamplingSessionRequest"]["anyOf"] = [
        {"required": [n], "properties": {n: {"type": "string", "minLength": 1}}}
        for n in ("base_model", "model_path")
    ]
    for span in ("PromptProvenanceSpan", "SampledProvenanceSpan"):
        _narrow(c[span], "sequence_id", minLength=1)
    _narrow(c["DimuonParams"], "learning_rate", minimum=0)
    _narrow(c["DimuonParams"], "beta1", minimum=0, exclusiveMaximum=1)
    _narrow(c["SessionSearchCursor"], "last_created_at", format="date-time")
    c["LoraConfig"]["not"] = {
        "required": ["train_attn", "train_mlp", "train_unembed"],
        "properties": {k: {"const": False} for k in ("train_attn", "train_mlp", "train_unembed")},
    }
    sp = c["SamplingParams"]["properties"]
    sp["temperature"] = {**sp["temperature"], "minimum": 0}
    sp["top_p"] = {**sp["top_p"], "exclusiveMinimum": 0, "maximum": 1}
    token = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    sp["stop"] = {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}},
            {"type": "array", "items": token},
            {"type": "null"},
        ],
        "default": None,
    }
    # The local server samples from text tokens only, and has no top-k sample logprobs,
    # prompt alternatives or target prompt logprobs.
    req = c["SampleRequest"]["properties"]
    req["topk_sample_logprobs"] = {"type": "integer", "minimum": 0, "maximum": 0}
    req["prompt_alt_tokens_k"] = {"type": "integer", "minimum": 0, "maximum": 0}
    req["target_prompt_logprobs"] = {"type": "null", "default": None}
    req["prompt"] = {
        "type": "object",
        "properties": {
            "chunks": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["encoded_text"]},
                        "tokens": {"type": "array", "items": token, "minItems": 1},
                    },
                    "required": ["type", "tokens"],
                },
            }
        },
        "required": ["chunks"],
    }


def _tensor_pairs(node: Any) -> None:
    """Every inline TensorData: the sparse index lists come together or not at all."""
    if isinstance(node, dict):
        if node.get("title") == "TensorData" and "anyOf" not in node:
            pair = ("sparse_crow_indices", "sparse_col_indices")
            node["anyOf"] = [
                {"required": list(pair), "properties": {k: {"type": "array"} for k in pair}},
                {"properties": {k: {"type": "null"} for k in pair}},
            ]
        for value in node.values():
            _tensor_pairs(value)
    elif isinstance(node, list):
        for value in node:
            _tensor_pairs(value)


def _untagged_tags(components: dict[str, Any]) -> None:
    """A tag field is required only where it tells union members apart: a Struct decoded
    on its own (a request body, a plain field) takes its tag as optional."""
    discriminated: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            mapping = node.get("discriminator", {}).get("mapping", {})
            discriminated.update(ref.rsplit("/", 1)[-1] for ref in mapping.values())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(components)
    for name, comp in components.items():
        if name in discriminated or "required" not in comp:
            continue
        for field, prop in comp.get("properties", {}).items():
            if field in comp["required"] and len(prop.get("enum", ())) == 1:
                comp["required"].remove(field)


def _path_params(r: manifest.Route) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in r.path_params:
        if p in manifest.MULTI_SEGMENT_PARAMS:
            out.append(
                {
                    "name": CHECKPOINT_ID_PARAMS[0],
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": CHECKPOINT_KINDS},
                    "description": "first segment of the checkpoint id '{kind}/{name}'",
                }
            )
            out.append(
                {
                    "name": CHECKPOINT_ID_PARAMS[1],
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
                    "description": "second segment of the checkpoint id '{kind}/{name}'",
                }
            )
        else:
            schema = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
            out.append({"name": p, "in": "path", "required": True, "schema": schema})
    return out


def _query_param(q: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if q in INT_QUERY:
        lo, hi = INT_QUERY[q]
        schema = {"type": "integer", "minimum": lo, "maximum": hi}
    return {"name": q, "in": "query", "required": False, "schema": schema}


def export_path(r: manifest.Route) -> str:
    """The route's path as OpenAPI spells it (the checkpoint id as two parameters)."""
    return r.path.replace(
        "{checkpoint_id}", "{" + CHECKPOINT_ID_PARAMS[0] + "}/{" + CHECKPOINT_ID_PARAMS[1] + "}"
    )


def _null() -> dict[str, Any]:
    return {JSON: {"schema": {"type": "null"}}}


def _operation(r: manifest.Route) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": r.name, "tags": ["legacy" if r.legacy else "v1"]}
    summary = r.summary or r.name.replace("_", " ")
    op["summary"] = summary
    params = _path_params(r) + [_query_param(q) for q in r.query_params]
    if params:
        op["parameters"] = params
    if r.request_type is not None:
        content = _body_content(r.request_type, r.request_encoding)
        if r.name == "telemetry":
            content = {JSON: {"schema": TELEMETRY_BODY, "x-tinker-schema": _ref(r.request_type)}}
        op["requestBody"] = {"required": r.name not in OPTIONAL_BODY, "content": content}
    ok: dict[str, Any] = {"description": "OK"}
    if getattr(r, "event_stream", False):
        ok["content"] = {"text/event-stream": {}}
        ok["description"] = "server-sent events"
    elif r.response_alternatives:
        ok["content"] = {
            JSON: {"schema": {"oneOf": [_ref(t) for t in r.response_alternatives]}},
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
        }
        ok["description"] = "the future's result (JSON or protobuf), or a polling reply"
    elif r.response_type is not None:
        ok["content"] = {JSON: {"schema": _ref(r.response_type)}}
    else:
        ok["content"] = _null()
    statuses = {400, 422}
    if r.name not in PUBLIC_ROUTES:
        statuses.add(401)
    if r.request_type is not None:
        statuses |= {413, 415}
    if r.query_params:
        statuses.add(422)
    statuses |= set(_EXTRA_STATUSES.get(r.name, ()))
    responses: dict[str, Any] = {"200": ok}
    for code in sorted(statuses):
        if code == 302:
            responses["302"] = {
                "description": _REASONS[302],
                "headers": {
                    "Location": {"required": True, "schema": {"type": "string"}},
                    "Expires": {"schema": {"type": "string"}},
                },
                "content": {JSON: {"schema": {"$ref": ERROR}}},
            }
            continue
        responses[str(code)] = {
            "description": _REASONS[code],
            "content": {JSON: {"schema": {"$ref": ERROR}}},
        }
    op["responses"] = responses
    if r.name in PUBLIC_ROUTES:
        op["security"] = []
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
    _server_constraints(components)
    _tensor_pairs(components)
    _untagged_tags(components)
    components["ErrorResponse"] = {
        "type": "object",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    }
    paths: dict[str, dict[str, Any]] = {}
    for r in manifest.ROUTE_LIST:
        paths.setdefault(export_path(r), {})[r.method.lower()] = _operation(r)
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
