"""Every example in ``examples/`` run as a script against one shared local server.

The scripts run as subprocesses (two at a time) with small settings from environment
variables, pointed at a module-scoped ``LocalServer`` (torch engine, ``byte-1m``) through
``TINKER_BASE_URL``/``TINKER_API_KEY``. Each test checks its script's exit status and the
lines it promises: a sample, a loss, a checkpoint path, a metrics snapshot, a parsed value.
``sampling_at_scale`` runs against a second server with a small sampling queue, so its 429
backpressure path really runs; ``training_survives_restart`` runs its own server (it kills it).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_API_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
_spec = importlib.util.spec_from_file_location("examples_run_all", EXAMPLES / "run_all.py")
assert _spec is not None and _spec.loader is not None
run_all = importlib.util.module_from_spec(_spec)  # the list of examples, without sys.path edits
_spec.loader.exec_module(run_all)

RUN_TIMEOUT = 300  # seconds per script
BURST = 100  # sampling_at_scale's requests, against a server whose queue holds 16


@dataclass
class Case:
    env: dict[str, str] = field(default_factory=dict)
    expect: list[str] = field(default_factory=list)  # regexes that must all match the output
    check: Callable[[str], None] | None = None  # further checks on the output
    server: str = "shared"  # or "small_queue"
    serial: bool = False  # run after the parallel batch (it deletes checkpoints)


def floats(pattern: str, out: str) -> list[float]:
    found = re.findall(pattern, out, re.MULTILINE)
    return [float(x) for m in found for x in (m if isinstance(m, tuple) else (m,))]


def _loss_goes_down(out: str) -> None:
    losses = floats(r"forward_backward: \{'loss:sum': ([-\d.e]+)", out)
    assert len(losses) == 2 and losses[1] < losses[0], losses


def _perplexity(out: str) -> None:
    [ppl] = floats(r"custom_perplexity=([\d.]+)", out)
    assert 1.0 < ppl < 10_000


def _logprob_stats(out: str) -> None:
    mean, lo, hi = floats(r"Stats: mean=([-\d.]+) min=([-\d.]+) max=([-\d.]+)", out)
    assert lo <= mean <= hi < 0


def _recovered_to_a_new_run(out: str) -> None:
    old, new = re.search(r"Recovery callback: old=(\S+) new=(\S+) cp=", out).groups()  # type: ignore[union-attr]
    assert old != new


def _metrics(out: str) -> None:
    [total] = floats(r"^  requests_total: (\d+)", out) or [0]
    assert total >= 5  # config, dynamic config, session, sampler, asample, retrieve_future...


def _telemetry_sent(out: str) -> None:
    [n] = floats(r"Flushed telemetry \(drained=True, (\d+) events sent\)", out)
    assert n >= 3  # SESSION_START, example.start, example.complete


def _reporter_counts(out: str) -> None:
    flushed, pushed = floats(r"flushed=(\d+)/(\d+)", out)
    assert flushed == pushed >= 14


def _byte_estimate(out: str) -> None:
    nbytes, ntokens = floats(r"estimated prompt bytes: (\d+) \((\d+) tokens\)", out)
    assert nbytes == 10 * ntokens > 0


def _rl_improves(out: str) -> None:
    first, last = floats(r"RESULT first=([\d.]+) last=([\d.]+)", out)
    assert last > first, (first, last)


def _backpressure(out: str) -> None:
    m = re.search(r"RESULT completed=(\d+) failed=(\d+) tokens=(\d+) 429s=(\d+)", out)
    assert m, out[-2000:]
    completed, failed, tokens, n429 = map(int, m.groups())
    assert (completed, failed, tokens) == (BURST, 0, BURST * 4) and n429 > 0


def _survived(out: str) -> None:
    m = re.search(r"RESULT steps=(\d+) ok=(\d+) failed=(\d+) server_steps=(\d+) models=(\d+)", out)
    assert m, out[-2000:]
    steps, ok, failed, server_steps, models = map(int, m.groups())
    assert (ok, failed, models) == (steps, 0, 2) and server_steps == ok


CASES: dict[str, Case] = {
    "sampling_basic": Case(
        {"TINKER_MAX_TOKENS": "8"},
        [
            r"Sampling 1 sequence\(s\) from tinker-actors/byte-1m",
            r"Received 1 sequence\(s\):",
            r"Sample 1: ['\"]",
        ],
    ),
    "training_loop": Case(
        {"TINKER_STEPS": "2", "TINKER_MAX_TOKENS": "8"},
        [
            r"save_weights: \{'path': 'tinker://\S+/sampler_weights/training-loop'\}",
            r"\[sample\] ",
            r"\[done\] Training loop finished in",
        ],
        _loss_goes_down,
    ),
    "custom_loss_training": Case(
        {},
        [r"optim_step succeeded\.", r"'loss:sum': ", r"Success! Gradients were sent"],
        _perplexity,
    ),
    "forward_inference": Case(
        {},
        [r"Output type: TensorData", r"Logprobs tensor: shape=\(\d+,\) dtype=float32"],
        _logprob_stats,
    ),
    "adam_and_chunking_live": Case(
        {"TINKER_CHUNK_COUNT": "1025", "TINKER_RUN_COUNT": "4"},
        [
            r"chunk preview \(byte-based\): \[1024, 1\]",
            r"forward_backward over 1025 data: loss:sum=\d",
            r"optim_step metrics: \{.*'learning_rate:mean': 0\.0001",
        ],
    ),
    "structured_regularizers": Case(
        {},
        [
            r"Results match: True",
            r"grad norm of sum\(logprobs\) = 3\.1623",
            r"duplicate names: Duplicate regularizer names: \['l1'\]",
            r"Done: every regularizer ran offline\.",
        ],
    ),
    "structured_regularizers_live": Case(
        {},
        [
            r"=== Metrics ===",
            r"(?m)^loss:sum: \d",
            r"(?m)^regularizer/kl_forward/grad_norm: \d",
            r"(?m)^total_grad_norm: \d",
            r"(?m)^custom_perplexity: \d",
        ],
    ),
    "recovery_simulated": Case(
        {},
        [
            r"1\) Seeded checkpoint tinker://\S+/weights/recovery-sim-0001",
            r"3\) Recovery succeeded from tinker://\S+ -> \S+:train:1",
            r"\[event\] recovery\.completed",
            r"Final run status: .*corrupted=False last_checkpoint=tinker://\S+/recovery-sim-0002",
        ],
    ),
    "recovery_live_injected": Case(
        {"TINKER_RECOVERY_TIMEOUT": "120"},
        [
            r"Next loss: nan",
            r"Recovered from tinker://\S+/weights/recovery-live-1",
            r"Loss after recovery: \d",
            r"Second checkpoint saved: tinker://\S+/weights/recovery-live-2",
        ],
        _recovered_to_a_new_run,
    ),
    "live_capabilities_and_logprobs": Case(
        {},
        [
            r"Supported models \(\d+ available\):",
            r"  - tinker-actors/byte-1m",
            r"Health: ok",
            r"Logprobs: \[None, -\d",
        ],
    ),
    "model_info_and_unload": Case(
        {},
        [
            r"created session_id=\S+",
            r"- model_name: tinker-actors/byte-1m",
            r"- is_lora: True",
            r"- lora_rank: 8",
            r"\[tinker\] unloaded: \{'model_id': ",
        ],
    ),
    "sessions_management": Case(
        {}, [r"Found \d+ sessions:", r"  Training Runs: 1", r"  Samplers: 1"]
    ),
    "checkpoints_management": Case(
        {},
        [
            r"Found \d+ of \d+ checkpoints:",
            r"Path: tinker://",
            r"Paginated: \d+ checkpoints in pages of 20",
            r"Checkpoints of run \S+: [1-9]",
        ],
    ),
    "weights_inspection": Case(
        {},
        [
            r"--- Training Runs ---",
            r"Rank OK: expected 8, got 8",
            r"url=http://",
            r"sample:\d+: base_model=tinker-actors/byte-1m",
        ],
    ),
    "checkpoint_download": Case(
        {"FORCE": "true"},
        [
            r"Download complete!",
            r"Extracted files \(\d+\):",
            r"• adapter_config\.json \(\d+ B\)",
            r"• adapter_model\.safetensors \(\d+ B\)",
        ],
    ),
    "async_client_creation": Case(
        {},
        [
            r"✓ Sampling client created",
            r"✓ Saved state to: tinker://\S+/weights/async-demo",
            r"Success: 2/2",
        ],
    ),
    "cli_run_text": Case(
        {"TINKER_MAX_TOKENS": "8"},
        [
            r"\$ tinker-actors sample --base-model tinker-actors/byte-1m",
            r"stop_reason=\w+ \| avg_logprob=-?\d",
            r"Sampling complete \(1 sequences\)",
        ],
    ),
    "cli_run_prompt_file": Case(
        {"TINKER_PROMPT_TOKENS": "[72, 105, 33]", "TINKER_MAX_TOKENS": "8"},
        [r"JSON output written to ", r"Preview: 1 sequence\(s\); first has \d+ tokens"],
    ),
    "metrics_live": Case(
        {"TINKER_MAX_TOKENS": "8"},
        [
            r"=== Metrics Snapshot ===",
            r"count=\d+ mean=[\d.]+ p50=[\d.]+ p95=[\d.]+ p99=[\d.]+",
            r"\{route=asample\}: 1",
        ],
        _metrics,
    ),
    "telemetry_live": Case(
        {"TINKER_TELEMETRY": "1"},
        [r"HTTP POST /api/v1/asample ok in \d+ms retries=0", r"Sampled sequences: \["],
        _telemetry_sent,
    ),
    "telemetry_reporter_demo": Case(
        {},
        [
            r"1\) Reporter for session \S+",
            r"4\) Sampled \d+ tokens; drained=True",
            r"session_ended=True",
        ],
        _reporter_counts,
    ),
    "retry_and_capture": Case(
        {"TINKER_TELEMETRY": "1", "TINKER_RETRY_BASE_DELAY": "0.01"},
        [
            r"Telemetry reporter started",
            r"\[retry start\] attempt=2",
            r"retries=2",
            r"Final result: 'succeeded on attempt 3'",
        ],
    ),
    "file_upload_multipart": Case(
        {},
        [
            r"\[2\] File part: field='file' filename='sample_upload\.bin'",
            r"\('metadata\[source\]', 'tinker_actors'\)",
            r"Content-Type: multipart/form-data; boundary=[0-9a-f]{32}",
            r"\[not available locally\] \[6\] no upload endpoint",
        ],
    ),
    "llama3_tokenizer_override_live": Case(
        {},
        [
            r"Tokenizer ID: thinkingmachineslabinc/meta-llama-3-instruct-tokenizer",
            r"tinker-actors/byte-1m tokenizer: \d+ ids",
            r"Decoded first sequence: ",
        ],
    ),
    "queue_reasons_and_sampling_throttling": Case(
        {"TINKER_BURST": "8"},
        [
            r"Sampling is paused for sampler \S+\. Reason: server says: running short on capacity \(demo\)",
            r"burst of 8: 429s=",
            r"\[ok\] sample returned 2 sequence\(s\)",
        ],
        _byte_estimate,
    ),
    "queue_state_observer_demo": Case(
        {"OBSERVER_MODE": "custom"},
        [
            r"Using a custom observer",
            r"\[success\] Got 2 sample\(s\)",
            r"\[success\] forward_backward loss:sum=\d",
            r"\[done\] mode=custom",
        ],
    ),
    "multimodal_resume_and_cleanup": Case(
        {},
        [
            r"\[not available locally\] no vision-capable model",
            r"Restoring weights \+ optimizer from tinker://",
            r"Resumed training client: \S+",
            r"tinker-actors checkpoint delete tinker://\S+ --yes",
        ],
        serial=True,
    ),
    "training_persistence_live": Case(
        {},
        [
            r"Checkpoint TTL: 86400s",
            r"Saved checkpoint to tinker://\S+/weights/demo-checkpoint-\d+",
            r"Reloaded checkpoint with optimizer state",
            r"Restored client trains: loss:sum=\d",
        ],
    ),
    "checkpoint_multi_delete_live": Case(
        {},
        [
            r"Multi-delete summary: deleted=2 failed=\[\]",
            r"Still listed after delete: none; kept tinker://",
        ],
        serial=True,
    ),
    "save_weights_and_sample": Case(
        {"TINKER_MAX_TOKENS": "8"},
        [
            r"\[tokenizer\] resolved sampler tokenizer",
            r"== SAMPLE ==",
            r"tokens=\d+ stop_reason=\w+",
        ],
    ),
    "kimi_k2_sampling_live": Case(
        {},
        [
            r"Tokenizer: moonshotai/Kimi-K2-Thinking revision=\w+",
            r"\[not available locally\] moonshotai/Kimi-K2-Thinking is not served here",
        ],
    ),
    "heartbeat_probe": Case(
        {},
        [
            r"Created session: \S+",
            r"/api/v1/session_heartbeat => 200 \(ok\)",
            r"/api/v1/heartbeat => 404 \(expected\)",
        ],
    ),
    "rl_grpo_pipelined": Case(
        {
            "TINKER_RL_STEPS": "10",
            "TINKER_RL_GROUP": "8",
            "TINKER_RL_PROMPTS": "2",
            "TINKER_RL_TOKENS": "8",
            "TINKER_SEED": "0",
        },
        [r"step +10/10 +mean reward"],
        _rl_improves,
    ),
    "sampling_at_scale": Case(
        {"TINKER_NUM_REQUESTS": str(BURST), "TINKER_MAX_TOKENS": "4"},
        [rf"\[#{{30}}\] {BURST}/{BURST}"],
        _backpressure,
        server="small_queue",
    ),
    "training_survives_restart": Case(
        {"TINKER_STEPS": "12", "TINKER_SAVE_EVERY": "4", "TINKER_ENGINE": "null"},
        [r"-- server killed \(SIGKILL\) before step 9", r"-- server restarted"],
        _survived,
    ),
}


def test_every_example_has_a_case() -> None:
    assert sorted(CASES) == sorted(run_all.ALL)
    assert len(run_all.TINKEX) == 32
    assert sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")) == sorted(
        [*run_all.ALL, "run_all"]
    )


def _server(tmp: Path, **settings: Any) -> Any:
    from tinker_actors.server import LocalServer

    return LocalServer(
        port=0,
        data_dir=tmp,
        engine=settings.pop("engine", "torch"),
        api_key=TEST_API_KEY,
        long_poll_s=2.0,
        **settings,
    ).start_in_thread()


def _selected(request: pytest.FixtureRequest) -> list[str]:
    """The examples whose tests were selected (so ``-k`` runs only those scripts)."""
    names = []
    for item in request.session.items:
        if item.module is request.module and hasattr(item, "callspec"):
            names.append(item.callspec.params["name"])
    return names


def _run(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@pytest.fixture(scope="module")
def outputs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    names = _selected(request)
    tmp = tmp_path_factory.mktemp("examples")
    shared = _server(tmp / "shared")
    small = (
        _server(tmp / "small", engine="null", sample_queue_depth=16)
        if "sampling_at_scale" in names
        else None
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("TINKER_")}
    base.update(
        TINKER_API_KEY=TEST_API_KEY,
        TINKER_TELEMETRY="0",
        HF_HUB_OFFLINE="1",
        TINKER_OUTPUT_DIR=str(tmp / "downloads"),
        PYTHONUNBUFFERED="1",
    )

    def env_for(name: str) -> dict[str, str]:
        case = CASES[name]
        url = (small if case.server == "small_queue" else shared).base_url
        return {**base, "TINKER_BASE_URL": url, **case.env}

    results: dict[str, Any] = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futs = {n: pool.submit(_run, n, env_for(n), tmp) for n in names if not CASES[n].serial}
            for n, fut in futs.items():
                results[n] = fut.result()
        for n in names:
            if CASES[n].serial:
                results[n] = _run(n, env_for(n), tmp)
        yield results
    finally:
        shared.stop_in_thread()
        if small is not None:
            small.stop_in_thread()


@pytest.mark.parametrize("name", sorted(CASES))
def test_example(name: str, outputs: dict[str, Any]) -> None:
    proc = outputs[name]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{out[-4000:]}"
    assert TEST_API_KEY not in out  # secrets never reach the output
    for pattern in CASES[name].expect:
        assert re.search(pattern, out, re.MULTILINE), (
            f"{name}: no match for {pattern!r} in:\n{out[-4000:]}"
        )
    if CASES[name].check is not None:
        CASES[name].check(out)


def test_an_example_runs_with_no_environment(tmp_path: Path) -> None:
    """No TINKER_BASE_URL, no key: the script starts the embedded local server itself (its data
    directory under a temporary XDG_DATA_HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINKER_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), HF_HUB_OFFLINE="1")
    proc = _run("heartbeat_probe", env, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "started the embedded local Tinker server" in out
    assert re.search(r"/api/v1/session_heartbeat => 200 \(ok\)", out), out[-4000:]
    assert (tmp_path / "data" / "tinker-actors").is_dir()
