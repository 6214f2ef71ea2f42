"""Every captured request decodes with our types/codecs and re-encodes to an equivalent body."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tinker_actors import codec, manifest
from tinker_actors import types as t
from tinker_actors._proto import tinker_actors_public_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
# Vendored from shared/reference/wire_captures, so a clean clone runs these tests.
CAPTURES = REPO / "tests" / "fixtures" / "wire_captures"

FILES = sorted(CAPTURES.glob("*/*.json"))


def _load(p: Path) -> dict[str, Any]:
    return json.loads(p.read_text())


def _ids(files: list[Path]) -> list[str]:
    return [f"{p.parent.name[:2]}/{p.name}" for p in files]


def _route(req: dict[str, Any]) -> manifest.Route:
    found = manifest.find_route(req["method"], req["path"])
    assert found is not None, f"no manifest route for {req['method']} {req['path']}"
    return found[0]


def test_captures_present() -> None:
    assert len(FILES) > 100


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_request_roundtrip(path: Path) -> None:
    req = _load(path)["request"]
    route = _route(req)
    body = req.get("body")
    if route.request_encoding == "protobuf":
        raw = base64.b64decode(body["_raw_b64"])
        decoded = codec.decode_forward_backward_request(raw)
        again = codec.encode_forward_backward_request(
            decoded.model_id,
            decoded.seq_id,
            decoded.data,
            decoded.loss_fn,
            decoded.loss_fn_config,
            decoded.forward_only,
        )
        assert pb.ForwardBackwardRequest.FromString(again) == pb.ForwardBackwardRequest.FromString(
            raw
        )
        # The recorder's independent decode agrees with ours.
        shown = body["_proto_ForwardBackwardRequest"]
        assert decoded.model_id == shown["model_id"]
        assert decoded.seq_id == shown.get("seq_id", 0)
        for datum, shown_datum in zip(decoded.data, shown["data"], strict=True):
            shown_tokens = [
                tok
                for c in shown_datum["model_input"]
                if "encoded_text" in c
                for tok in c["encoded_text"].get("_tokens_int32", [])
            ]
            if any("encoded_text" in c for c in shown_datum["model_input"]):
                assert codec.datum_tokens_np(datum).tolist() == shown_tokens
            for name, tensor in shown_datum.get("loss_fn_inputs", {}).items():
                if "_dense_decoded" in tensor:
                    got = datum.loss_fn_inputs[name].to_numpy().reshape(-1).tolist()
                    assert got == pytest.approx(tensor["_dense_decoded"])
        return
    if route.request_type is None or body is None:
        assert body in (None, {}, b"", "")
        return
    if isinstance(body, dict) and "_truncated_json" in body:
        pytest.skip("body truncated by the recorder")
    obj = codec.json_decode(json.dumps(body).encode(), route.request_type)
    assert isinstance(obj, route.request_type)
    assert json.loads(codec.json_encode(obj)) == body


def _response_type(req: dict[str, Any], route: manifest.Route, body: Any) -> Any:
    if route.name != "retrieve_future":
        return route.response_type
    if isinstance(body, dict):
        if body.get("type") == "try_again":
            return t.TryAgainResponse
        if "error" in body:
            return t.RequestFailedResponse
        if body.get("status") == "complete_metadata":
            return t.FutureMetadataOnlyResponse
    headers = {k.lower(): v for k, v in req["headers"].items()}
    return manifest.result_type_for_header(headers["x-tinker-request-type"])


@pytest.mark.parametrize("path", FILES, ids=_ids(FILES))
def test_response_decodes(path: Path) -> None:
    cap = _load(path)
    req, resp = cap["request"], cap["response"]
    if resp["status"] != 200 or resp.get("body") is None:
        return
    route = _route(req)
    body = resp["body"]
    ctype = resp["headers"].get("Content-Type", "")
    if "protobuf" in ctype:
        raw = base64.b64decode(body["_raw_b64"])
        headers = {k.lower(): v for k, v in req["headers"].items()}
        kind = headers["x-tinker-request-type"]
        if kind == "Sample":
            out = codec.decode_sample_response(raw)
            shown = body["_proto_SampleResponse"]
            assert len(out.sequences) == len(shown.get("sequences", []))
            for seq, s in zip(out.sequences, shown.get("sequences", []), strict=True):
                assert seq.stop_reason == (
                    "length" if s.get("stop_reason") == "STOP_REASON_LENGTH" else "stop"
                )
                if "_tokens_int32" in s:
                    assert seq.tokens == s["_tokens_int32"]
            again = codec.encode_sample_response(out)
            assert codec.decode_sample_response(again) == out
        else:
            out = codec.decode_forward_backward_output(raw)
            assert out.loss_fn_outputs, "captured fwd/bwd results carry outputs"
            for item in out.loss_fn_outputs:
                assert item["logprobs"].dtype == "float32"
            again = codec.decode_forward_backward_output(codec.encode_forward_backward_output(out))
            assert again == out
        return
    rtype = _response_type(req, route, body)
    if rtype is None:
        return
    obj = codec.json_decode(json.dumps(body).encode(), rtype)
    assert isinstance(obj, rtype)
    # Every non-null value the server sent survives decoding (unknown keys aside).
    _assert_subset(body, obj.model_dump(mode="json"))


def _assert_subset(sent: Any, got: Any) -> None:
    if isinstance(sent, dict):
        for k, v in sent.items():
            if v is not None and k in got:
                _assert_subset(v, got[k])
    elif isinstance(sent, list):
        assert len(sent) == len(got)
        for a, b in zip(sent, got, strict=True):
            _assert_subset(a, b)
    elif isinstance(sent, str) and sent.endswith("Z") and isinstance(got, str):
        assert got.replace("+00:00", "Z") == sent
    else:
        assert got == sent


def test_offline_sparse_image_provenance_capture() -> None:
    cap = _load(CAPTURES / "offline_fwdbwd_proto_sparse_image_provenance.json")
    raw = base64.b64decode(cap["raw_b64"])
    req = codec.decode_forward_backward_request(raw)
    (datum,) = req.data
    assert req.loss_fn == "stable_reinforce"
    assert req.loss_fn_config == {"beta": 0.05, "variant": "v1"}
    assert datum.model_input.chunks[0].tokens_np().tolist() == [10, 11]
    image = datum.model_input.chunks[1]
    assert isinstance(image, t.ImageChunk) and image.format == "png" and image.expected_tokens == 1
    weights = datum.loss_fn_inputs["weights"]
    assert weights.is_sparse and weights.shape == [3, 4]
    assert weights.sparse_crow_indices == [0, 1, 1, 2]
    assert weights.sparse_col_indices == [2, 0]
    dense = weights.to_numpy()
    assert dense[0, 2] == 1.0 and dense[2, 0] == 0.5 and dense.sum() == 1.5
    assert datum.loss_fn_inputs["target_tokens"].to_numpy().shape == (3, 4)
    assert isinstance(datum.model_input_spans[0], t.PromptProvenanceSpan)
    assert isinstance(datum.loss_fn_input_spans[0], t.SampledProvenanceSpan)
    again = codec.encode_forward_backward_request(
        req.model_id, req.seq_id, req.data, req.loss_fn, req.loss_fn_config, req.forward_only
    )
    assert pb.ForwardBackwardRequest.FromString(again) == pb.ForwardBackwardRequest.FromString(raw)
