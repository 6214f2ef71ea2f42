"""The README's main job (``tinker-actors demo``): its ``run_job`` against the real local server.

A short run (few steps) with each SDK: the loss per token falls, the progress lines and the
checkpoint path are shown, and the greedy samples are well formed. One run with the defaults
(what ``tinker-actors demo`` does) checks that the capitals are really learned.
"""

from __future__ import annotations

import importlib
import io

import pytest

from tinker_actors import demo

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("local_server", [{"engine": "torch"}], indirect=True),
]

STEPS = 12


@pytest.mark.parametrize("sdk_name", ["tinker_actors", "tinker"])
async def test_demo_job_learns(local_server, sdk_name):
    sdk = (
        pytest.importorskip(sdk_name) if sdk_name == "tinker" else importlib.import_module(sdk_name)
    )
    out = io.StringIO()
    result = await demo.run_job(
        sdk,
        steps=STEPS,
        base_url=local_server.base_url,
        api_key=local_server.api_key,
        out=out,
    )
    losses = result["losses"]
    assert len(losses) == STEPS
    assert losses[-1] < losses[0] / 2, losses
    assert min(losses[-3:]) < min(losses[:3]), losses

    text = out.getvalue()
    assert f"step {STEPS:3d}/{STEPS}" in text
    assert result["checkpoint"].endswith("/weights/demo-final")
    assert f"checkpoint: {result['checkpoint']}" in text

    task = demo.load_task()
    assert len(result["samples"]) == len(task)
    assert all("\n" not in s["sampled"] for s in result["samples"])
    assert 0 <= result["correct"] <= len(task)


async def test_demo_defaults_learn_the_capitals(local_server):
    """With its default steps, learning rate and model, the job learns the capitals it shows."""
    import tinker_actors

    result = await demo.run_job(
        tinker_actors,
        base_url=local_server.base_url,
        api_key=local_server.api_key,
        out=io.StringIO(),
    )
    assert len(result["losses"]) == demo.DEFAULT_STEPS
    assert result["losses"][-1] < result["losses"][0] / 100, result["losses"]
    assert result["correct"] >= len(result["samples"]) - 2, result["samples"]
