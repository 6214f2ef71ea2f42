"""JSON and protobuf codecs for the wire types, plus zstd bodies.

* JSON: msgspec with one module-level encoder and cached typed decoders.
* Protobuf: the forward_backward request is written by a small hand-rolled
  encoder (the schema is tiny and fixed), which emits the same fields as the
  generated module but gathers every payload into one ``b"".join`` with no
  intermediate messages; decoding uses the generated module and ``np.frombuffer``.
  Token and tensor payloads never pass through per-element Python loops.

Every decoder raises :class:`tinker_actors.errors.DecodeError` on malformed input.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeVar, cast, overload

import msgspec
import numpy as np
import zstandard

from ._proto import tinker_actors_public_pb2 as pb
from .errors import DecodeError, DecompressedTooLarge, EncodeError
from .types import (
    Datum,
    DmelChunk,
    EncodedTextChunk,
    ForwardBackwardOutput,
    ForwardBackwardProtoRequest,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    PromptAltTokens,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    SampledSequence,
    SampleResponse,
    TensorData,
)
from .types._base import dec_hook, enc_hook
from .types.sampling import StopReason

T = TypeVar("T")

__all__ = [
    "JSON_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "datum_loss_fn_inputs_np",
    "datum_tokens_np",
    "decode_forward_backward_output",
    "decode_forward_backward_request",
    "decode_sample_response",
    "encode_forward_backward_output",
    "encode_forward_backward_request",
    "encode_sample_response",
    "json_decode",
    "json_encode",
    "zstd_compress",
    "zstd_decompress",
]

JSON_CONTENT_TYPE = "application/json"
PROTOBUF_CONTENT_TYPE = "application/x-protobuf"

# -- JSON --------------------------------------------------------------------------------
_json_encoder = msgspec.json.Encoder(enc_hook=enc_hook)


def json_encode(obj: Any) -> bytes:
    """Encode a wire type (or builtins) as JSON; None fields are omitted where the SDK omits them."""
    try:
        return _json_encoder.encode(obj)
    except (TypeError, NotImplementedError, ValueError) as exc:
        raise EncodeError(f"cannot JSON-encode {type(obj).__name__}: {exc}") from exc


@lru_cache(maxsize=512)
def _json_decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(type_, dec_hook=dec_hook)


@overload
def json_decode(data: bytes | str, type_: type[T]) -> T: ...
@overload
def json_decode(data: bytes | str, type_: Any = Any) -> Any: ...
def json_decode(data: bytes | str, type_: Any = Any) -> Any:
    """Decode JSON into ``type_`` (unknown fields ignored); raises DecodeError."""
    try:
        decoder = _json_decoder(type_)
    except TypeError:  # unhashable type annotation
        decoder = msgspec.json.Decoder(type_, dec_hook=dec_hook)
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError) as exc:
        if _NON_FINITE.search(data if isinstance(data, bytes) else data.encode()):
            # Python servers write NaN/Infinity (json.dumps' default), e.g. the metrics of a
            # step whose weights went non-finite; msgspec's strict JSON refuses them
            try:
                return msgspec.convert(json.loads(data), type_, dec_hook=dec_hook)
            except (ValueError, TypeError, msgspec.ValidationError):
                pass
        name = getattr(type_, "__name__", str(type_))
        raise DecodeError(f"invalid {name} JSON: {exc}") from exc


_NON_FINITE = re.compile(rb"(?<![\w\"])(?:NaN|-?Infinity)(?![\w\"])")


# -- zstd --------------------------------------------------------------------------------
def zstd_compress(data: bytes, level: int = 3) -> bytes:
    """One zstd frame with the content size recorded (``Content-Encoding: zstd``)."""
    return zstandard.ZstdCompressor(level=level).compress(data)


def zstd_decompress(data: bytes, max_output_size: int = 1 << 31) -> bytes:
    """Undo a zstd body, streaming, never producing more than ``max_output_size`` bytes.

    The bound holds for every frame, including frames that do not record their size (where a
    one-shot decompress could not know it up front). Concatenated frames are read through.
    Raises :class:`DecompressedTooLarge` past the bound, DecodeError for a bad body.
    """
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    parts: list[bytes] = []
    size = 0
    try:
        while size <= max_output_size:
            part = reader.read(min(1 << 20, max_output_size + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"invalid zstd body: {exc}") from exc
    if size > max_output_size:
        raise DecompressedTooLarge(f"decompressed body is larger than {max_output_size} bytes")
    return b"".join(parts)


# -- protobuf dtypes -----------------------------------------------------------------------
_DTYPE_TO_PROTO = {"float32": pb.DTYPE_FLOAT32, "int64": pb.DTYPE_INT64}
_PROTO_NP: dict[int, np.dtype[Any]] = {
    pb.DTYPE_FLOAT32: np.dtype("<f4"),
    pb.DTYPE_INT64: np.dtype("<i8"),
    pb.DTYPE_INT32: np.dtype("<i4"),
    pb.DTYPE_BFLOAT16: np.dtype("<u2"),
}
_PROTO_PUBLIC = {
    pb.DTYPE_FLOAT32: "float32",
    pb.DTYPE_BFLOAT16: "float32",
    pb.DTYPE_INT64: "int64",
    pb.DTYPE_INT32: "int64",
}
_LE: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "int64": np.dtype("<i8")}


def _widen(buf: np.ndarray, proto_dtype: int) -> np.ndarray:
    """int32 → int64 and bfloat16 (uint16 bits) → float32, as the SDK does."""
    if proto_dtype == pb.DTYPE_BFLOAT16:
        return (buf.astype(np.uint32) << 16).view(np.float32)
    if proto_dtype == pb.DTYPE_INT32:
        return buf.astype(np.int64)
    return buf


# -- hand-rolled protobuf writer -----------------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


_LEN = 2
_K1, _K2, _K3, _K4, _K5, _K7 = (_key(f, _LEN) for f in (1, 2, 3, 4, 5, 7))
_K3_VARINT = _key(3, 0)
_K2_VARINT = _key(2, 0)
_K6_VARINT = _key(6, 0)
_K1_FIXED64 = _key(1, 1)
_K2_FIXED64 = _key(2, 1)
_DOUBLE = struct.Struct("<d")


class _Buf:
    """Accumulates parts and their total length, for length-prefixed nesting without copies."""

    __slots__ = ("n", "parts")

    def __init__(self) -> None:
        self.parts: list[Any] = []
        self.n = 0

    def raw(self, b: Any, n: int | None = None) -> None:
        self.parts.append(b)
        self.n += len(b) if n is None else n

    def field_bytes(self, key: bytes, payload: Any, n: int | None = None) -> None:
        n = len(payload) if n is None else n
        h = key + _varint(n)
        self.parts.append(h)
        self.parts.append(payload)
        self.n += len(h) + n

    def field_buf(self, key: bytes, inner: _Buf) -> None:
        h = key + _varint(inner.n)
        self.parts.append(h)
        self.parts.extend(inner.parts)
        self.n += len(h) + inner.n

    def field_str(self, key: bytes, s: str) -> None:
        self.field_bytes(key, s.encode())


def _as_le_bytes(arr: np.ndarray, dtype: np.dtype[Any]) -> tuple[Any, int]:
    """A bytes-like view of ``arr`` in little-endian ``dtype`` (no copy when already so)."""
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr.data.cast("B"), arr.nbytes


def _tokens_bytes(tokens: Any) -> tuple[Any, int]:
    if isinstance(tokens, np.ndarray):
        return _as_le_bytes(tokens, np.dtype("<i4"))
    arr = np.fromiter(tokens, dtype="<i4", count=len(tokens))
    return arr.data.cast("B"), arr.nbytes


def _packed_ints(values: Sequence[int]) -> bytes:
    return b"".join(_varint(int(v)) for v in values)


def _write_tensor(td: TensorData) -> _Buf:
    t = _Buf()
    dt = _LE.get(td.dtype)
    if dt is None:
        raise EncodeError(f"unsupported TensorData dtype for protobuf: {td.dtype!r}")
    values, nbytes = _as_le_bytes(td.values_np, dt)
    if td.is_sparse:
        csr = _Buf()
        csr.field_bytes(_K1, values, nbytes)
        crow, n1 = _as_le_bytes(td.crow_indices_np, np.dtype("<i8"))  # type: ignore[arg-type]
        col, n2 = _as_le_bytes(td.col_indices_np, np.dtype("<i8"))  # type: ignore[arg-type]
        csr.field_bytes(_K2, crow, n1)
        csr.field_bytes(_K3, col, n2)
        t.field_buf(_K2, csr)
    else:
        t.field_bytes(_K1, values, nbytes)
    t.raw(_K3_VARINT + _varint(_DTYPE_TO_PROTO[td.dtype]))
    if td.shape:
        t.field_bytes(_K4, _packed_ints(td.shape))
    return t


def _write_span(span: Any) -> _Buf:
    inner = _Buf()
    if span.sequence_id:
        inner.field_str(_K1, span.sequence_id)
    if span.offset:
        inner.raw(_key(2, 0) + _varint(span.offset))
    if span.length:
        inner.raw(_key(3, 0) + _varint(span.length))
    outer = _Buf()
    outer.field_buf(_K2 if isinstance(span, SampledProvenanceSpan) else _K1, inner)
    return outer


def _write_datum(datum: Datum) -> _Buf:
    d = _Buf()
    for chunk in datum.model_input.chunks:
        c = _Buf()
        inner = _Buf()
        if isinstance(chunk, EncodedTextChunk):
            payload, n = _tokens_bytes(chunk.tokens)
            if n:
                inner.field_bytes(_K1, payload, n)
            c.field_buf(_K1, inner)
        elif isinstance(chunk, ImageChunk):
            if chunk.data:
                inner.field_bytes(_K1, chunk.data)
            if chunk.format:
                inner.field_str(_K2, chunk.format)
            if chunk.expected_tokens is not None:
                inner.raw(_K3_VARINT + _varint(chunk.expected_tokens))
            c.field_buf(_K2, inner)
        elif isinstance(chunk, DmelChunk):
            if chunk.dmel:
                inner.field_bytes(_K1, chunk.dmel)
            c.field_buf(_K3, inner)
        elif isinstance(chunk, ImageAssetPointerChunk):
            raise EncodeError(
                "ImageAssetPointerChunk cannot be sent in forward_backward (JSON/sampling only)"
            )
        else:
            raise EncodeError(f"unsupported model input chunk: {type(chunk).__name__}")
        d.field_buf(_K1, c)
    for name, td in datum.loss_fn_inputs.items():
        if not isinstance(td, TensorData):
            td = (
                TensorData.from_json_dict(td) if isinstance(td, dict) else TensorData.from_numpy(td)
            )
        entry = _Buf()
        entry.field_str(_K1, name)
        entry.field_buf(_K2, _write_tensor(td))
        d.field_buf(_K2, entry)
    if datum.model_input_spans is not None and datum.loss_fn_input_spans is not None:
        for span in datum.model_input_spans:
            d.field_buf(_K3, _write_span(span))
        for span in datum.loss_fn_input_spans:
            d.field_buf(_K4, _write_span(span))
    return d


def encode_forward_backward_request(
    model_id: str,
    seq_id: int | None,
    data: Sequence[Datum],
    loss_fn: str,
    loss_fn_config: Mapping[str, float | str] | None = None,
    forward_only: bool = False,
) -> bytes:
    """The protobuf ``ForwardBackwardRequest`` body, as the 0.38 SDK sends it.

    Float config values are written to both ``loss_fn_config`` and
    ``loss_fn_config_v2``; strings only to v2. ``seq_id=None`` is sent as 0.
    """
    out = _Buf()
    if model_id:
        out.field_str(_K1, model_id)
    if seq_id:
        out.raw(_K2_VARINT + _varint(int(seq_id)))
    try:
        for datum in data:
            out.field_buf(_K3, _write_datum(datum))
    except EncodeError:
        raise
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise EncodeError(f"cannot encode forward_backward data: {exc}") from exc
    if loss_fn:
        out.field_str(_K4, loss_fn)
    if loss_fn_config:
        for k, v in loss_fn_config.items():
            if isinstance(v, str):
                continue
            entry = _Buf()
            entry.field_str(_K1, k)
            entry.raw(_K2_FIXED64 + _DOUBLE.pack(float(v)))
            out.field_buf(_K5, entry)
    if forward_only:
        out.raw(_K6_VARINT + b"\x01")
    if loss_fn_config:
        for k, v in loss_fn_config.items():
            value = _Buf()
            if isinstance(v, str):
                value.field_str(_key(2, _LEN), v)
            else:
                value.raw(_K1_FIXED64 + _DOUBLE.pack(float(v)))
            entry = _Buf()
            entry.field_str(_K1, k)
            entry.field_buf(_K2, value)
            out.field_buf(_K7, entry)
    return b"".join(out.parts)


# -- protobuf decoding -------------------------------------------------------------------------
def _parse(msg_cls: Any, body: bytes, what: str) -> Any:
    msg = msg_cls()
    try:
        msg.ParseFromString(bytes(body) if not isinstance(body, bytes) else body)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeWarning variants
        raise DecodeError(f"invalid protobuf {what}: {exc}") from exc
    return msg


def _tensor_from_proto(msg: Any) -> TensorData:
    np_dt = _PROTO_NP.get(msg.dtype)
    public = _PROTO_PUBLIC.get(msg.dtype)
    if np_dt is None or public is None:
        raise DecodeError(f"unsupported protobuf tensor dtype {msg.dtype}")
    shape = list(msg.shape)
    try:
        if msg.WhichOneof("encoding") == "sparse_csr":
            csr = msg.sparse_csr
            values = _widen(np.frombuffer(csr.values, dtype=np_dt), msg.dtype)
            return TensorData(
                data=values,
                dtype=public,  # type: ignore[arg-type]
                shape=shape,
                sparse_crow_indices=np.frombuffer(csr.crow_indices, dtype="<i8"),
                sparse_col_indices=np.frombuffer(csr.col_indices, dtype="<i8"),
            )
        values = _widen(np.frombuffer(msg.dense, dtype=np_dt), msg.dtype)
        return TensorData(data=values, dtype=public, shape=shape or None)  # type: ignore[arg-type]
    except ValueError as exc:
        raise DecodeError(f"invalid protobuf tensor: {exc}") from exc


def _span_from_proto(msg: Any) -> Any:
    which = msg.WhichOneof("span")
    if which is None:
        raise DecodeError("provenance span without prompt_tokens/sampled_tokens")
    inner = getattr(msg, which)
    cls = PromptProvenanceSpan if which == "prompt_tokens" else SampledProvenanceSpan
    try:
        return cls(sequence_id=inner.sequence_id, offset=inner.offset, length=inner.length)
    except ValueError as exc:
        raise DecodeError(str(exc)) from exc


def _chunk_from_proto(msg: Any) -> Any:
    which = msg.WhichOneof("chunk")
    if which == "encoded_text":
        raw = msg.encoded_text.tokens
        if len(raw) % 4:
            raise DecodeError("encoded_text tokens length is not a multiple of 4")
        # a read-only int32 array (zero-copy); the field's declared type is the SDK's list
        return EncodedTextChunk(tokens=cast("list[int]", np.frombuffer(raw, dtype="<i4")))
    if which == "image":
        im = msg.image
        fmt = im.format
        if fmt not in ("png", "jpeg"):
            raise DecodeError(f"unsupported image format {fmt!r}")
        return ImageChunk(
            data=im.data,
            format=fmt,
            expected_tokens=im.expected_tokens if im.HasField("expected_tokens") else None,
        )
    if which == "dmel":
        return DmelChunk(dmel=msg.dmel.dmel)
    raise DecodeError("model input chunk with no content")


def decode_forward_backward_request(body: bytes) -> ForwardBackwardProtoRequest:
    """Parse a protobuf fwd/bwd body; ``loss_fn_config`` is v1 with v2 overriding it.

    Token chunks hold int32 numpy arrays (zero-copy views of the body); use
    :func:`datum_tokens_np` / :func:`datum_loss_fn_inputs_np` for arrays.
    """
    msg = _parse(pb.ForwardBackwardRequest, body, "ForwardBackwardRequest")
    data = []
    for dm in msg.data:
        chunks = [_chunk_from_proto(c) for c in dm.model_input]
        inputs = {k: _tensor_from_proto(v) for k, v in dm.loss_fn_inputs.items()}
        mspans = [_span_from_proto(s) for s in dm.model_input_spans]
        lspans = [_span_from_proto(s) for s in dm.loss_fn_input_spans]
        has_spans = bool(mspans or lspans)
        data.append(
            Datum(
                model_input=ModelInput(chunks=chunks),
                loss_fn_inputs=inputs,
                model_input_spans=mspans if has_spans else None,
                loss_fn_input_spans=lspans if has_spans else None,
            )
        )
    config: dict[str, float | str] = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for k, v in msg.loss_fn_config_v2.items():
        which = v.WhichOneof("value")
        if which == "number":
            config[k] = float(v.number)
        elif which == "text":
            config[k] = v.text
    return ForwardBackwardProtoRequest(
        model_id=msg.model_id,
        seq_id=msg.seq_id,
        data=data,
        loss_fn=msg.loss_fn,
        loss_fn_config=config or None,
        forward_only=msg.forward_only,
    )


def datum_tokens_np(datum: Datum, dtype: Any = np.int64) -> np.ndarray:
    """A datum's model-input tokens as one numpy array (text chunks only)."""
    return datum.model_input.to_numpy(dtype)


