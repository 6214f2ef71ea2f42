"""The manifest matches protocol.md 2.1 (plus three older routes); the OpenAPI export validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tinker_actors import manifest

REPO = Path(__file__).resolve().parents[2]
# Vendored from shared/reference/protocol.md, so a clean clone runs the check.
PROTOCOL = REPO / "tests" / "fixtures" / "protocol.md"

OLDER = {
    ("POST", "/api/v1/forward"),
    ("POST", "/api/v1/unload_model"),
    ("GET", "/api/v1/training_runs/{run_id}/checkpoints/{checkpoint_id}/archive"),
}
# Routes beyond the 0.38 protocol (Tinkex extensions), answered as server-sent events.
EXTENSIONS = {("POST", "/api/v1/stream_sample")}


def _table_rows() -> list[dict[str, object]]:
    text = PROTOCOL.read_text()
    section = text.split("### 2.1", 1)[1].split("### 2.2", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|\s*(GET|POST|PUT|DELETE)\s+`([^`]+)`[^|]*\|(.*)$", line)
        if not m:
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(4))]
        body, immediate, future = cells[0], cells[1], cells[2]
        path = m.group(3).split("?", 1)[0].rstrip("[")
        path = path.replace("{kind}/{name}", "{checkpoint_id}")
        fut = re.sub(r"\*\*proto\*\*", "", future).strip()
        rows.append(
            {
                "number": int(m.group(1)),
                "method": m.group(2),
                "path": path,
                "query": re.findall(r"[?&\[]+(\w+)=", m.group(3)),
                "protobuf_body": "protobuf" in body,
                "immediate": immediate,
                "future": None if fut in ("\u2013", "-", "") else re.match(r"\w+", fut).group(0),
                "proto_result": "**proto**" in future,
            }
        )
    return rows


def test_table_parsed() -> None:
    rows = _table_rows()
    assert [r["number"] for r in rows] == list(range(1, 47))


def test_manifest_matches_protocol_table() -> None:
    rows = _table_rows()
    ours = {(r.method, r.path): r for r in manifest.ROUTE_LIST}
    table = {(r["method"], r["path"]): r for r in rows}
    assert set(ours) == set(table) | OLDER | EXTENSIONS
    assert all(ours[key].event_stream for key in EXTENSIONS)
    for key, row in table.items():
        route = ours[key]
        assert route.number == row["number"], key
        assert route.is_future == (row["future"] is not None), key
        if row["future"]:
            assert route.result_type.__name__ == row["future"], key
            assert route.response_type.__name__ == "UntypedAPIFuture"
            assert route.request_type_header
        assert (route.request_encoding == "protobuf") == row["protobuf_body"], key
        assert (route.result_encoding == "protobuf") == row["proto_result"], key
        assert set(route.query_params) == set(row["query"]), key
        first = re.match(r"[A-Z]\w+", str(row["immediate"]))
        if (
            first
            and not row["future"]
            and route.response_type is not None
            and first.group(0) != "UntypedAPIFuture"
        ):
            assert route.response_type.__name__ == first.group(0), key
        if str(row["immediate"]).startswith("ignored"):
            assert route.response_type is None, key
    for key in OLDER:
        assert ours[key].legacy


def test_route_lookup_and_format_path() -> None:
    r = manifest.route("delete_checkpoint")
    assert manifest.ROUTES["forward_backward"].request_encoding == "protobuf"
    path = r.format_path(run_id="sess-0:train:0", checkpoint_id="weights/step-1")
    assert path == "/api/v1/training_runs/sess-0:train:0/checkpoints/weights/step-1"
    assert manifest.format_path("get_session", session_id="a b") == "/api/v1/sessions/a%20b"
    with pytest.raises(KeyError):
        r.format_path(run_id="x")
    with pytest.raises(KeyError):
        manifest.route("nope")


@pytest.mark.parametrize(
    ("method", "path", "name", "params"),
    [
        (
            "DELETE",
            "/api/v1/training_runs/r/checkpoints/weights/s1",
            "delete_checkpoint",
            {"run_id": "r", "checkpoint_id": "weights/s1"},
        ),
        (
            "DELETE",
            "/api/v1/training_runs/r/checkpoints/sampler_weights/s1/publish",
            "unpublish_checkpoint",
            {"run_id": "r", "checkpoint_id": "sampler_weights/s1"},
        ),
        (
            "POST",
            "/api/v1/training_runs/r/checkpoints/sampler_weights/s1/publish",
            "publish_checkpoint",
            {"run_id": "r", "checkpoint_id": "sampler_weights/s1"},
        ),
        (
            "PUT",
            "/api/v1/training_runs/r/checkpoints/weights/s1/ttl",
            "set_checkpoint_ttl",
            {"run_id": "r", "checkpoint_id": "weights/s1"},
        ),
        (
            "GET",
            "/api/v1/training_runs/r/checkpoints/external_weights/e1/external_weights_urls",
            "get_external_weights_urls",
            {"run_id": "r", "name": "e1"},
        ),
        (
            "GET",
            "/api/v1/training_runs/r/checkpoints/weights/s1/archive",
            "checkpoint_archive",
            {"run_id": "r", "checkpoint_id": "weights/s1"},
        ),
        ("POST", "/api/v1/sessions/search", "search_sessions", {}),
        ("GET", "/api/v1/sessions/s1", "get_session", {"session_id": "s1"}),
    ],
)
def test_find_route(method: str, path: str, name: str, params: dict[str, str]) -> None:
    found = manifest.find_route(method, path)
    assert found is not None
    assert found[0].name == name
    assert found[1] == params


def test_result_type_for_header() -> None:
    assert manifest.result_type_for_header("Forward").__name__ == "ForwardBackwardOutput"
    assert manifest.result_type_for_header("SaveWeightsForSampler").__name__ == (
        "SaveWeightsForSamplerResponseInternal"
    )


def test_openapi_validates() -> None:
    from openapi_spec_validator import validate

    from tinker_actors.openapi import build_openapi

    doc = build_openapi()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    ops = [op for item in doc["paths"].values() for op in item.values()]
    assert len(ops) == len(manifest.ROUTE_LIST)
    fb = doc["paths"]["/api/v1/forward_backward"]["post"]
    assert "application/x-protobuf" in fb["requestBody"]["content"]
    assert fb["x-tinker-future-result"]["encoding"] == "protobuf"
    assert "Datum" in doc["components"]["schemas"]


def test_openapi_cli(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tinker_actors.cli import main

    assert main(["openapi"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "/api/v1/asample" in doc["paths"]
