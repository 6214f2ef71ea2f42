"""multipart/form-data request bodies, written by aiohttp's ``MultipartWriter``.

``flatten_form`` turns nested form fields into bracket keys (``{"a": {"b": 1}}`` ->
``a[b]=1``, lists -> ``k[]`` repeated). ``MultipartBody(fields, files)`` validates both at
once and builds a fresh writer per send (``writer()``), so a retry re-reads paths and rewinds
seekable file objects; file bytes are streamed in chunks (a thread reads each chunk), never
read whole.
"""

from __future__ import annotations

import asyncio
import pathlib
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import payload as _payload

from .errors import InvalidInputError
from .files import FilePart, normalize_files

__all__ = [
    "CHUNK_SIZE",
    "MultipartBody",
    "flatten_form",
    "for_request",
    "generate_boundary",
    "is_multipart",
]

CHUNK_SIZE = 64 * 1024


def generate_boundary() -> str:
    """16 random bytes as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def _scalar(v: Any) -> str | bytes:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | bytes):
        return v
    if isinstance(v, int | float):
        return str(v)
    raise InvalidInputError(f"form field values must be scalars, got {type(v).__name__}")


def flatten_form(fields: Any, prefix: str = "") -> list[tuple[str, str | bytes]]:
    """Nested mappings/lists as ``(bracket_key, value)`` pairs, in iteration order."""
    if fields is None:
        return []
    if not prefix and not isinstance(fields, Mapping):
        if hasattr(fields, "__struct_fields__"):  # a wire Struct
            import msgspec

            fields = msgspec.to_builtins(fields)
        else:
            raise InvalidInputError(
                f"multipart form fields must be a mapping, got {type(fields).__name__}"
            )
    out: list[tuple[str, str | bytes]] = []
    if isinstance(fields, Mapping):
        for k, v in fields.items():
            key = f"{prefix}[{k}]" if prefix else str(k)
            if isinstance(v, Mapping | list | tuple):
                out.extend(flatten_form(v, key))
            else:
                out.append((key, _scalar(v)))
    else:  # a list below some key
        for v in fields:
            key = f"{prefix}[]"
            if isinstance(v, Mapping):
                out.extend(flatten_form(v, key))
            elif isinstance(v, list | tuple):
                out.extend(flatten_form(v, key))
            else:
                out.append((key, _scalar(v)))
    return out


class _StreamedFile(_payload.Payload):
    """A file part read in chunks on a worker thread while it is written."""

    def __init__(self, part: FilePart, start: int | None, size: int | None, **kwargs: Any):
        super().__init__(part.source, content_type=part.content_type, **kwargs)
        self._part = part
        self._start = start  # a user's file object is rewound here on every send
        self._size = size

    @property
    def size(self) -> int | None:
        return self._size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed file part is not decoded")

    async def write(self, writer: Any) -> None:
        src = self._part.source
        if isinstance(src, bytes):
            for i in range(0, len(src), CHUNK_SIZE):
                await writer.write(src[i : i + CHUNK_SIZE])
            return
        opened = isinstance(src, pathlib.Path)  # ours to open and close
        f: Any = await asyncio.to_thread(src.open, "rb") if isinstance(src, pathlib.Path) else src
        try:
            if not opened and self._start is not None:
                await asyncio.to_thread(f.seek, self._start)
            while chunk := await asyncio.to_thread(f.read, CHUNK_SIZE):
                await writer.write(bytes(chunk))
        finally:
            if opened:
                await asyncio.to_thread(f.close)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        await self.write(writer)


class MultipartBody:
    """Form fields then files, as one multipart/form-data body (rebuildable per attempt)."""

    def __init__(
        self,
        fields: Any = None,
        files: Any = None,
        *,
        boundary: str | None = None,
    ):
        self.fields = flatten_form(fields)
        self.files: list[tuple[str, FilePart]] = normalize_files(files)
        self.boundary = boundary or generate_boundary()
        self._sent = 0
        # where each file object stands now: every send starts from there
        self._starts: list[int | None] = []
        self._sizes: list[int | None] = []
        for _, part in self.files:
            start = None
            src: Any = part.source
            if not isinstance(src, bytes | pathlib.Path):
                try:
                    start = src.tell()
                except (AttributeError, OSError, ValueError):
                    start = None
            self._starts.append(start)
            self._sizes.append(part.size)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def replayable(self) -> bool:
        """Whether another send gives the same bytes (a non-seekable stream does not)."""
        for _, part in self.files:
            src: Any = part.source
            if isinstance(src, bytes | pathlib.Path):
                continue
            try:
                if not src.seekable():
                    return False
            except (AttributeError, OSError, ValueError):
                return False
        return True

    def writer(self) -> aiohttp.MultipartWriter:
        """A new writer for one send."""
        if self._sent and not self.replayable:
            raise InvalidInputError(
                "a multipart body with a non-seekable file object can be sent only once"
            )
        self._sent += 1
        w = aiohttp.MultipartWriter("form-data", boundary=self.boundary)
        for name, value in self.fields:
            p = w.append(value)
            p.set_content_disposition("form-data", name=name)
        for (name, part), start, size in zip(self.files, self._starts, self._sizes, strict=True):
            p = w.append_payload(
                _StreamedFile(part, start, size, headers=dict(part.headers) or None)
            )
            if part.filename is not None:
                p.set_content_disposition("form-data", name=name, filename=part.filename)
            else:
                p.set_content_disposition("form-data", name=name)
        return w

    @staticmethod
    def boundary_from(content_type: str | None) -> str | None:
        """The ``boundary=`` parameter of a caller's multipart Content-Type, if any."""
        if not content_type:
            return None
        for param in content_type.split(";")[1:]:
            k, _, v = param.strip().partition("=")
            if k.lower() == "boundary" and v:
                return v.strip('"')
        return None


def is_multipart(files: Any, content_type: str | None, headers: Mapping[str, str] | None) -> bool:
    """Tinkex's rule: files given, or the caller asked for multipart/form-data."""
    if files:
        return True
    cts: Sequence[str] = [content_type or ""] + [
        v for k, v in (headers or {}).items() if k.lower() == "content-type"
    ]
    return any("multipart/form-data" in ct.lower() for ct in cts)


def for_request(
    method: str,
    body: Any,
    content: bytes | None,
    files: Any,
    content_type: str | None,
    headers: Mapping[str, str] | None,
) -> MultipartBody | None:
    """The multipart body of a transport request, or None when it is not multipart."""
    if not is_multipart(files, content_type, headers):
        return None
    if method not in ("POST", "PUT", "PATCH"):
        raise InvalidInputError(f"files can be sent with POST or PUT, not {method}")
    if content is not None:
        raise InvalidInputError("a multipart request takes form fields (json=...), not content=")
    if (
        body is not None
        and not isinstance(body, Mapping)
        and not hasattr(body, "__struct_fields__")
    ):
        raise InvalidInputError(
            "Failed to prepare request: multipart body must be a mapping of form fields, "
            f"got {type(body).__name__}"
        )
    cts = [content_type] + [v for k, v in (headers or {}).items() if k.lower() == "content-type"]
    boundary = next((b for ct in cts if (b := MultipartBody.boundary_from(ct))), None)
    return MultipartBody(body, files, boundary=boundary)
