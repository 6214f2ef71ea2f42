"""The benchmarks' floor sends the protocol's exchange: the header names 0.38 sent (the wire
captures), not a lighter request; ``floor_min`` is the bare minimum, recorded beside it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchmarks.floor_worker import FWDBWD, JSON, OPTIM, PROTO, Floor

CAPTURES = Path(__file__).parent.parent / "fixtures" / "wire_captures"
FLOW = CAPTURES / "01_training_sampling_flow_apikey"
# added by aiohttp itself (Accept-Encoding, Content-Length) or the floor's session (X-API-Key)
BY_TRANSPORT = {"accept-encoding", "content-length", "x-api-key"}


def captured(name: str) -> dict[str, str]:
    headers: dict[str, str] = json.loads((FLOW / name).read_text())["request"]["headers"]
    return {k.lower(): v for k, v in headers.items()}


def names(h: dict[str, Any]) -> set[str]:
    return {k.lower() for k in h} | BY_TRANSPORT


@pytest.mark.parametrize(
    ("capture", "kind"),
    [
        ("029_POST_asample.json", (JSON, JSON, "SamplingClient.sample_async", "sample")),
        ("030_POST_retrieve_future.json", (JSON, PROTO, "SamplingClient.sample_async", "Sample")),
        ("008_POST_forward_backward.json", (PROTO, JSON, FWDBWD, "")),
        ("009_POST_optim_step.json", (JSON, JSON, OPTIM, "")),
    ],
)
def test_floor_requests_carry_the_headers_0_38_sent(capture: str, kind: tuple[str, ...]) -> None:
    floor = Floor(None, "http://x")  # type: ignore[arg-type]  # headers need no session
    h = floor.headers(*kind)
    if kind[3] and kind[3] != "sample":  # a poll's first request also reports its roundtrip
        h["x-tinker-create-promise-roundtrip-time"] = "0.001"
    want = captured(capture)
    assert names(h) == set(want)
    got = {k.lower(): v for k, v in h.items()}
    for k in ("accept", "content-type", "x-stainless-read-timeout", "x-stainless-retry-count"):
        assert got[k] == want[k] or float(got[k]) == float(want[k]), k


def test_each_floor_request_has_its_own_idempotency_key() -> None:
    floor = Floor(None, "http://x")  # type: ignore[arg-type]
    keys = [floor.headers(JSON, JSON, OPTIM)["x-idempotency-key"] for _ in range(50)]
    assert len(set(keys)) == 50
    for k in keys:
        u = uuid.UUID(k.removeprefix("stainless-python-retry-"))
        assert u.version == 4 and u.variant == uuid.RFC_4122


def test_floor_min_sends_only_what_the_server_needs() -> None:
    floor = Floor(None, "http://x", minimal=True)  # type: ignore[arg-type]
    assert floor.headers(JSON, JSON, OPTIM) == {"Content-Type": JSON}
    assert floor.headers(JSON, PROTO, OPTIM, "Sample") == {"Content-Type": JSON, "Accept": PROTO}
