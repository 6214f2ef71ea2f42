"""Files and multipart: inputs are normalised without guessing, bodies are streamed by aiohttp's
writer, and a real aiohttp server's multipart reader gets back exactly what was sent."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tinker_actors import errors
from tinker_actors.config import Settings
from tinker_actors.files import FilePath, normalize_file, normalize_files
from tinker_actors.multipart import CHUNK_SIZE, MultipartBody, flatten_form
from tinker_actors.runtime import get_runtime
from tinker_actors.transport import Transport


@pytest.fixture(autouse=True)
async def _close_loop_http() -> Any:
    yield
    await get_runtime().aclose_http()


class Recorder:
    """A real aiohttp server reading each part with the multipart reader, chunk by chunk."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0

    async def handle(self, request: web.Request) -> web.Response:
        parts: list[dict[str, Any]] = []
        reader = await request.multipart()
        async for part in reader:
            digest = hashlib.sha256()
            size = 0
            head = b""
            while chunk := await part.read_chunk(8192):
                digest.update(chunk)
                size += len(chunk)
                if len(head) < 64:
                    head += chunk[: 64 - len(head)]
            parts.append(
                {
                    "name": part.name,
                    "filename": part.filename,
                    "content_type": part.headers.get("Content-Type"),
                    "headers": dict(part.headers),
                    "sha256": digest.hexdigest(),
                    "size": size,
                    "head": head,
                }
            )
        self.requests.append(
            {
                "method": request.method,
                "content_type": request.headers["Content-Type"],
                "parts": parts,
            }
        )
        if self.fail_first:
            self.fail_first -= 1
            return web.json_response({"detail": "try again"}, status=503)
        return web.json_response({"parts": len(parts)})


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/api/v1/upload", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rec, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _transport(base: str) -> Transport:
    async def no_sleep(_: float) -> None:
        return None

    return Transport(get_runtime(), Settings(base_url=base, api_key="tml-x"), sleep=no_sleep)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


