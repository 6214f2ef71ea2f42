"""Multipart file uploads: file inputs (tinker_actors.files), nested form fields flattened to
bracket keys (tinker_actors.multipart.flatten_form), the encoded multipart/form-data body, and
a POST of it through the client's transport when an upload endpoint is configured.

Env: TINKER_UPLOAD_FILE (examples/uploads/sample_upload.bin), TINKER_UPLOAD_NOTE,
TINKER_UPLOAD_ENDPOINT (a path on TINKER_BASE_URL that accepts uploads; none by default).
"""

from __future__ import annotations

import asyncio
import os
import string
from pathlib import Path

import _common as c

import tinker_actors as tinker
from tinker_actors.files import normalize_files
from tinker_actors.multipart import MultipartBody, flatten_form


class _Buffer:
    """Collects what aiohttp's multipart writer writes, to show the encoded body."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk


async def encode(body: MultipartBody) -> bytes:
    sink = _Buffer()
    await body.writer().write(sink)
    return bytes(sink.data)


def main() -> None:
    default = Path(__file__).with_name("uploads") / "sample_upload.bin"
    path = Path(c.env_str("TINKER_UPLOAD_FILE", str(default)))
    if not path.is_file():
        c.fail(f"TINKER_UPLOAD_FILE={path} does not exist")
    note = c.env_str("TINKER_UPLOAD_NOTE", "Multipart demo from tinker_actors")

    print(f"[1] File: {path} ({path.stat().st_size} bytes)")
    [(field, part)] = normalize_files({"file": path})
    print(f"[2] File part: field={field!r} filename={part.filename!r} type={part.content_type}")
    form = {"note": note, "metadata": {"source": "tinker_actors", "version": tinker.__version__}}
    print(f"[3] Form fields: {flatten_form(form)}")

    body = MultipartBody(form, {"file": path})
    raw = asyncio.run(encode(body))
    print(f"[4] Content-Type: {body.content_type}")
    print(f"    Body size: {len(raw)} bytes")
    printable = set(string.printable) - set("\x0b\x0c")
    preview = "".join(ch if ch in printable else "." for ch in raw[:500].decode("latin-1"))
    print(f"[5] Preview:\n{preview}")

    endpoint = os.environ.get("TINKER_UPLOAD_ENDPOINT")
    if not endpoint:
        c.not_available(
            "[6] no upload endpoint: the Tinker API and the local server accept no file uploads "
            "(set TINKER_UPLOAD_ENDPOINT to POST this body to one)"
        )
        return
    with tinker.ServiceClient() as service:
        session = service.holder
        resp = session.runtime.submit(
            session.transport.request("POST", endpoint, json=form, files={"file": path})
        ).result()
        print(f"[6] Success! HTTP {resp.status}: {resp.body[:200]!r}")


if __name__ == "__main__":
    main()
