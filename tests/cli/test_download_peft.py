"""``checkpoint download`` against the torch engine: the downloaded adapter loads with
``peft`` and holds the trained LoRA tensors; ``sample`` prints decoded text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import MODEL, Seeded, run_official, run_ours, start_server

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """One LoRA run trained for a step (so lora_B is not zero), saved both ways."""
    import tinker_actors as tinker

    server = start_server(tmp_path_factory.mktemp("cli-torch"), engine="torch")
    try:
        sc = tinker.ServiceClient(base_url=server.base_url, api_key=server.api_key)
        try:
            tc = sc.create_lora_training_client(MODEL, rank=4, seed=0).result()
            tokens = list(b"hello tinker")
            datum = tinker.Datum(
                model_input=tinker.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
            )
            tc.forward_backward([datum], "cross_entropy").result()
            tc.optim_step(tinker.AdamParams(learning_rate=1e-2)).result()
            state = tc.save_state("trained").result().path
            sampler = tc.save_weights_for_sampler("trained").result().path
        finally:
            sc.close().result()
        yield Seeded(server, [tc.model_id], [state], [sampler])
    finally:
        server.stop_in_thread()


def _load_with_peft(adapter_dir: Path) -> None:
    from transformers import LlamaForCausalLM

    from tinker_actors.server.engine.model import BUILTIN_MODELS

    base = LlamaForCausalLM(BUILTIN_MODELS[MODEL].to_hf_config()).eval()
    model = peft.PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    assert model.peft_config["default"].r == 4
    saved = safetensors_torch.load_file(str(adapter_dir / "adapter_model.safetensors"))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert saved and len(loaded) == len(saved)
    nonzero_b = 0
    for key, tensor in saved.items():
        match = [v for k, v in loaded.items() if k.replace(".default", "") == key]
        assert len(match) == 1, key
        torch.testing.assert_close(match[0], tensor)
        if "lora_B" in key:
            nonzero_b += int(bool(tensor.abs().sum() > 0))
    assert nonzero_b > 0  # the trained step is in the file


def test_downloaded_adapters_load_with_peft(trained: Seeded, tmp_path: Path) -> None:
    state, sampler = trained.state_paths[0], trained.sampler_paths[0]
    # training state: exported through temporary external weights, as the official CLI does
    ours = run_ours(
        ["-f", "json", "checkpoint", "download", state, "-o", str(tmp_path)], trained.env
    )
    assert ours.code == 0, ours
    data = json.loads(ours.stdout)
    target = Path(data["destination"])
    assert target == tmp_path / state.removeprefix("tinker://").replace("/", "_")
    assert data["file_size_bytes"] == sum(p.stat().st_size for p in target.iterdir())
    _load_with_peft(target)
    off = run_official(
        ["-f", "json", "checkpoint", "download", state, "-o", str(tmp_path / "official")],
        trained.env,
    )
    assert off.code == 0, off
    official = Path(json.loads(off.stdout)["destination"])
    assert sorted(p.name for p in official.iterdir()) == sorted(p.name for p in target.iterdir())
    # sampler weights: the archive, extracted
    ours = run_ours(["checkpoint", "download", sampler, "-o", str(tmp_path)], trained.env)
    assert ours.code == 0, ours
    _load_with_peft(tmp_path / sampler.removeprefix("tinker://").replace("/", "_"))


def test_sample_prints_decoded_text(trained: Seeded) -> None:
    r = run_ours(
        [
            "sample",
            "--model-path",
            trained.sampler_paths[0],
            "--prompt",
            "hello",
            "--max-tokens",
            "5",
        ],
        trained.env,
    )
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "Sample 1:" and lines[-1].startswith("stop_reason=")
    assert "| avg_logprob=-" in lines[-1]
