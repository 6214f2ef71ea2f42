"""Wire types and codecs: ergonomics, hypothesis round-trips, and the official SDK as an oracle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinker_actors import codec, errors
from tinker_actors import types as t
from tinker_actors._proto import tinker_actors_public_pb2 as pb

official = pytest.importorskip("tinker.types")
from tinker.proto import tinker_public_pb2 as official_pb  # noqa: E402
from tinker.proto.request_conv import forward_backward_request_to_proto  # noqa: E402
from tinker.proto.response_conv import (  # noqa: E402
    deserialize_forward_backward_output,
    deserialize_sample_response,
)

tokens_st = st.lists(st.integers(0, 2**31 - 1), max_size=40)
f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def dense_arrays(draw: st.DrawFn) -> np.ndarray:
    kind = draw(st.sampled_from(["float32", "int64"]))
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    n = int(np.prod(shape))
    if kind == "float32":
        vals = draw(st.lists(f32, min_size=n, max_size=n))
    else:
        vals = draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
    return np.asarray(vals, dtype=kind).reshape(shape)


@st.composite
def sparse_arrays(draw: st.DrawFn) -> np.ndarray:
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["float32", "int64"]))
    arr = np.zeros((rows, cols), dtype=kind)
    for _ in range(draw(st.integers(0, 2))):
        r, c = draw(st.integers(0, rows - 1)), draw(st.integers(0, cols - 1))
        arr[r, c] = draw(st.integers(1, 1000))
    return arr


@st.composite
def datums(draw: st.DrawFn) -> t.Datum:
    toks = draw(tokens_st)
    n = len(toks)
    inputs = {
        "target_tokens": draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n)),
        "weights": draw(st.lists(f32, min_size=n, max_size=n)),
    }
    if draw(st.booleans()):
        inputs["advantages"] = np.asarray(draw(st.lists(f32, min_size=n, max_size=n)), np.float32)
    return t.Datum(model_input=t.ModelInput.from_ints(toks), loss_fn_inputs=inputs)


def _official_datum(d: t.Datum) -> official.Datum:
    return official.Datum(
        model_input=official.ModelInput.from_ints(d.model_input.to_ints()),
        loss_fn_inputs={
            k: official.TensorData(
                data=v.values_np,
                dtype=v.dtype,
                shape=v.shape,
                sparse_crow_indices=v.sparse_crow_indices,
                sparse_col_indices=v.sparse_col_indices,
            )
            for k, v in d.loss_fn_inputs.items()
        },
    )


# -- ergonomics ----------------------------------------------------------------------------
def test_user_code_shape() -> None:
    d = t.Datum(
        model_input=t.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [0, 1, 1]},
    )
    assert d.loss_fn_inputs["target_tokens"].dtype == "int64"
    assert d.loss_fn_inputs["weights"].dtype == "float32"
    assert d.loss_fn_inputs["weights"].tolist() == [0.0, 1.0, 1.0]
    assert d.model_input.length == 3 and d.model_input.to_ints() == [1, 2, 3]
    mi = t.ModelInput.empty().append(t.EncodedTextChunk(tokens=[5])).append_int(6)
    assert mi.to_ints() == [5, 6] and mi.chunks[0].length == 1
    assert t.ModelInput.from_ints([1]).chunks[0].type == "encoded_text"


@pytest.mark.parametrize(
    ("key", "value", "dtype"),
    [
        ("target_tokens", [1.0, 2.0], "int64"),
        ("weights", [1, 2], "float32"),
        ("advantages", [1, 2], "float32"),
        ("logprobs", [1, 2], "float32"),
        ("sequence_ratio_mask", [1, 0], "float32"),
        ("custom_int", np.array([1, 2], dtype=np.int32), "int64"),
        ("custom_float", np.array([1, 2], dtype=np.float64), "float32"),
    ],
)
def test_automatic_dtypes_match_official(key: str, value: object, dtype: str) -> None:
    ours = t.Datum(model_input=t.ModelInput.from_ints([1, 2]), loss_fn_inputs={key: value})
    assert ours.loss_fn_inputs[key].dtype == dtype
    if not key.startswith("custom"):
        theirs = official.Datum(
            model_input=official.ModelInput.from_ints([1, 2]), loss_fn_inputs={key: value}
        )
        assert theirs.loss_fn_inputs[key].dtype == dtype


def test_torch_inputs_and_sparsify() -> None:
    torch = pytest.importorskip("torch")
    tt = torch.zeros((4, 8), dtype=torch.int64)
    tt[0, 1] = 7
    d = t.Datum(
        model_input=t.ModelInput.from_ints([1]),
        loss_fn_inputs={"target_tokens": tt, "advantages": torch.ones(3, dtype=torch.bfloat16)},
    )
    td = d.loss_fn_inputs["target_tokens"]
    assert td.is_sparse and td.shape == [4, 8]
    assert torch.equal(td.to_torch(), tt)
    assert d.loss_fn_inputs["advantages"].dtype == "float32"
    assert td.to_numpy(pad_value=-1)[1, 1] == -1


def test_pydantic_shims() -> None:
    p = t.SamplingParams(max_tokens=5, temperature=0.5)
    assert p.model_dump()["max_tokens"] == 5 and p.model_dump()["seed"] is None
    assert "seed" not in p.model_dump(exclude_none=True)
    q = p.model_copy(update={"seed": 3})
    assert q.seed == 3 and p.seed is None
    assert t.SamplingParams.model_validate({"max_tokens": 2}).max_tokens == 2
    cfg = t.ClientConfigResponse.model_validate({"parallel_fwdbwd_chunks": False, "extra": 1})
    assert cfg.parallel_fwdbwd_chunks is False and cfg.fwdbwd_max_chunk_len == 1024
    assert json.loads(p.model_dump_json())["temperature"] == 0.5


def test_sampling_params_json_omits_none_like_official() -> None:
    ours = json.loads(codec.json_encode(t.SamplingParams()))
    theirs = official.SamplingParams().model_dump(exclude_none=True, mode="json")
    assert ours == theirs == {"temperature": 1.0, "top_k": -1, "top_p": 1.0}


@given(
    max_tokens=st.none() | st.integers(1, 10_000),
    seed=st.none() | st.integers(0, 2**63),
    stop=st.none()
    | st.text(max_size=5)
    | st.lists(st.text(max_size=3), max_size=3)
    | st.lists(st.integers(0, 1000), max_size=3),
    temperature=f32,
    top_k=st.integers(-1, 100),
    top_p=st.floats(0, 1),
)
def test_sampling_params_roundtrip_and_official(
    max_tokens, seed, stop, temperature, top_k, top_p
) -> None:  # type: ignore[no-untyped-def]
    kw = dict(
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )
    ours = t.SamplingParams(**kw)
    body = codec.json_encode(ours)
    assert codec.json_decode(body, t.SamplingParams) == ours
    assert json.loads(body) == official.SamplingParams(**kw).model_dump(
        exclude_none=True, mode="json"
    )


@given(toks=tokens_st, n=st.integers(1, 3), logprobs=st.booleans(), topk=st.integers(0, 3))
def test_sample_request_json_matches_official(toks, n, logprobs, topk) -> None:  # type: ignore[no-untyped-def]
    kw = dict(
        num_samples=n,
        sampling_session_id="s:sample:0",
        seq_id=3,
        prompt_logprobs=logprobs,
        topk_prompt_logprobs=topk,
        record_stability_info=False,
    )
    ours = t.SampleRequest(
        prompt=t.ModelInput.from_ints(toks), sampling_params=t.SamplingParams(max_tokens=4), **kw
    )
    theirs = official.SampleRequest(
        prompt=official.ModelInput.from_ints(toks),
        sampling_params=official.SamplingParams(max_tokens=4),
        **kw,
    )
    assert json.loads(codec.json_encode(ours)) == theirs.model_dump(exclude_none=True, mode="json")


@given(toks=st.lists(tokens_st, max_size=3))
def test_model_input_roundtrip(toks) -> None:  # type: ignore[no-untyped-def]
    mi = t.ModelInput(chunks=[t.EncodedTextChunk(tokens=x) for x in toks])
    assert codec.json_decode(codec.json_encode(mi), t.ModelInput) == mi
    assert mi.to_ints() == [x for chunk in toks for x in chunk]
    assert mi.length == sum(len(x) for x in toks)
    assert mi.to_numpy().tolist() == mi.to_ints()


def test_image_and_dmel_chunks_json() -> None:
    mi = t.ModelInput(
        chunks=[
            t.ImageChunk(data=b"\x89PNG", format="png", expected_tokens=3),
            t.ImageAssetPointerChunk(format="jpeg", location="s3://x", expected_tokens=2),
            t.DmelChunk(dmel=bytes([0xFE, 1, 2, 5, 9])),
        ]
    )
    assert mi.length == 3 + 2 + 5
    body = json.loads(codec.json_encode(mi))
    assert body["chunks"][0] == {
        "type": "image",
        "data": "iVBORw==",
        "format": "png",
        "expected_tokens": 3,
    }
    assert codec.json_decode(codec.json_encode(mi), t.ModelInput) == mi
    with pytest.raises(ValueError):
        _ = t.ImageChunk(data=b"", format="png").length


@given(arr=dense_arrays())
def test_tensor_dense_roundtrip(arr: np.ndarray) -> None:
    td = t.TensorData.from_numpy(arr)
    back = codec.json_decode(codec.json_encode(td), t.TensorData)
    assert back == td
    assert np.array_equal(back.to_numpy(), arr)
    assert back.to_numpy().shape == arr.shape


@given(arr=sparse_arrays())
def test_tensor_sparse_roundtrip(arr: np.ndarray) -> None:
    td = t.TensorData.from_numpy_sparse(arr)
    assert np.array_equal(td.to_numpy(), arr)
    back = codec.json_decode(codec.json_encode(td), t.TensorData)
    assert np.array_equal(back.to_numpy(), arr)
    if td.is_sparse:
        # The official SDK densifies our CSR to the same array.
        theirs = official.TensorData(
            data=td.data,
            dtype=td.dtype,
            shape=td.shape,
            sparse_crow_indices=td.sparse_crow_indices,
            sparse_col_indices=td.sparse_col_indices,
        )
        assert np.array_equal(theirs.to_numpy(), arr)


def test_tensor_bad_sparse_raises() -> None:
    td = t.TensorData(
        data=[1.0],
        dtype="float32",
        shape=[2, 2],
        sparse_crow_indices=[0, 1, 5],
        sparse_col_indices=[0],
    )
    with pytest.raises(ValueError):
        td.to_numpy()
    with pytest.raises(TypeError):
        t.TensorData(data=[1])


@settings(max_examples=50)
@given(
    data=st.lists(datums(), max_size=4),
    fwd=st.booleans(),
    cfg=st.none()
    | st.dictionaries(st.sampled_from(["a", "b", "mode"]), f32 | st.text(max_size=3), max_size=3),
)
def test_fwdbwd_request_matches_official_and_roundtrips(data, fwd, cfg) -> None:  # type: ignore[no-untyped-def]
    ours = codec.encode_forward_backward_request("m:train:0", 5, data, "ppo", cfg, fwd)
    theirs_msg = forward_backward_request_to_proto(
        official.ForwardBackwardRequest(
            forward_backward_input=official.ForwardBackwardInput(
                data=[_official_datum(d) for d in data], loss_fn="ppo", loss_fn_config=cfg
            ),
            model_id="m:train:0",
            seq_id=5,
        )
    )
    theirs_msg.forward_only = fwd
    assert official_pb.ForwardBackwardRequest.FromString(ours) == theirs_msg
    back = codec.decode_forward_backward_request(ours)
    assert (back.model_id, back.seq_id, back.loss_fn, back.forward_only) == (
        "m:train:0",
        5,
        "ppo",
        fwd,
    )
    assert back.data == data
    expected_cfg = {k: (v if isinstance(v, str) else float(v)) for k, v in (cfg or {}).items()}
    assert (back.loss_fn_config or {}) == expected_cfg
    for d, b in zip(data, back.data, strict=True):
        assert np.array_equal(
            codec.datum_tokens_np(b), np.asarray(d.model_input.to_ints(), np.int64)
        )
        for k, v in codec.datum_loss_fn_inputs_np(b).items():
            assert np.array_equal(v, d.loss_fn_inputs[k].to_numpy())


def test_fwdbwd_sparse_provenance_roundtrip() -> None:
    weights = np.zeros((3, 5), np.float32)
    weights[1, 2] = 0.5
    d = t.Datum(
        model_input=t.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={
            "weights": t.TensorData.from_numpy_sparse(weights),
            "target_tokens": [1, 2, 3],
        },
    ).with_provenance(
        model_input=[t.PromptProvenanceSpan(sequence_id="s", length=3)],
        loss_fn_inputs=[t.SampledProvenanceSpan(sequence_id="s", offset=1, length=3)],
    )
    body = codec.encode_forward_backward_request("m", 1, [d], "stable_reinforce", None, False)
    assert codec.decode_forward_backward_request(body).data == [d]
    with pytest.raises(ValueError):
        d.with_provenance(
            model_input=[t.PromptProvenanceSpan(sequence_id="s", length=2)], loss_fn_inputs=[]
        )


def test_image_pointer_not_encodable_in_fwdbwd() -> None:
    d = t.Datum(
        model_input=t.ModelInput(chunks=[t.ImageAssetPointerChunk(format="png", location="x")])
    )
    with pytest.raises(errors.EncodeError):
        codec.encode_forward_backward_request("m", 1, [d], "cross_entropy", None, False)


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x1a\x05\x0a\x03\x0a\x01", b"\x0a\x80"])
def test_decoders_raise_typed_errors(garbage: bytes) -> None:
    for fn in (
        codec.decode_forward_backward_request,
        codec.decode_forward_backward_output,
        codec.decode_sample_response,
    ):
        with pytest.raises(errors.DecodeError):
            fn(garbage)
    with pytest.raises(errors.DecodeError):
        codec.json_decode(b"{not json", t.SamplingParams)
    with pytest.raises(errors.DecodeError):
        codec.json_decode(b'{"max_tokens": "x"}', t.SamplingParams)
    assert isinstance(errors.DecodeError("x"), ValueError)


def test_decode_rejects_misaligned_tokens() -> None:
    msg = pb.ForwardBackwardRequest(model_id="m", seq_id=1)
    msg.data.add().model_input.add().encoded_text.tokens = b"\x01\x02\x03"
    with pytest.raises(errors.DecodeError):
        codec.decode_forward_backward_request(msg.SerializeToString())


@st.composite
def fwdbwd_outputs(draw: st.DrawFn) -> t.ForwardBackwardOutput:
    outs = []
    for _ in range(draw(st.integers(0, 4))):
        n = draw(st.integers(0, 6))
        outs.append(
            {
                "logprobs": t.TensorData.from_numpy(
                    np.asarray(draw(st.lists(f32, min_size=n, max_size=n)), np.float32)
                )
            }
        )
    metrics = draw(st.dictionaries(st.sampled_from(["loss:sum", "n:mean"]), st.floats(-1e6, 1e6)))
    return t.ForwardBackwardOutput(
        loss_fn_output_type="ArrayRecord", loss_fn_outputs=outs, metrics=metrics
    )


@given(out=fwdbwd_outputs())
def test_fwdbwd_output_roundtrip_and_official(out: t.ForwardBackwardOutput) -> None:
    body = codec.encode_forward_backward_output(out)
    assert codec.decode_forward_backward_output(body) == out
    theirs = deserialize_forward_backward_output(body)
    assert theirs.metrics == out.metrics
    assert len(theirs.loss_fn_outputs) == len(out.loss_fn_outputs)
    for a, b in zip(theirs.loss_fn_outputs, out.loss_fn_outputs, strict=True):
        assert np.array_equal(a["logprobs"].to_numpy(), b["logprobs"].to_numpy())


def test_fwdbwd_output_ragged_2d_and_ints() -> None:
    out = t.ForwardBackwardOutput(
        loss_fn_output_type="x:ArrayRecord",
        loss_fn_outputs=[
            {
                "logprobs": t.TensorData.from_numpy(np.ones((2, 3), np.float32)),
                "ids": t.TensorData.from_numpy(np.arange(2)),
            },
            {
                "logprobs": t.TensorData.from_numpy(np.ones((1, 4), np.float32)),
                "ids": t.TensorData.from_numpy(np.arange(5)),
            },
        ],
        metrics={"loss:sum": 1.0},
    )
    back = codec.decode_forward_backward_output(codec.encode_forward_backward_output(out))
    assert back.loss_fn_output_type == "ArrayRecord"
    assert back.loss_fn_outputs == out.loss_fn_outputs
    assert back.loss_fn_outputs[1]["logprobs"].to_numpy().shape == (1, 4)


def test_bfloat16_and_int32_outputs_widen() -> None:
    msg = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    rec = msg.loss_fn_outputs.add(num_datums=1)
    vals = np.array([1.5, -2.0], np.float32)
    rec.fields["lp"].data = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    rec.fields["lp"].offsets = np.array([0, 4], "<i8").tobytes()
    rec.fields["lp"].dtype = pb.DTYPE_BFLOAT16
    rec.fields["ids"].data = np.array([7, 8], "<i4").tobytes()
    rec.fields["ids"].offsets = np.array([0, 8], "<i8").tobytes()
    rec.fields["ids"].dtype = pb.DTYPE_INT32
    (item,) = codec.decode_forward_backward_output(msg.SerializeToString()).loss_fn_outputs
    assert item["lp"].to_numpy().tolist() == [1.5, -2.0] and item["lp"].dtype == "float32"
    assert item["ids"].to_numpy().dtype == np.int64 and item["ids"].tolist() == [7, 8]


@st.composite
def sample_responses(draw: st.DrawFn) -> t.SampleResponse:
    seqs = []
    for _ in range(draw(st.integers(0, 3))):
        toks = draw(tokens_st)
        lp = draw(st.none() | st.lists(f32, min_size=len(toks), max_size=len(toks)))
        seqs.append(
            t.SampledSequence(
                stop_reason=draw(st.sampled_from(["stop", "length"])),
                tokens=toks,
                logprobs=lp or None,
            )
        )
    prompt_lp = draw(st.none() | st.lists(st.none() | f32, min_size=1, max_size=5))
    topk = draw(
        st.none()
        | st.lists(
            st.none() | st.lists(st.tuples(st.integers(1, 1000), f32), min_size=1, max_size=3),
            min_size=1,
            max_size=4,
        )
    )
    return t.SampleResponse(
        sequences=seqs,
        prompt_logprobs=prompt_lp,
        topk_prompt_logprobs=topk,
        prompt_cache_hit_tokens=draw(st.integers(0, 100)),
    )


@given(resp=sample_responses())
def test_sample_response_roundtrip_and_official(resp: t.SampleResponse) -> None:
    body = codec.encode_sample_response(resp)
    ids = [f"seq-{i}" for i in range(len(resp.sequences))]
    back = codec.decode_sample_response(body, ids)
    assert [s.sequence_id for s in back.sequences] == ids
    assert [s.tokens for s in back.sequences] == [s.tokens for s in resp.sequences]
    assert [s.logprobs for s in back.sequences] == [s.logprobs for s in resp.sequences]
    assert back.prompt_logprobs == resp.prompt_logprobs
    if resp.topk_prompt_logprobs is not None and all(r is None for r in resp.topk_prompt_logprobs):
        assert back.topk_prompt_logprobs in (None, resp.topk_prompt_logprobs)
    else:
        assert back.topk_prompt_logprobs == resp.topk_prompt_logprobs
    theirs = deserialize_sample_response(body)
    assert [s.tokens for s in theirs.sequences] == [s.tokens for s in resp.sequences]
    assert theirs.prompt_logprobs == back.prompt_logprobs
    assert theirs.topk_prompt_logprobs == back.topk_prompt_logprobs
    with pytest.raises(errors.DecodeError):
        codec.decode_sample_response(body, [*ids, "extra"])


@pytest.mark.parametrize("native", [True, False])
def test_sample_token_buffers_decode_alike_on_either_byte_order(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tokens and logprobs come off the wire as little-endian int32/float32: a memoryview
    cast reads them where that is the machine's own layout, numpy elsewhere; same lists."""
    monkeypatch.setattr(codec, "_NATIVE_LE32", native)
    seq = t.SampledSequence(
        stop_reason="stop",
        tokens=[0, 1, -5, 2**31 - 1, -(2**31)],
        logprobs=[-0.5, 0.0, -3.25, -1e-7, -40.0],
    )
    back = codec.decode_sample_response(
        codec.encode_sample_response(t.SampleResponse(sequences=[seq]))
    )
    got = back.sequences[0]
    assert got.tokens == seq.tokens and all(type(x) is int for x in got.tokens)
    assert got.logprobs == np.float32(seq.logprobs).tolist()
    assert all(type(x) is float for x in got.logprobs or [])


