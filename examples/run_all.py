"""Runs every example and prints a pass/fail table with times (``python -m examples``).

With no TINKER_BASE_URL it starts the embedded local server once, in this process, and points
every example at it (each would otherwise start its own). Examples run one at a time unless
``--jobs N``; ``--only a,b`` picks some; ``--timeout S`` bounds each (default 600 s).
Exit status 1 if any example failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The Tinkex scripts, in the order of Tinkex's run_all.sh, then this project's recipes.
TINKEX = [
    "sampling_basic",
    "training_loop",
    "custom_loss_training",
    "forward_inference",
    "adam_and_chunking_live",
    "structured_regularizers",
    "structured_regularizers_live",
    "recovery_simulated",
    "recovery_live_injected",
    "live_capabilities_and_logprobs",
    "model_info_and_unload",
    "sessions_management",
    "checkpoints_management",
    "weights_inspection",
    "checkpoint_download",
    "async_client_creation",
    "cli_run_text",
    "cli_run_prompt_file",
    "metrics_live",
    "telemetry_live",
    "telemetry_reporter_demo",
    "retry_and_capture",
    "file_upload_multipart",
    "llama3_tokenizer_override_live",
    "queue_reasons_and_sampling_throttling",
    "queue_state_observer_demo",
    "multimodal_resume_and_cleanup",
    "training_persistence_live",
    "checkpoint_multi_delete_live",
    "save_weights_and_sample",
    "kimi_k2_sampling_live",
    "heartbeat_probe",
]
RECIPES = ["rl_grpo_pipelined", "sampling_at_scale", "training_survives_restart"]
ALL = TINKEX + RECIPES


def run_one(name: str, env: dict[str, str], timeout: float) -> tuple[str, int, float, str]:
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = -1, f"timed out after {timeout:.0f}s\n{exc.stdout or ''}"
    return name, rc, time.perf_counter() - started, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated example names")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("-v", "--verbose", action="store_true", help="print each example's output")
    args = parser.parse_args(argv)
    names = ALL if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        parser.error(f"unknown examples: {', '.join(unknown)}")

    env = dict(os.environ)
    if not env.get("TINKER_BASE_URL"):
        sys.path.insert(0, str(HERE))
        import _common

        env["TINKER_BASE_URL"], env["TINKER_API_KEY"] = _common.endpoint()
        print(f"embedded local server: {env['TINKER_BASE_URL']}")

    results = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_one, n, env, args.timeout) for n in names]
        for fut in futures:
            name, rc, secs, out = fut.result()
            results.append((name, rc, secs))
            print(f"==> {'Finished' if rc == 0 else 'Failed  '} {name} ({secs:.1f}s)", flush=True)
            if args.verbose or rc != 0:
                print(out)

    print(f"\n{'example':40s} {'result':6s} {'time':>8s}")
    for name, rc, secs in results:
        print(f"{name:40s} {'pass' if rc == 0 else 'FAIL':6s} {secs:7.1f}s")
    failed = [n for n, rc, _ in results if rc != 0]
    print(f"\n{len(results) - len(failed)}/{len(results)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
