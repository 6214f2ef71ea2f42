"""ModelInput and its chunks (a tagged union on ``type``).

Token lists stay Python lists for users (``chunk.tokens`` behaves as in the
official SDK); an integer numpy array is also accepted and kept as is, which
gives the protobuf encoder a zero-copy path.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..errors import InvalidInputError
from . import _validate
from ._base import WireStruct, force_set
from ._bounds import Count32, TokenId

ImageFormat = Literal["png", "jpeg"]


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise ValueError("Truncated TensorContainer header")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise ValueError("TensorContainer varint is too long")


def tensor_container_shape(data: bytes) -> tuple[int, ...]:
    """Shape from a TensorContainer header: [0xFE] dtype(0..7) varint-ndim varint-dims."""
    if not data:
        raise ValueError("TensorContainer bytes are empty")
    off = 1 if data[0] == 0xFE else 0
    if off >= len(data):
        raise ValueError("Truncated TensorContainer header")
    if data[off] > 7:
        raise ValueError(f"Unknown TensorContainer dtype byte: {data[off]}")
    ndim, off = _read_varint(data, off + 1)
    dims = []
    for _ in range(ndim):
        d, off = _read_varint(data, off)
        dims.append(d)
    return tuple(dims)


class EncodedTextChunk(WireStruct, tag_field="type", tag="encoded_text"):
    """A run of token ids."""

    tokens: list[TokenId]

    def __post_init__(self) -> None:
        # Checked here, in the caller's thread: a bad token found by the encoder inside the
        # training actor would break the whole TrainingClient's sequence instead.
        # The caller's list or writable array is copied (as pydantic copies in the official
        # SDK): code that reuses its buffer (``lst.clear()``) must not change the chunk.
        t: Any = self.tokens  # what the caller passed: any sequence or array (checked here)
        if type(t) is list:
            fixed = _validate.token_list("EncodedTextChunk", t)
            force_set(self, "tokens", t.copy() if fixed is None else fixed)
            return
        if isinstance(t, str | bytes | dict) or not hasattr(t, "__len__"):
            raise InvalidInputError(
                "EncodedTextChunk.tokens must be a list of ints (or a 1-D integer array), "
                f"got {type(t).__name__}"
            )
        if isinstance(t, np.ndarray) or hasattr(t, "__array__"):
            if type(t).__module__.startswith("torch"):
                t = t.detach().cpu().numpy()
            arr = _validate.token_array("EncodedTextChunk", np.asarray(t))
            if arr is t and t.flags.writeable:
                arr = t.copy()  # read-only arrays (the decoder's frombuffer) stay zero-copy
            if arr is not t:
                force_set(self, "tokens", arr)
            return
        t = list(t)
        force_set(self, "tokens", _validate.token_list("EncodedTextChunk", t) or t)

    @property
    def type(self) -> str:
        return "encoded_text"

    @property
    def length(self) -> int:
        return len(self.tokens)

    def tokens_np(self, dtype: Any = np.int64) -> np.ndarray:
        """Tokens as a numpy array (no Python loop)."""
        t = self.tokens
        if isinstance(t, np.ndarray):
            return t if t.dtype == dtype else t.astype(dtype)
        return np.fromiter(t, dtype=dtype, count=len(t))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncodedTextChunk):
            return NotImplemented
        return len(self.tokens) == len(other.tokens) and bool(
            np.array_equal(self.tokens_np(), other.tokens_np())
        )


class ImageChunk(WireStruct, tag_field="type", tag="image"):
    """Raw image bytes (base64 in JSON)."""

    data: bytes
    format: ImageFormat
    expected_tokens: Count32 | None = None

    @property
    def type(self) -> str:
        return "image"

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """``data`` as base64 text in every mode, as the official serializer gives it."""
        out = super().model_dump(**kwargs)
        if isinstance(out.get("data"), bytes):
            out["data"] = base64.b64encode(out["data"]).decode()
        return out

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError("ImageChunk expected_tokens must be set to compute the length")
        return self.expected_tokens


class ImageAssetPointerChunk(WireStruct, tag_field="type", tag="image_asset_pointer"):
    """An image by path or URL (JSON / sampling only)."""

    format: ImageFormat
    location: str
    expected_tokens: Count32 | None = None

    @property
    def type(self) -> str:
        return "image_asset_pointer"

    @property
    def length(self) -> int:
        if self.expected_tokens is None:
            raise ValueError(
                "ImageAssetPointerChunk expected_tokens must be set to compute the length"
            )
        return self.expected_tokens


class DmelChunk(WireStruct, tag_field="type", tag="dmel"):
    """Serialized TensorContainer bytes (base64 in JSON); length is its dim 0."""

    dmel: bytes

    @property
    def type(self) -> str:
        return "dmel"

    @property
    def length(self) -> int:
        shape = tensor_container_shape(self.dmel)
        if not shape:
            raise ValueError("TensorContainer tensor has no dimension 0")
        return shape[0]


ModelInputChunk = EncodedTextChunk | ImageAssetPointerChunk | ImageChunk | DmelChunk
_CHUNK_TYPES = (EncodedTextChunk, ImageAssetPointerChunk, ImageChunk, DmelChunk)


def _chunk_from_dict(d: dict[str, Any]) -> Any:
    import msgspec

    from ._base import dec_hook

    try:
        return msgspec.convert(d, ModelInputChunk, strict=False, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"invalid ModelInput chunk {d!r:.200}: {exc}") from None


class ModelInput(WireStruct):
    """A prompt / training input: a list of chunks."""

    chunks: list[ModelInputChunk]

    def __post_init__(self) -> None:
        chunks = self.chunks
        if type(chunks) is not list and not isinstance(chunks, list | tuple):
            raise InvalidInputError(
                f"ModelInput.chunks must be a list of chunks, got {type(chunks).__name__}"
            )
        chunks = list(chunks)  # never the caller's list (pydantic copies it too)
        force_set(self, "chunks", chunks)
        for i, c in enumerate(chunks):
            if not isinstance(c, _CHUNK_TYPES):
                if isinstance(c, dict):
                    chunks[i] = _chunk_from_dict(c)
                    continue
                raise InvalidInputError(
                    f"ModelInput.chunks[{i}] must be a chunk (EncodedTextChunk, ImageChunk, ...),"
                    f" got {type(c).__name__}; use ModelInput.from_ints(tokens) for token ids"
                )

    @classmethod
    def from_ints(cls, tokens: Sequence[int] | np.ndarray) -> ModelInput:
        return cls(chunks=[EncodedTextChunk(tokens=tokens)])  # type: ignore[arg-type]

    def to_ints(self) -> list[int]:
        """All tokens; raises ValueError if a chunk is not text."""
        out: list[int] = []
        for chunk in self.chunks:
            if not isinstance(chunk, EncodedTextChunk):
                raise ValueError(
                    "to_ints only supports ModelInput made of EncodedTextChunks, "
                    f"got {[type(c).__name__ for c in self.chunks]}"
                )
            t = chunk.tokens
            out.extend(t.tolist() if isinstance(t, np.ndarray) else t)
        return out

    def to_numpy(self, dtype: Any = np.int64) -> np.ndarray:
        """All tokens as one numpy array (text chunks only), without Python loops per token."""
        parts = []
        for chunk in self.chunks:
            if not isinstance(chunk, EncodedTextChunk):
                raise ValueError("to_numpy only supports ModelInput made of EncodedTextChunks")
            parts.append(chunk.tokens_np(dtype))
        if not parts:
            return np.empty(0, dtype=dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @property
    def length(self) -> int:
        return sum(chunk.length for chunk in self.chunks)

    @classmethod
    def empty(cls) -> ModelInput:
        return cls(chunks=[])

    def append(self, chunk: ModelInputChunk) -> ModelInput:
        """A new ModelInput with ``chunk`` added."""
        return ModelInput(chunks=[*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        """A new ModelInput with one token added."""
        return self.append(EncodedTextChunk(tokens=[token]))