def datum_loss_fn_inputs_np(datum: Datum, pad_value: int = 0) -> dict[str, np.ndarray]:
    """Each loss_fn_input as a dense numpy array (CSR densified with ``pad_value``)."""
    return {k: v.to_numpy(pad_value) for k, v in datum.loss_fn_inputs.items()}


# -- ForwardBackwardOutput -------------------------------------------------------------------
def _record_signature(out: Mapping[str, TensorData]) -> tuple[Any, ...]:
    sig = []
    for name, td in out.items():
        arr = td.to_numpy()
        sig.append((name, td.dtype, tuple(arr.shape[1:])))
    return tuple(sig)


def encode_forward_backward_output(out: ForwardBackwardOutput) -> bytes:
    """Protobuf ForwardBackwardOutput: consecutive datums with the same fields, dtypes and
    trailing shapes share one ArrayRecord of BatchedTensors (data + int64 byte offsets)."""
    msg = pb.ForwardBackwardOutput(loss_fn_output_type=out.loss_fn_output_type)
    for k, v in out.metrics.items():
        msg.metrics[k] = float(v)
    groups: list[tuple[tuple[Any, ...], list[Mapping[str, TensorData]]]] = []
    for item in out.loss_fn_outputs:
        sig = _record_signature(item)
        if groups and groups[-1][0] == sig:
            groups[-1][1].append(item)
        else:
            groups.append((sig, [item]))
    type_tag = out.loss_fn_output_type.rsplit(":", 1)[-1] or "ArrayRecord"
    for sig, items in groups:
        rec = msg.loss_fn_outputs.add(type_tag=type_tag, num_datums=len(items))
        for name, dtype, trailing in sig:
            arrays = [np.asarray(it[name].to_numpy(), dtype=_LE[dtype]).reshape(-1) for it in items]
            sizes = np.fromiter((a.nbytes for a in arrays), dtype=np.int64, count=len(arrays))
            offsets = np.zeros(len(arrays) + 1, dtype="<i8")
            np.cumsum(sizes, out=offsets[1:])
            bt = rec.fields[name]
            bt.data = np.concatenate(arrays).tobytes() if arrays else b""
            bt.offsets = offsets.tobytes()
            bt.dtype = _DTYPE_TO_PROTO[dtype]
            bt.trailing_shape.extend(trailing)
    body: bytes = msg.SerializeToString()
    return body