class ChunkSpy(io.BytesIO):
    """A seekable binary file object that records the sizes asked of read()."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return super().read(size)


# ----------------------------------------------------------------------------- form fields
def test_flatten_form_uses_bracket_keys() -> None:
    fields = {
        "note": "hi",
        "metadata": {"source": "tinker", "version": 3, "nested": {"ok": True}},
        "tags": ["x", "y"],
        "items": [{"id": 1}, {"id": 2}],
        "empty": None,
        "flag": False,
    }
    assert flatten_form(fields) == [
        ("note", "hi"),
        ("metadata[source]", "tinker"),
        ("metadata[version]", "3"),
        ("metadata[nested][ok]", "true"),
        ("tags[]", "x"),
        ("tags[]", "y"),
        ("items[][id]", "1"),
        ("items[][id]", "2"),
        ("empty", ""),
        ("flag", "false"),
    ]
    with pytest.raises(errors.InvalidInputError, match="must be a mapping"):
        flatten_form(["not", "a", "map"])
    with pytest.raises(errors.InvalidInputError, match="scalars"):
        flatten_form({"x": object()})


# ----------------------------------------------------------------------------- file inputs
def test_file_inputs_never_guess_paths(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "data.json"
    p.write_bytes(b"{}")
    assert normalize_file(p).filename == "data.json"
    assert normalize_file(p).content_type == "application/json"
    assert normalize_file(FilePath(str(p))).source == p
    # a str is content, even one that looks like a path
    part = normalize_file(str(p))
    assert part.source == str(p).encode() and part.filename is None
    assert normalize_file("a/b\\c").source == b"a/b\\c"
    assert normalize_file(b"raw").content_type == "application/octet-stream"
    t = normalize_file(("x.bin", b"123", "application/x-custom", {"X-Part": "1"}))
    assert (t.filename, t.content_type, dict(t.headers)) == (
        "x.bin",
        "application/x-custom",
        {"X-Part": "1"},
    )
    assert normalize_file(("n.txt", io.BytesIO(b"z"))).content_type == "text/plain"
    pairs = normalize_files([("a", b"1"), ("a", b"2")])
    assert [n for n, _ in pairs] == ["a", "a"]


def test_bad_file_inputs_fail_at_call_time(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        normalize_file(tmp_path / "missing.bin")
    with pytest.raises(IsADirectoryError):
        normalize_file(tmp_path)
    with pytest.raises(errors.InvalidInputError, match="binary mode"):
        normalize_file(io.StringIO("text"))
    with pytest.raises(errors.InvalidInputError, match="tuple"):
        normalize_file(("a",))
    with pytest.raises(errors.InvalidInputError, match="got int"):
        normalize_file(3)
    with pytest.raises(errors.InvalidInputError, match="pair"):
        normalize_files([b"x"])
    with pytest.raises(errors.InvalidInputError, match="mapping"):
        normalize_files(b"x")


# ----------------------------------------------------------------------------- on the wire
async def test_a_body_parses_back_to_exactly_the_fields_and_bytes(
    recorder: tuple[Recorder, str], tmp_path: pathlib.Path
) -> None:
    rec, base = recorder
    big = os.urandom(3 * CHUNK_SIZE + 12345)  # several chunks, not a multiple of the size
    path = tmp_path / "big.bin"
    path.write_bytes(big)
    spy_data = os.urandom(2 * CHUNK_SIZE + 1)
    spy = ChunkSpy(b"prefix" + spy_data)
    spy.seek(6)  # a file object is sent from its current position
    files = [
        ("file", path),
        ("raw", b"hello\n"),
        ("stream", ("stream.dat", spy, "application/x-stream", {"X-Extra": "yes"})),
        ("text", ("note.txt", "héllo/with/slashes")),
    ]
    form = {"note": "multipart demo", "metadata": {"source": "tinker", "version": "0.4"}}
    t = _transport(base)
    resp = await t.request("POST", "/api/v1/upload", json=form, files=files)
    assert resp.json() == {"parts": 7}
    (req,) = rec.requests
    assert req["content_type"].startswith("multipart/form-data; boundary=")
    parts = req["parts"]
    fields = [(p["name"], p["head"].decode()) for p in parts[:3]]
    assert fields == [
        ("note", "multipart demo"),
        ("metadata[source]", "tinker"),
        ("metadata[version]", "0.4"),
    ]
    assert all(p["filename"] is None for p in parts[:3])
    f, raw, stream, text = parts[3:]
    assert (f["name"], f["filename"], f["size"], f["sha256"]) == (
        "file",
        "big.bin",
        len(big),
        _sha(big),
    )
    assert f["content_type"] == "application/octet-stream"
    assert (raw["name"], raw["filename"], raw["sha256"]) == ("raw", None, _sha(b"hello\n"))
    assert (stream["filename"], stream["content_type"]) == ("stream.dat", "application/x-stream")
    assert stream["headers"]["X-Extra"] == "yes"
    assert (stream["size"], stream["sha256"]) == (len(spy_data), _sha(spy_data))
    assert text["sha256"] == _sha("héllo/with/slashes".encode())
    # streamed: every read of the file object was bounded by the chunk size
    assert spy.sizes and all(s is not None and 0 < s <= CHUNK_SIZE for s in spy.sizes)


async def test_a_retry_resends_the_whole_body_and_put_works(
    recorder: tuple[Recorder, str], tmp_path: pathlib.Path
) -> None:
    rec, base = recorder
    rec.fail_first = 1  # 503 once: the transport retries with a fresh body
    data = os.urandom(CHUNK_SIZE + 3)
    path = tmp_path / "x.bin"
    path.write_bytes(data)
    spy = ChunkSpy(data)
    t = _transport(base)
    await t.request(
        "PUT",
        "/api/v1/upload",
        json={"a": 1},
        files={"p": path, "s": ("s.bin", spy)},
        content_type="multipart/form-data; boundary=fixedboundary0123",
    )
    assert len(rec.requests) == 2
    for req in rec.requests:
        assert req["method"] == "PUT"
        assert req["content_type"] == "multipart/form-data; boundary=fixedboundary0123"
        got = {p["name"]: (p["size"], p["sha256"]) for p in req["parts"]}
        assert got == {
            "a": (1, _sha(b"1")),
            "p": (len(data), _sha(data)),
            "s": (len(data), _sha(data)),
        }


async def test_multipart_errors_are_typed_and_come_before_any_request(
    recorder: tuple[Recorder, str], tmp_path: pathlib.Path
) -> None:
    rec, base = recorder
    t = _transport(base)
    with pytest.raises(errors.InvalidInputError, match="multipart body must be a mapping"):
        await t.request("POST", "/api/v1/upload", json=[1, 2], files={"f": b"x"})
    with pytest.raises(errors.InvalidInputError, match="POST or PUT"):
        await t.request("GET", "/api/v1/upload", files={"f": b"x"})
    with pytest.raises(FileNotFoundError):
        await t.request("POST", "/api/v1/upload", json={}, files={"f": tmp_path / "nope"})
    assert rec.requests == []
    # the caller's multipart content type alone makes a (fields-only) multipart body
    await t.request("POST", "/api/v1/upload", json={"k": "v"}, content_type="multipart/form-data")
    assert [p["name"] for p in rec.requests[0]["parts"]] == ["k"]


def test_a_non_seekable_stream_is_sent_once() -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def seekable(self) -> bool:
            return False

        def readinto(self, b: Any) -> int:
            return 0

    body = MultipartBody({}, {"f": ("f", Pipe())})
    assert not body.replayable
    body.writer()
    with pytest.raises(errors.InvalidInputError, match="only once"):
        body.writer()
