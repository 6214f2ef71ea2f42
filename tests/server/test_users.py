"""Several users on one local server: each sees only their own resources.

Alice and Bob have keys on one server. Bob, on every route that names a resource, gets for
Alice's resource exactly the answer he gets for one that does not exist (404; a future
answers as an unknown future, 410), so ids cannot be probed. Alice's published checkpoint is
the exception: Bob may read it (weights_info, sample from it, load it, archive), never change
it. Listings show each user their own things, and ``owner`` fields name the user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest

from tinker_actors import manifest
from tinker_actors.server import LocalServer
from tinker_actors.server.users import load_keys_file

from ._helpers import PROTO, Api, fwdbwd_body

KEYS = {"tml-alice-key": "alice", "tml-bob-key": "bob"}


class _As:
    """A server handle whose api_key is one user's."""

    def __init__(self, srv: LocalServer, key: str) -> None:
        self.base_url, self.api_key = srv.base_url, key


@pytest.fixture
def server(tmp_path):
    srv = LocalServer(
        port=0, data_dir=tmp_path / "d", engine="null", api_keys=KEYS, long_poll_s=0.5
    ).start_in_thread()
    try:
        yield srv
    finally:
        srv.stop_in_thread()


async def _alice_world(a: Api) -> dict[str, Any]:
    """A session, a model with a pending gradient, checkpoints (one published), a sampler."""
    sid = await a.session()
    model = await a.model(sid)
    _, fb = await a.fwdbwd(model, 1)
    assert (await a.result(fb["request_id"], accept=PROTO))[0] == 200
    w: dict[str, Any] = {"session": sid, "model": model, "future": fb["request_id"]}
    for seq, name in ((2, "private"), (3, "shared")):
        fut = await a.ok("/save_weights", {"model_id": model, "seq_id": seq, "path": name})
        w[name] = (await a.result(fut["request_id"]))[1]["path"]
    fut = await a.ok("/save_weights_for_sampler", {"model_id": model, "seq_id": 4, "path": "samp"})
    w["sampler_ckpt"] = (await a.result(fut["request_id"]))[1]["path"]
    fut = await a.ok(
        "/save_weights_for_sampler", {"model_id": model, "seq_id": 5, "path": "samp_shared"}
    )
    w["sampler_shared"] = (await a.result(fut["request_id"]))[1]["path"]
    fut = await a.ok("/save_weights_external", {"model_id": model, "seq_id": 6, "path": "ext"})
    assert (await a.result(fut["request_id"]))[0] == 200
    for path in (w["shared"], w["sampler_shared"]):
        ck = path.removeprefix("tinker://").partition("/")[2]
        assert (await a.post(f"/training_runs/{model}/checkpoints/{ck}/publish"))[0] == 200
    out = await a.ok(
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": "tinker-actors/byte-1m"},
    )
    w["sampler"] = out["sampling_session_id"]
    fut = await a.ok(
        "/asample",
        {
            "sampling_session_id": w["sampler"],
            "seq_id": 1,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
            "sampling_params": {"max_tokens": 2},
        },
    )
    w["sample_future"] = fut["request_id"]
    return w