def decode_forward_backward_output(body: bytes) -> ForwardBackwardOutput:
    """Parse a protobuf ForwardBackwardOutput into per-datum ``{name: TensorData}``."""
    msg = _parse(pb.ForwardBackwardOutput, body, "ForwardBackwardOutput")
    metrics = {k: float(v) for k, v in msg.metrics.items()}
    if not msg.loss_fn_outputs:
        return ForwardBackwardOutput(
            loss_fn_output_type=msg.loss_fn_output_type or "ArrayRecord",
            loss_fn_outputs=[],
            metrics=metrics,
        )
    outputs: list[dict[str, TensorData]] = []
    for rec in msg.loss_fn_outputs:
        per_field: dict[str, list[TensorData]] = {}
        for name, bt in rec.fields.items():
            np_dt = _PROTO_NP.get(bt.dtype)
            public = _PROTO_PUBLIC.get(bt.dtype)
            if np_dt is None or public is None:
                raise DecodeError(f"unsupported dtype {bt.dtype} for output field {name!r}")
            if len(bt.data) % np_dt.itemsize or len(bt.offsets) % 8:
                raise DecodeError(f"misaligned BatchedTensor {name!r}")
            offsets = np.frombuffer(bt.offsets, dtype="<i8") // np_dt.itemsize
            buf = _widen(np.frombuffer(bt.data, dtype=np_dt), bt.dtype)
            if len(offsets) and (
                offsets[0] < 0 or offsets[-1] > len(buf) or np.any(np.diff(offsets) < 0)
            ):
                raise DecodeError(f"invalid offsets in BatchedTensor {name!r}")
            trailing = [int(s) for s in bt.trailing_shape]
            inner = math.prod(trailing) if trailing else 1
            tds = []
            for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
                arr = buf[start:end]
                lead = arr.size // inner if inner else 0
                tds.append(TensorData(data=arr, dtype=public, shape=[lead, *trailing]))  # type: ignore[arg-type]
            per_field[name] = tds
        n = rec.num_datums or (len(next(iter(per_field.values()))) if per_field else 0)
        for name, tds in per_field.items():
            if len(tds) != n:
                raise DecodeError(f"field {name!r} has {len(tds)} datums, record says {n}")
        for i in range(n):
            outputs.append({name: tds[i] for name, tds in per_field.items()})
    return ForwardBackwardOutput(
        loss_fn_output_type=msg.loss_fn_output_type.rsplit(":", 1)[-1],
        loss_fn_outputs=outputs,
        metrics=metrics,
    )


