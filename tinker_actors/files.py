"""File inputs for multipart requests, normalised once, at call time.

A file is given as:

- ``pathlib.Path`` (or ``FilePath("...")``, the explicit marker for a path held in a str);
- ``bytes`` / ``bytearray`` / ``memoryview``, or a ``str`` (its UTF-8 bytes: a string is
  always content, never guessed to be a path, whatever characters it holds);
- a binary file object (anything with ``read``);
- a tuple ``(filename, content)``, ``(filename, content, content_type)`` or
  ``(filename, content, content_type, headers)``, ``content`` being one of the above.

``files`` is a mapping ``{field: file}`` or a sequence of ``(field, file)`` pairs (a field may
repeat). Paths are checked here (missing file, directory) so a bad input fails before any
request; their bytes are read only while the body is sent, chunk by chunk.
"""

from __future__ import annotations

import io
import mimetypes
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInputError

__all__ = ["FilePart", "FilePath", "normalize_file", "normalize_files"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"


class FilePath(str):
    """Marks a ``str`` as a file path (a plain ``str`` is content)."""

    __slots__ = ()


@dataclass(frozen=True)
class FilePart:
    """One file of a multipart body. ``source`` is bytes, a ``pathlib.Path`` or a file object."""

    source: bytes | pathlib.Path | Any
    filename: str | None = None
    content_type: str = DEFAULT_CONTENT_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int | None:
        """Bytes from the current position, when knowable without reading."""
        if isinstance(self.source, bytes):
            return len(self.source)
        if isinstance(self.source, pathlib.Path):
            return self.source.stat().st_size
        try:
            pos = self.source.tell()
            return os.fstat(self.source.fileno()).st_size - int(pos)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return None


def _content(value: Any, where: str) -> tuple[bytes | pathlib.Path | Any, str | None]:
    """(source, default filename) of a file content value."""
    if isinstance(value, FilePath):
        value = pathlib.Path(value)
    if isinstance(value, pathlib.PurePath):
        path = pathlib.Path(value).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{where}: no such file: {str(path)!r}")
        if path.is_dir():
            raise IsADirectoryError(f"{where}: {str(path)!r} is a directory, not a file")
        return path, path.name
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    if isinstance(value, str):
        return value.encode("utf-8"), None
    if hasattr(value, "read") and callable(value.read):
        if isinstance(value, io.TextIOBase):
            raise InvalidInputError(f"{where}: open the file in binary mode ('rb'), not text mode")
        name = getattr(value, "name", None)
        return value, os.path.basename(name) if isinstance(name, str) and name else None
    raise InvalidInputError(
        f"{where}: a file must be a pathlib.Path, FilePath, bytes, str, a binary file object or "
        f"a (filename, content[, content_type[, headers]]) tuple; got {type(value).__name__}"
    )


def normalize_file(value: Any, *, where: str = "file") -> FilePart:
    """One file input as a ``FilePart``."""
    filename: str | None
    content_type: str | None = None
    headers: Mapping[str, str] = {}
    if isinstance(value, tuple):
        if not 2 <= len(value) <= 4:
            raise InvalidInputError(
                f"{where}: a file tuple is (filename, content[, content_type[, headers]]), "
                f"got {len(value)} items"
            )
        filename, content, *rest = value
        if filename is not None and not isinstance(filename, str):
            raise InvalidInputError(f"{where}: filename must be a str or None")
        source, _ = _content(content, where)
        if rest:
            content_type = rest[0]
            if content_type is not None and not isinstance(content_type, str):
                raise InvalidInputError(f"{where}: content_type must be a str or None")
        if len(rest) == 2:
            raw = rest[1]
            if isinstance(raw, Mapping):
                headers = {str(k): str(v) for k, v in raw.items()}
            elif isinstance(raw, Sequence) and all(
                isinstance(h, tuple) and len(h) == 2 for h in raw
            ):
                headers = {str(k): str(v) for k, v in raw}
            else:
                raise InvalidInputError(
                    f"{where}: headers must be a mapping or (name, value) pairs"
                )
    else:
        source, filename = _content(value, where)
    if content_type is None:
        guessed = mimetypes.guess_type(filename)[0] if filename else None
        content_type = guessed or DEFAULT_CONTENT_TYPE
    return FilePart(source, filename, content_type, headers)


def normalize_files(files: Any) -> list[tuple[str, FilePart]]:
    """``{field: file}`` or ``[(field, file), ...]`` as ``[(field, FilePart), ...]`` in order."""
    if files is None:
        return []
    if isinstance(files, Mapping):
        pairs = list(files.items())
    elif isinstance(files, Sequence) and not isinstance(files, str | bytes):
        pairs = []
        for i, item in enumerate(files):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidInputError(
                    f"files[{i}] must be a (field_name, file) pair, got {type(item).__name__}"
                )
            pairs.append(item)
    else:
        raise InvalidInputError(
            f"files must be a mapping of field name to file or a list of (name, file) pairs, "
            f"got {type(files).__name__}"
        )
    out = []
    for name, value in pairs:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"file field names must be non-empty strings, got {name!r}")
        out.append((name, normalize_file(value, where=f"files[{name!r}]")))
    return out
