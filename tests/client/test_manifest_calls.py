"""Transport.call against the manifest, x-sdk-method attribution, and the AdminClient."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors import errors, manifest, types
from tinker_actors.config import Settings
from tinker_actors.futures import APIFuture, poll_future
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import Transport, sdk_method_scope

from .scripted import ScriptedServer


async def _no_sleep(_: float) -> None:
    return None


def make(m: ScriptedServer) -> Transport:
    return Transport(loop_runtime(), Settings(base_url=m.base, api_key="tml-x"), sleep=_no_sleep)


async def test_call_encodes_per_route_and_decodes_the_response_type() -> None:
    async with ScriptedServer() as m:
        t = make(m)
        m.post("/api/v1/get_info", payload={"model_id": "m1", "model_data": {}, "extra": 1})
        info = await t.call("get_info", types.GetInfoRequest(model_id="m1"))
        assert isinstance(info, types.GetInfoResponse) and info.model_id == "m1"
        assert m.requests[-1].json() == {"model_id": "m1", "type": "get_info"}

        m.post("/api/v1/optim_step", payload={"request_id": "r1", "model_id": "m1"})
        fut = await t.call(
            "optim_step",
            types.OptimStepRequest(model_id="m1", seq_id=1, adam_params=tinker.AdamParams()),
        )
        assert fut == types.UntypedAPIFuture(request_id="r1", model_id="m1")

        m.post("/api/v1/forward_backward", payload={"request_id": "r2"})
        await t.call("forward_backward", b"\x0a\x00")
        assert m.requests[-1].headers["Content-Type"] == "application/x-protobuf"
        assert m.requests[-1].body == b"\x0a\x00"
        with pytest.raises(TypeError, match="protobuf"):
            await t.call("forward_backward", types.GetInfoRequest(model_id="m1"))

        ckpt = "weights/step-1"
        m.add("DELETE", "/api/v1/training_runs/run 1/checkpoints/weights/step-1", payload=None)
        assert (
            await t.call(
                "delete_checkpoint", path_params={"run_id": "run 1", "checkpoint_id": ckpt}
            )
            is None
        )
        assert m.requests[-1].method == "DELETE"

        cursor = {"offset": 0, "limit": 5, "total_count": 0}
        m.get("/api/v1/training_runs", payload={"training_runs": [], "cursor": cursor})
        await t.call("list_training_runs", query={"limit": 5, "offset": 0, "project_id": None})
        assert dict(m.requests[-1].query) == {"limit": "5", "offset": "0"}
        with pytest.raises(ValueError, match="unknown query parameters"):
            await t.call("list_training_runs", query={"bogus": 1})
        with pytest.raises(KeyError, match="unknown route"):
            await t.call("no_such_route")


def test_clients_hold_no_literal_api_paths() -> None:
    import pathlib

    root = pathlib.Path(tinker.__file__).parent
    files = [*root.glob("clients/*.py"), *root.glob("actors/*.py"), root / "futures.py"]
    offenders = [str(f) for f in files if "/api/v1" in f.read_text()]
    assert offenders == []


async def test_poll_attributes_to_the_method_and_decodes_by_manifest() -> None:
    async with ScriptedServer() as m:
        t = make(m)
        m.post("/api/v1/retrieve_future", payload={"type": "try_again", "request_id": "r"})
        m.post("/api/v1/retrieve_future", payload={"metrics": {"a:sum": 1.0}})
        res = await poll_future(t, "r", "OptimStep", sdk_method="TrainingClient.optim_step")
        assert isinstance(res, manifest.route("optim_step").result_type)
        assert res.metrics == {"a:sum": 1.0}
        assert [r.headers["x-sdk-method"] for r in m.requests] == ["TrainingClient.optim_step"] * 2
        # only the outermost public method counts
        m.post("/api/v1/retrieve_future", payload={"model_id": "m"})
        with sdk_method_scope("ServiceClient.create_lora_training_client"):
            await poll_future(t, "r", "CreateModel", sdk_method="TrainingClient.x")
        assert m.requests[-1].headers["x-sdk-method"] == "ServiceClient.create_lora_training_client"


async def test_training_polls_carry_their_method(local_server: Any, proxy: Any) -> None:
    async with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        tc = await sc.create_lora_training_client("tinker-actors/byte-1m", rank=2)
        fb = tc.forward_backward(
            [
                types.Datum(
                    model_input=types.ModelInput.from_ints([1, 2]),
                    loss_fn_inputs={
                        "target_tokens": types.TensorData.from_numpy(
                            __import__("numpy").array([2, 3])
                        ),
                        "weights": types.TensorData.from_numpy(
                            __import__("numpy").ones(2, "float32")
                        ),
                    },
                )
            ],
            "cross_entropy",
        )
        await fb
        await tc.optim_step(tinker.AdamParams())
    polls = {(meth, rt) for p, meth, rt in proxy.log if p == "/api/v1/retrieve_future"}
    assert ("ServiceClient.create_lora_training_client", "CreateModel") in polls
    assert ("TrainingClient.forward_backward", "ForwardBackward") in polls
    assert ("TrainingClient.optim_step", "OptimStep") in polls
    info = [meth for p, meth, _ in proxy.log if p == "/api/v1/get_info"]
    assert info == ["ServiceClient.create_lora_training_client"]
    assert all(meth is None for p, meth, _ in proxy.log if p == "/api/v1/session_heartbeat")


async def test_admin_client_calls_billing_and_audit_endpoints() -> None:
    async with ScriptedServer() as m:
        m.post("/api/v1/client/config", payload={})
        m.post("/api/v1/client/dynamic_config", payload={})
        m.get(
            "/api/v1/audit",
            payload={
                "entries": [{"timestamp": "2025-01-15T10:00:00Z", "event": "checkpoint.created"}]
            },
        )
        m.get("/api/v1/billing/usage/events", payload={"data": []})
        m.get(
            "/api/v1/billing/usage/checkpoints/current",
            payload={"data": [{"checkpoint_count": 2, "size_bytes": 10, "size_gigabytes": 1e-8}]},
        )
        m.get("/api/v1/audit", status=404, payload={"detail": "Not Found"})
        admin = await asyncio.to_thread(tinker.AdminClient, base_url=m.base, api_key="tml-admin")
        log = await admin.get_audit_log("checkpoints", dt.date(2025, 1, 15))
        usage = await admin.get_billing_usage(dt.datetime(2025, 1, 1), "2025-02-01T00:00:00")
        storage = admin.get_current_checkpoint_storage_usage("proj-1")
        storage = await storage
        with pytest.raises(errors.NotFoundError):  # what the local server answers
            await admin.get_audit_log()
        reqs = {r.path: r for r in m.requests}
        await APIFuture.from_coro(admin._session.runtime, admin._session.close())
    assert log.entries[0].event == "checkpoint.created"
    assert usage.data == [] and storage.data[0].checkpoint_count == 2
    audit = reqs["/api/v1/audit"]
    assert audit.headers["x-sdk-method"] == "AdminClient.get_audit_log"
    billing = reqs["/api/v1/billing/usage/events"]
    assert dict(billing.query) == {
        "starting_on": "2025-01-01T00:00:00",
        "ending_before": "2025-02-01T00:00:00",
    }
    assert dict(reqs["/api/v1/billing/usage/checkpoints/current"].query) == {"project_id": "proj-1"}