# -- SampleResponse ----------------------------------------------------------------------------
_STOP_TO_PROTO: dict[StopReason, int] = {
    "stop": pb.STOP_REASON_STOP,
    "length": pb.STOP_REASON_LENGTH,
}
_PROTO_TO_STOP = {v: k for k, v in _STOP_TO_PROTO.items()}


def _tensor_to_proto(td: TensorData, msg: Any) -> None:
    dt = _LE[td.dtype]
    msg.dtype = _DTYPE_TO_PROTO[td.dtype]
    if td.is_sparse:
        msg.sparse_csr.values = np.asarray(td.values_np, dtype=dt).tobytes()
        msg.sparse_csr.crow_indices = np.asarray(td.crow_indices_np, dtype="<i8").tobytes()
        msg.sparse_csr.col_indices = np.asarray(td.col_indices_np, dtype="<i8").tobytes()
    else:
        msg.dense = np.asarray(td.values_np, dtype=dt).tobytes()
    shape = td.shape if td.shape is not None else list(td.values_np.shape)
    msg.shape.extend(shape)


def _topk_to_proto(entries: Sequence[Sequence[tuple[int, float]] | None], msg: Any) -> None:
    n = len(entries)
    k = max((len(e) for e in entries if e), default=0)
    ids = np.zeros((n, k), dtype="<i4")
    lps = np.full((n, k), -99999.0, dtype="<f4")
    for i, row in enumerate(entries):
        if row:
            arr = np.asarray(row, dtype=np.float64).reshape(-1, 2)
            ids[i, : len(row)] = arr[:, 0]
            lps[i, : len(row)] = arr[:, 1]
    msg.token_ids = ids.tobytes()
    msg.logprobs = lps.tobytes()
    msg.k = k
    msg.length = n