def test_sample_response_tensors() -> None:
    resp = t.SampleResponse(
        sequences=[t.SampledSequence(stop_reason="length", tokens=[1])],
        target_prompt_logprobs=t.TensorData.from_numpy(np.zeros((2, 3), np.float32)),
        prompt_alt_tokens=t.PromptAltTokens(
            tokens=t.TensorData.from_numpy(np.ones((2, 1), np.int64)),
            logprobs=t.TensorData.from_numpy(np.ones((2, 1), np.float32)),
        ),
    )
    back = codec.decode_sample_response(codec.encode_sample_response(resp))
    assert back.target_prompt_logprobs == resp.target_prompt_logprobs
    assert back.prompt_alt_tokens == resp.prompt_alt_tokens


def test_zstd_roundtrip_and_errors() -> None:
    data = b"x" * 10_000
    assert codec.zstd_decompress(codec.zstd_compress(data)) == data
    with pytest.raises(errors.DecodeError):
        codec.zstd_decompress(b"not zstd")


def test_request_failed_and_try_again_lenient() -> None:
    r = codec.json_decode(b'{"error": "boom", "category": "weird"}', t.RequestFailedResponse)
    assert r.category == t.RequestErrorCategory.Unknown
    r = codec.json_decode(b'{"error": "boom", "category": "user"}', t.RequestFailedResponse)
    assert r.category is t.RequestErrorCategory.User
    ta = codec.json_decode(
        b'{"type":"try_again","request_id":"r","queue_state":"new_state"}', t.TryAgainResponse
    )
    assert ta.queue_state == "new_state"


def test_optim_step_aliases() -> None:
    body = json.loads(
        codec.json_encode(
            t.OptimStepRequest(
                model_id="m", seq_id=2, optim_params=t.AdamParams(learning_rate=1e-3)
            )
        )
    )
    assert body["adam_params"]["learning_rate"] == 1e-3 and "optim_params" not in body
    assert body["type"] == "optim_step" and len(body["adam_params"]) == 6
    req = codec.json_decode(
        b'{"model_id":"m","optim_params":{"learning_rate":0.5}}', t.OptimStepRequest
    )
    assert req.adam_params.learning_rate == 0.5
