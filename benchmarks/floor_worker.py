"""The floor: the least client work the same exchange needs, as a bare aiohttp loop.

No SDK is imported. Request bodies are prebuilt (JSON templates with the seq id spliced in;
forward_backward protobuf chunks prebuilt by ``benchmarks.prep_bodies`` with ``model_id`` and
``seq_id`` prepended as protobuf fields at send time). Each future is long-polled with
``retrieve_future`` until its result arrives; results are read as bytes, not decoded.

The requests carry the headers the protocol has every client send (protocol.md section 4;
what 0.38 sent in ``wire_captures/01``: platform, SDK method, a fresh idempotency key per
request, retry count, read timeout, the poll's iteration and type), prebuilt per request
kind, so the floor is the same exchange as the clients', not a lighter one. ``--client
floor_min`` sends only what our server needs (X-API-Key and Content-Type): the bare minimum,
recorded beside it.
Prints ``BENCH_RESULT {json}`` like ``client_worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.client_worker import Region, pct, peak_rss_mb, rss_mb

JSON = "application/json"
PROTO = "application/x-protobuf"
# what every request of 0.38 carries (wire_captures/01), before its kind's own headers
PLATFORM = {
    "User-Agent": "AsyncTinker/Python 0.38.0",
    "x-stainless-package-version": "0.38.0",
    "x-stainless-os": "Linux",
    "x-stainless-arch": "x64",
    "x-stainless-runtime": "CPython",
    "x-stainless-runtime-version": "3.11.7",
    "x-stainless-async": "async:asyncio",
}


def uuid4_hex() -> str:
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


class Floor:
    def __init__(self, http: aiohttp.ClientSession, base: str, minimal: bool = False) -> None:
        self.http, self.base, self.minimal = http, base + "/api/v1/", minimal
        self.kinds: dict[tuple[str, str, str, str], dict[str, str]] = {}

    def headers(
        self, content_type: str = JSON, accept: str = JSON, method: str = "", extra: str = ""
    ) -> dict[str, str]:
        """A request's headers: its kind's template (built once) and a fresh idempotency key."""
        kind = (content_type, accept, method, extra)
        t = self.kinds.get(kind)
        if t is None:
            if self.minimal:
                t = {"Content-Type": content_type}
                if accept != JSON:
                    t["Accept"] = accept
            else:
                t = {"Accept": accept, "Content-Type": content_type, **PLATFORM}
                if method:  # background requests (the heartbeat) name no SDK method
                    t["x-sdk-version"] = "0.38.0"
                    t["x-sdk-method"] = method
                if extra == "sample":
                    t["x-tinker-sampling-backpressure"] = "1"
                elif extra:  # a poll of this request type
                    t["x-tinker-request-iteration"] = "0"
                    t["x-tinker-request-type"] = extra
                    t["x-stainless-raw-response"] = "raw"
                t["x-idempotency-key"] = ""
                t["x-stainless-retry-count"] = "0"
                t["x-stainless-read-timeout"] = "45" if extra and extra != "sample" else "60"
            self.kinds[kind] = t
        if self.minimal:
            return t
        h = t.copy()
        h["x-idempotency-key"] = "stainless-python-retry-" + uuid4_hex()
        return h

    async def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
        headers = headers or self.headers()
        async with self.http.post(self.base + path, data=body, headers=headers) as r:
            data = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: HTTP {r.status} {data[:200]!r}")
            return data

    async def result(self, request_id: str, proto: bool, method: str = "") -> bytes:
        body = b'{"request_id":"' + request_id.encode() + b'","allow_metadata_only":false}'
        rtype = "Sample" if "Sampling" in method else "ForwardBackward" if proto else "OptimStep"
        sent = time.time()
        iteration = 0
        while True:
            h = self.headers(JSON, PROTO if proto else JSON, method, rtype)
            if not self.minimal:
                if iteration:
                    h["x-tinker-request-iteration"] = str(iteration)
                else:
                    h["x-tinker-create-promise-roundtrip-time"] = str(time.time() - sent)
            iteration += 1
            async with self.http.post(self.base + "retrieve_future", data=body, headers=h) as r:
                data = await r.read()
                if r.status == 408:
                    continue
                if r.status != 200:
                    raise RuntimeError(f"retrieve_future: HTTP {r.status} {data[:200]!r}")
                if r.content_type == "application/x-protobuf":
                    return data
                if data.startswith(b'{"type":"try_again"') or b'"try_again"' in data[:40]:
                    continue
                if b'"error"' in data and b'"category"' in data:
                    raise RuntimeError(f"future failed: {data[:300]!r}")
                return data

    async def session(self) -> str:
        out = await self.post(
            "create_session",
            b'{"tags":[],"user_metadata":{},"sdk_version":"0.38.0","type":"create_session"}',
        )
        return json.loads(out)["session_id"]

    async def sampler(self, session_id: str, base_model: str) -> str:
        out = await self.post(
            "create_sampling_session",
            json.dumps(
                {
                    "session_id": session_id,
                    "sampling_session_seq_id": 0,
                    "base_model": base_model,
                    "type": "create_sampling_session",
                }
            ).encode(),
        )
        return json.loads(out)["sampling_session_id"]

    async def model(self, session_id: str, base_model: str, rank: int) -> str:
        out = await self.post(
            "create_model",
            json.dumps(
                {
                    "session_id": session_id,
                    "model_seq_id": 0,
                    "base_model": base_model,
                    "lora_config": {
                        "rank": rank,
                        "train_unembed": True,
                        "train_mlp": True,
                        "train_attn": True,
                    },
                    "optimizer_config": {"type": "adamw"},
                    "type": "create_model",
                }
            ).encode(),
        )
        fut = json.loads(out)
        res = json.loads(await self.result(fut["request_id"], proto=False))
        return res.get("model_id") or fut["model_id"]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fwdbwd_prefix(model_id: str, seq_id: int) -> bytes:
    """ForwardBackwardRequest fields 1 (model_id) and 2 (seq_id); protobuf merges them."""
    mid = model_id.encode()
    return b"\x0a" + varint(len(mid)) + mid + b"\x10" + varint(seq_id)


def optim_body(model_id: str, seq_id: int) -> bytes:
    return (
        b'{"model_id":"'
        + model_id.encode()
        + b'","seq_id":'
        + str(seq_id).encode()
        + b',"type":"optim_step","adam_params":{"learning_rate":0.0001,"beta1":0.9,'
        b'"beta2":0.95,"eps":1e-12,"weight_decay":0.0,"grad_clip_norm":0.0}}'
    )


async def stats(a: argparse.Namespace, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(a.base_url + "/api/v1/_local/stats") as r:
        body = await r.json()
    body["cpu_s"] = body["process"]["cpu_s"]
    return body


# --------------------------------------------------------------------------- scenarios
async def sc_sample(
    a: argparse.Namespace, p: dict[str, Any], http: aiohttp.ClientSession, f: Floor
) -> dict[str, Any]:
    sid = await f.session()
    sampler = await f.sampler(sid, p["base_model"])
    toks = ",".join(str(i) for i in range(1, p["prompt_tokens"] + 1))
    head = (
        b'{"num_samples":1,"prompt":{"chunks":[{"tokens":['
        + toks.encode()
        + b'],"type":"encoded_text"}]},"sampling_params":{"max_tokens":'
        + str(p["max_tokens"]).encode()
        + b',"temperature":1.0,"top_k":-1,"top_p":1.0},'
        b'"sampling_session_id":"' + sampler.encode() + b'","seq_id":'
    )
    tail = (
        b',"prompt_logprobs":false,"topk_prompt_logprobs":0,"topk_sample_logprobs":0,'
        b'"prompt_alt_tokens_k":0,"record_stability_info":false,"type":"sample"}'
    )
    method = "SamplingClient.sample_async"
    seq = 0

    async def one() -> int:
        nonlocal seq
        body = head + str(seq).encode() + tail
        seq += 1
        out = await f.post("asample", body, f.headers(JSON, JSON, method, "sample"))
        rid = out.split(b'"request_id":"', 1)[1].split(b'"', 1)[0].decode()
        return len(await f.result(rid, proto=True, method=method))

    for _ in range(p.get("warmup", 3)):
        await one()
    conc, total = p["concurrency"], p["total"]
    lat: list[float] = []
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await one()
            lat.append(time.perf_counter() - t0)

    s0 = await stats(a, http)
    with Region() as reg:
        await asyncio.gather(*(worker() for _ in range(conc)))
    s1 = await stats(a, http)
    return {
        "requests": len(lat),
        "wall_s": reg.wall,
        "cpu_s": reg.cpu,
        "req_per_s": len(lat) / reg.wall,
        "sampled_tok_per_s": len(lat) * p["max_tokens"] / reg.wall,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "http_requests": s1["total"] - s0["total"],
        "server_cpu_s": s1["cpu_s"] - s0["cpu_s"],
        **reg.gc_fields(),
    }


def load_chunks(p: dict[str, Any]) -> list[bytes]:
    d = Path(p["bodies_dir"])
    return [(d / name).read_bytes() for name in sorted(os.listdir(d)) if name.endswith(".bin")]


FWDBWD = "TrainingClient.forward_backward_async"
OPTIM = "TrainingClient.optim_step_async"


async def send_fwdbwd(f: Floor, model_id: str, seq: int, chunks: list[bytes]) -> list[str]:
    """All chunks of one forward_backward in one turn, the first chunk last (as 0.38 does)."""
    ids: list[str | None] = [None] * len(chunks)

    async def send(i: int) -> None:
        hdr = f.headers(PROTO, JSON, FWDBWD)
        out = await f.post("forward_backward", fwdbwd_prefix(model_id, seq + i) + chunks[i], hdr)
        ids[i] = json.loads(out)["request_id"]

    if len(chunks) > 1:
        await asyncio.gather(*(send(i) for i in range(1, len(chunks))))
    await send(0)
    return [i for i in ids if i is not None]


async def sc_fwdbwd(
    a: argparse.Namespace, p: dict[str, Any], http: aiohttp.ClientSession, f: Floor
) -> dict[str, Any]:
    sid = await f.session()
    mid = await f.model(sid, p["base_model"], p.get("rank", 8))
    chunks = load_chunks(p)
    s0 = await stats(a, http)
    with Region() as reg:
        ids = await send_fwdbwd(f, mid, 1, chunks)
        outs = await asyncio.gather(*(f.result(i, proto=True, method=FWDBWD) for i in ids))
    s1 = await stats(a, http)
    body = s1["body_bytes"] - s0["body_bytes"]
    return {
        "wall_s": reg.wall,
        "cpu_s": reg.cpu,
        "body_mb": body / 1e6,
        "mb_per_s": body / 1e6 / reg.wall,
        "tokens_per_s": p["datums"] * p["tokens"] / reg.wall,
        "chunks": len(chunks),
        "result_mb": sum(map(len, outs)) / 1e6,
        "http_requests": s1["total"] - s0["total"],
        "server_cpu_s": s1["cpu_s"] - s0["cpu_s"],
    }


async def sc_train(
    a: argparse.Namespace, p: dict[str, Any], http: aiohttp.ClientSession, f: Floor
) -> dict[str, Any]:
    sid = await f.session()
    mid = await f.model(sid, p["base_model"], p.get("rank", 8))
    chunks = load_chunks(p)
    seq = 1

    async def submit() -> list[str]:
        nonlocal seq
        ids = await send_fwdbwd(f, mid, seq, chunks)
        seq += len(chunks)
        out = await f.post("optim_step", optim_body(mid, seq), f.headers(JSON, JSON, OPTIM))
        seq += 1
        return [*ids, json.loads(out)["request_id"]]

    async def wait(ids: list[str]) -> None:
        last = len(ids) - 1
        await asyncio.gather(
            *(
                f.result(i, proto=n < last, method=FWDBWD if n < last else OPTIM)
                for n, i in enumerate(ids)
            )
        )

    for _ in range(p.get("warmup", 2)):
        await wait(await submit())
    steps = p["steps"]
    s0 = await stats(a, http)
    with Region() as reg:
        prev = None
        for _ in range(steps):
            cur = await submit()
            if prev is not None:
                await wait(prev)
            prev = cur
        await wait(prev)
    s1 = await stats(a, http)
    n = s1["total"] - s0["total"]
    return {
        "steps": steps,
        "wall_s": reg.wall,
        "cpu_s": reg.cpu,
        "steps_per_s": steps / reg.wall,
        "tokens_per_s": steps * p["datums"] * p["tokens"] / reg.wall,
        "http_requests": n,
        "requests_per_step": n / steps,
        "server_cpu_s": s1["cpu_s"] - s0["cpu_s"],
    }


async def sc_idle(
    a: argparse.Namespace, p: dict[str, Any], http: aiohttp.ClientSession, f: Floor
) -> dict[str, Any]:
    """A session kept alive by the 10 s heartbeat, and a sampling session; nothing else."""
    sid = await f.session()
    await f.sampler(sid, p["base_model"])
    hb = b'{"session_id":"' + sid.encode() + b'","type":"session_heartbeat"}'
    rss0 = rss_mb()
    s0 = await stats(a, http)
    with Region() as reg:
        deadline = time.perf_counter() + p["seconds"]
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            await asyncio.sleep(min(10.0, left))
            if deadline - time.perf_counter() > 0:
                await f.post("session_heartbeat", hb)
    s1 = await stats(a, http)
    return {
        "seconds": reg.wall,
        "cpu_s": reg.cpu,
        "cpu_pct": 100 * reg.cpu / reg.wall,
        "rss_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - rss0,
        "http_requests": s1["total"] - s0["total"],
    }


SCENARIOS = {"sample": sc_sample, "fwdbwd": sc_fwdbwd, "train": sc_train, "idle": sc_idle}


async def run(a: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    conn = aiohttp.TCPConnector(limit=p.get("connections", 1000))
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(
        connector=conn, timeout=timeout, headers={"X-API-Key": a.api_key}
    ) as http:
        floor = Floor(http, a.base_url, minimal=a.client == "floor_min")
        return await SCENARIOS[a.scenario](a, p, http, floor)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--params", default="{}")
    ap.add_argument("--client", default="floor", choices=("floor", "floor_min"))
    a = ap.parse_args()
    p = json.loads(a.params)
    rss_after_import = rss_mb()
    try:
        out = asyncio.run(run(a, p))
        out["ok"] = True
    except BaseException as exc:
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    out.update(peak_rss_mb=peak_rss_mb(), rss_after_import_mb=rss_after_import)
    print("BENCH_RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