def _topk_from_proto(msg: Any) -> list[list[tuple[int, float]] | None] | None:
    n, k = msg.length, msg.k
    if n == 0 or k == 0:
        return None
    if len(msg.token_ids) != 4 * n * k or len(msg.logprobs) != 4 * n * k:
        raise DecodeError("top-k logprobs buffers do not match length*k")
    ids = np.frombuffer(msg.token_ids, dtype="<i4").reshape(n, k)
    lps = np.frombuffer(msg.logprobs, dtype="<f4").reshape(n, k)
    sentinel = (ids == 0) & (lps == -99999.0)
    ids_l, lps_l, sent_l = ids.tolist(), lps.tolist(), sentinel.tolist()
    out: list[list[tuple[int, float]] | None] = []
    for r in range(n):
        row_sent = sent_l[r]
        if row_sent[0]:
            out.append(None)
            continue
        end = k
        while end > 0 and row_sent[end - 1]:
            end -= 1
        out.append(list(zip(ids_l[r][:end], lps_l[r][:end], strict=True)))
    return out


def encode_sample_response(resp: SampleResponse) -> bytes:
    """Protobuf SampleResponse (tokens int32, logprobs float32, NaN for missing prompt logprobs)."""
    msg = pb.SampleResponse(prompt_cache_hit_tokens=resp.prompt_cache_hit_tokens)
    for seq in resp.sequences:
        s = msg.sequences.add()
        if seq.stop_reason not in _STOP_TO_PROTO:
            raise EncodeError(f"unknown stop_reason {seq.stop_reason!r}")
        s.stop_reason = _STOP_TO_PROTO[seq.stop_reason]
        s.tokens = np.asarray(seq.tokens, dtype="<i4").tobytes()
        if seq.logprobs is not None:
            s.logprobs = np.asarray(seq.logprobs, dtype="<f4").tobytes()
        if seq.topk_logprobs is not None:
            _topk_to_proto(seq.topk_logprobs, s.topk_sampled_logprobs)
    if resp.prompt_logprobs is not None:
        msg.prompt_logprobs = np.array(
            [np.nan if v is None else v for v in resp.prompt_logprobs], dtype="<f4"
        ).tobytes()
    if resp.topk_prompt_logprobs is not None:
        _topk_to_proto(resp.topk_prompt_logprobs, msg.topk_prompt_logprobs)
    if resp.target_prompt_logprobs is not None:
        _tensor_to_proto(resp.target_prompt_logprobs, msg.target_prompt_logprobs)
    if resp.prompt_alt_tokens is not None:
        _tensor_to_proto(resp.prompt_alt_tokens.tokens, msg.prompt_alt_tokens.tokens)
        _tensor_to_proto(resp.prompt_alt_tokens.logprobs, msg.prompt_alt_tokens.logprobs)
    body: bytes = msg.SerializeToString()
    return body