def _calls(w: dict[str, Any]) -> dict[str, tuple[str, str, Any, bytes | None]]:
    """Bob's call on Alice's resource, per manifest route: (method, path, json, raw body)."""
    run, sid, sampler = w["model"], w["session"], w["sampler"]
    ck = "weights/private"
    base = f"/training_runs/{run}/checkpoints/{ck}"
    sample = {
        "sampling_session_id": sampler,
        "seq_id": 2,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1]}]},
        "sampling_params": {"max_tokens": 1},
    }
    return {
        "session_heartbeat": ("POST", "/session_heartbeat", {"session_id": sid}, None),
        "session_finish": ("POST", f"/sessions/{sid}/finish", {}, None),
        "create_model": (
            "POST",
            "/create_model",
            {"session_id": sid, "model_seq_id": 9, "base_model": "tinker-actors/byte-1m"},
            None,
        ),
        "get_info": ("POST", "/get_info", {"model_id": run}, None),
        "forward_backward": ("POST", "/forward_backward", None, fwdbwd_body(run, 7)),
        "forward": (
            "POST",
            "/forward",
            {"model_id": run, "seq_id": 7, "forward_input": {"data": [], "loss_fn": "x"}},
            None,
        ),
        "optim_step": ("POST", "/optim_step", {"model_id": run, "seq_id": 7}, None),
        "save_weights": ("POST", "/save_weights", {"model_id": run, "seq_id": 7}, None),
        "save_weights_for_sampler": (
            "POST",
            "/save_weights_for_sampler",
            {"model_id": run, "seq_id": 7},
            None,
        ),
        "save_weights_external": (
            "POST",
            "/save_weights_external",
            {"model_id": run, "seq_id": 7, "path": "x"},
            None,
        ),
        "load_weights": (
            "POST",
            "/load_weights",
            {"model_id": run, "seq_id": 7, "path": w["private"], "optimizer": False},
            None,
        ),
        "unload_model": ("POST", "/unload_model", {"model_id": run}, None),
        "create_sampling_session": (
            "POST",
            "/create_sampling_session",
            {"session_id": sid, "sampling_session_seq_id": 0, "model_path": w["sampler_ckpt"]},
            None,
        ),
        "join_sampling_session": (
            "POST",
            "/join_sampling_session",
            {"sampling_session_id": sampler},
            None,
        ),
        "get_sampler": ("GET", f"/samplers/{sampler}", None, None),
        "asample": ("POST", "/asample", sample, None),
        "stream_sample": ("POST", "/stream_sample", sample, None),
        "retrieve_future": ("POST", "/retrieve_future", {"request_id": w["future"]}, None),
        "create_custom_loss": (
            "POST",
            "/create_custom_loss",
            {
                "session_id": sid,
                "custom_loss_seq_id": 0,
                "name": "x",
                "inputs": [],
                "graph": {"nodes": []},
            },
            None,
        ),
        "copy_weights": (
            "POST",
            "/copy_weights",
            {"source_path": w["private"], "destination_project_id": "p"},
            None,
        ),
        "weights_info": ("POST", "/weights_info", {"tinker_path": w["private"]}, None),
        "get_training_run": ("GET", f"/training_runs/{run}", None, None),
        "list_checkpoints": ("GET", f"/training_runs/{run}/checkpoints", None, None),
        "delete_checkpoint": ("DELETE", base, None, None),
        "publish_checkpoint": ("POST", base + "/publish", None, None),
        "unpublish_checkpoint": ("DELETE", base + "/publish", None, None),
        "set_checkpoint_ttl": ("PUT", base + "/ttl", {"ttl_seconds": 7200}, None),
        "get_external_weights_urls": (
            "GET",
            f"/training_runs/{run}/checkpoints/external_weights/ext/external_weights_urls",
            None,
            None,
        ),
        "checkpoint_archive": ("GET", base + "/archive", None, None),
        "get_session": ("GET", f"/sessions/{sid}", None, None),
        "assign_session_project": ("PUT", f"/sessions/{sid}/project", {"project_id": "p"}, None),
        "export_session_trace": ("GET", f"/sessions/{sid}/trace_export", None, None),
    }


def _missing(call: tuple[str, str, Any, bytes | None], w: dict[str, Any]) -> tuple:
    """The same call with every id of Alice's replaced by one that never existed."""
    subs = {
        w["private"]: w["private"].replace(w["model"], "sess-0000000000000000:train:0"),
        w["sampler_ckpt"]: w["sampler_ckpt"].replace(w["model"], "sess-0000000000000000:train:0"),
        w["model"]: "sess-0000000000000000:train:0",
        w["sampler"]: "sess-0000000000000000:sample:0",
        w["session"]: "sess-0000000000000000",
        w["future"]: "req-00000000000000000000000000000000",
    }

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            for old, new in subs.items():
                value = value.replace(old, new)
            return value
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        return value

    method, path, body, raw = call
    if raw is not None:
        raw = fwdbwd_body("sess-0000000000000000:train:0", 7)
    return method, sub(path), sub(body), raw


async def _status(api: Api, call: tuple[str, str, Any, bytes | None]) -> int:
    method, path, body, raw = call
    headers = {"Content-Type": PROTO} if raw is not None else None
    status, _, _ = await api.call(
        method, "/api/v1" + path, json=body, data=raw, headers=headers, allow_redirects=False
    )
    return status