# little-endian int32 / float32 buffers as lists: a memoryview cast where the machine's own
# layout is that (no numpy call per sequence: about 0.4 us against 0.7), else numpy
_NATIVE_LE32 = sys.byteorder == "little" and struct.calcsize("i") == struct.calcsize("f") == 4


def _i32_list(buf: bytes) -> list[int]:
    if _NATIVE_LE32:
        return memoryview(buf).cast("i").tolist()
    return cast("list[int]", np.frombuffer(buf, dtype="<i4").tolist())


def _f32_list(buf: bytes) -> list[float]:
    if _NATIVE_LE32:
        return cast("list[float]", memoryview(buf).cast("f").tolist())
    return cast("list[float]", np.frombuffer(buf, dtype="<f4").tolist())


def decode_sample_response(
    body: bytes, sequence_ids: Sequence[str] | None = None
) -> SampleResponse:
    """Parse a protobuf SampleResponse; ``sequence_ids`` (from the submit reply) fill sequence_id."""
    msg = _parse(pb.SampleResponse, body, "SampleResponse")
    if sequence_ids is not None and len(sequence_ids) != len(msg.sequences):
        raise DecodeError(
            f"got {len(msg.sequences)} sequences but {len(sequence_ids)} sample_sequence_ids"
        )
    seqs = []
    for i, s in enumerate(msg.sequences):
        stop = _PROTO_TO_STOP.get(s.stop_reason)
        if stop is None:
            raise DecodeError(f"unknown stop_reason enum value {s.stop_reason}")
        if len(s.tokens) % 4 or len(s.logprobs) % 4:
            raise DecodeError("sequence tokens/logprobs length is not a multiple of 4")
        seqs.append(
            SampledSequence(
                stop_reason=stop,
                tokens=_i32_list(s.tokens),
                logprobs=_f32_list(s.logprobs) if s.logprobs else None,
                topk_logprobs=_topk_from_proto(s.topk_sampled_logprobs)
                if s.HasField("topk_sampled_logprobs")
                else None,
                sequence_id=sequence_ids[i] if sequence_ids is not None else None,
            )
        )
    prompt_logprobs = None
    if msg.prompt_logprobs:
        if len(msg.prompt_logprobs) % 4:
            raise DecodeError("prompt_logprobs length is not a multiple of 4")
        arr = np.frombuffer(msg.prompt_logprobs, dtype="<f4")
        values: list[float | None] = arr.tolist()
        for j in np.flatnonzero(np.isnan(arr)).tolist():
            values[j] = None
        prompt_logprobs = values
    return SampleResponse(
        sequences=seqs,
        prompt_logprobs=prompt_logprobs,
        topk_prompt_logprobs=_topk_from_proto(msg.topk_prompt_logprobs)
        if msg.HasField("topk_prompt_logprobs")
        else None,
        target_prompt_logprobs=_tensor_from_proto(msg.target_prompt_logprobs)
        if msg.HasField("target_prompt_logprobs")
        else None,
        prompt_cache_hit_tokens=msg.prompt_cache_hit_tokens,
        prompt_alt_tokens=PromptAltTokens(
            tokens=_tensor_from_proto(msg.prompt_alt_tokens.tokens),
            logprobs=_tensor_from_proto(msg.prompt_alt_tokens.logprobs),
        )
        if msg.HasField("prompt_alt_tokens")
        else None,
    )