async def test_two_users_are_isolated_on_every_route(server):
    async with aiohttp.ClientSession() as http:
        alice = Api(_As(server, "tml-alice-key"), http)
        bob = Api(_As(server, "tml-bob-key"), http)
        w = await _alice_world(alice)
        calls = _calls(w)
        # every manifest route that names a resource is covered
        named = {
            r.name
            for r in manifest.ROUTE_LIST
            if r.path_params or (r.request_type is not None and r.name not in _USER_LEVEL)
        }
        assert named - set(calls) == set(), sorted(named - set(calls))
        for name, call in calls.items():
            mine = await _status(bob, call)
            missing = await _status(bob, _missing(call, w))
            want = 410 if name == "retrieve_future" else 404
            assert mine == missing == want, (name, mine, missing)
        # Bob's samples and cancels of Alice's futures are no-ops; her future is intact
        assert (await bob.post("/cancel_future", {"request_id": w["sample_future"]}))[0] == 200
        assert (await alice.result(w["sample_future"], accept=PROTO))[0] == 200
        status, out = await bob.post(
            "/retrieve_futures",
            {"target": {"type": "sampling_session", "sampling_session_id": w["sampler"]}},
        )
        assert status == 200 and out["completions"] == [] and out["cursor"] == 0
        # Alice still has everything (Bob's attempts changed nothing)
        assert (await alice.get(f"/sessions/{w['session']}"))[0] == 200
        _, listed = await alice.get(f"/training_runs/{w['model']}/checkpoints")
        assert {c["checkpoint_id"] for c in listed["checkpoints"]} >= {
            "weights/private",
            "weights/shared",
        }
        fut = await alice.ok(
            "/optim_step", {"model_id": w["model"], "seq_id": 7, "adam_params": {}}
        )
        assert "metrics" in (await alice.result(fut["request_id"]))[1]
        assert server.model_counters()[w["model"]]["optimizer_steps"] == 1


_USER_LEVEL = {  # routes about the caller, not about a resource: checked by listing below
    "client_config",
    "client_dynamic_config",
    "auth_token",
    "create_session",
    "telemetry",
    "retrieve_futures",
    "cancel_future",
    "search_sessions",
}


async def test_listings_and_owner_fields_are_per_user(server):
    async with aiohttp.ClientSession() as http:
        alice = Api(_As(server, "tml-alice-key"), http)
        bob = Api(_As(server, "tml-bob-key"), http)
        w = await _alice_world(alice)
        bob_sid = await bob.session()
        bob_model = await bob.model(bob_sid)

        _, runs = await alice.get("/training_runs")
        assert [r["training_run_id"] for r in runs["training_runs"]] == [w["model"]]
        assert runs["training_runs"][0]["model_owner"] == "alice"
        _, runs = await bob.get("/training_runs")
        assert [r["training_run_id"] for r in runs["training_runs"]] == [bob_model]
        assert runs["training_runs"][0]["model_owner"] == "bob"
        assert runs["cursor"]["total_count"] == 1

        assert (await bob.get("/sessions"))[1]["sessions"] == [bob_sid]
        _, found = await bob.post("/sessions/search", {})
        assert [s["session_id"] for s in found["sessions"]] == [bob_sid]
        assert found["sessions"][0]["owner"] == "bob"
        _, found = await alice.post("/sessions/search", {})
        assert {s["owner"] for s in found["sessions"]} == {"alice"}

        _, ckpts = await bob.get("/checkpoints")
        assert ckpts["checkpoints"] == [] and ckpts["cursor"]["total_count"] == 0
        _, ckpts = await alice.get("/checkpoints")
        assert len(ckpts["checkpoints"]) == 5
        _, usage = await bob.get("/billing/usage/checkpoints/current")
        assert usage["data"][0]["user_name"] == "bob" and usage["data"][0]["checkpoint_count"] == 0

        assert (await bob.get("/auth/apikey/me"))[1]["name"] == "bob"
        jwt = (await bob.ok("/auth/token", {}))["jwt"]
        status, me, _ = await bob.call(
            "GET", "/api/v1/auth/apikey/me", headers={"X-API-Key": jwt}, key=False
        )
        assert status == 200 and me["name"] == "bob"


async def test_published_checkpoints_are_readable_by_others_never_writable(server):
    async with aiohttp.ClientSession() as http:
        alice = Api(_As(server, "tml-alice-key"), http)
        bob = Api(_As(server, "tml-bob-key"), http)
        w = await _alice_world(alice)
        shared, model = w["shared"], w["model"]
        # read: weights_info, archive, load into Bob's own model, sample from it
        assert (await bob.post("/weights_info", {"tinker_path": shared}))[0] == 200
        status, _, resp = await bob.call(
            "GET",
            f"/api/v1/training_runs/{model}/checkpoints/weights/shared/archive",
            allow_redirects=False,
        )
        assert status == 302 and "/_files/" in resp.headers["Location"]
        bob_sid = await bob.session()
        fut = await bob.ok(
            "/load_weights",
            {"session_id": bob_sid, "model_seq_id": 0, "path": shared, "optimizer": True},
        )
        status, loaded = await bob.result(fut["request_id"])
        assert status == 200 and loaded["model_id"].startswith(bob_sid), loaded
        out = await bob.ok(
            "/create_sampling_session",
            {
                "session_id": bob_sid,
                "sampling_session_seq_id": 0,
                "model_path": w["sampler_shared"],
            },
        )
        assert out["sampling_session_id"].startswith(bob_sid)
        copy = await bob.ok("/copy_weights", {"source_path": shared, "destination_project_id": "p"})
        _, runs = await bob.get("/training_runs")
        copied = copy["tinker_path"].removeprefix("tinker://").partition("/")[0]
        assert copied in {r["training_run_id"] for r in runs["training_runs"]}
        assert copied not in {
            r["training_run_id"] for r in (await alice.get("/training_runs"))[1]["training_runs"]
        }
        # write: never (the same 404 as a private one)
        base = f"/api/v1/training_runs/{model}/checkpoints/weights/shared"
        for method, path, body in (
            ("DELETE", base, None),
            ("DELETE", base + "/publish", None),
            ("PUT", base + "/ttl", {"ttl_seconds": 7200}),
        ):
            assert (await bob.call(method, path, json=body))[0] == 404, (method, path)
        # Bob's load of Alice's private checkpoint is refused like a missing one
        status, _ = await bob.post(
            "/load_weights",
            {"session_id": bob_sid, "model_seq_id": 1, "path": w["private"], "optimizer": True},
        )
        assert status == 404
        # and Alice's unpublish takes Bob's read access away
        assert (await alice.call("DELETE", base + "/publish"))[0] == 200
        assert (await bob.post("/weights_info", {"tinker_path": shared}))[0] == 404


def test_keys_file_formats(tmp_path):
    lines = tmp_path / "keys.txt"
    lines.write_text("# team keys\ntml-a alice\n\ntml-b bob\n")
    assert load_keys_file(lines) == {"tml-a": "alice", "tml-b": "bob"}
    js = tmp_path / "keys.json"
    js.write_text('{"tml-a": "alice", "tml-b": "bob"}')
    assert load_keys_file(js) == {"tml-a": "alice", "tml-b": "bob"}
    bad = tmp_path / "bad.txt"
    bad.write_text("tml-a alice extra\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        load_keys_file(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="no API keys"):
        load_keys_file(bad)


async def test_keys_file_only_accepts_listed_keys(tmp_path, monkeypatch):
    keys = tmp_path / "keys.txt"
    keys.write_text("tml-a alice\ntml-b bob\n")
    monkeypatch.setenv("TINKER_API_KEY", "tml-from-env")
    srv = LocalServer(port=0, data_dir=tmp_path / "d", engine="null", api_keys=keys)
    srv.start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            for key, want in (("tml-a", 200), ("tml-b", 200), ("tml-from-env", 401)):
                api = Api(_As(srv, key), http)
                assert (await api.get("/auth/apikey/me"))[0] == want, key
    finally:
        srv.stop_in_thread()


def test_serve_with_a_keys_file(tmp_path):
    """``python -m tinker_actors.server --api-keys FILE``: the listed users, no other key."""
    keys = tmp_path / "keys.txt"
    keys.write_text("tml-a alice\ntml-b bob\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tinker_actors.server",
            *("--port", "0", "--engine", "null", "--data-dir", str(tmp_path / "d")),
            *("--api-keys", str(keys), "--quiet"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TINKER_API_KEY": "tml-env"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip().startswith("data dir:"):
                break
        base = next(v.partition("=")[2] for v in lines if v.startswith("TINKER_BASE_URL="))
        assert "users: alice, bob" in " ".join(lines)
        assert not any(v.startswith("TINKER_API_KEY=") for v in lines)

        def me(key: str) -> object:
            req = urllib.request.Request(
                base + "/api/v1/auth/apikey/me", headers={"X-API-Key": key}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return json.load(resp)["name"]
            except urllib.error.HTTPError as exc:
                return exc.code

        assert (me("tml-a"), me("tml-b"), me("tml-env")) == ("alice", "bob", 401)
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.stdout.close()
