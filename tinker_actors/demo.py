"""``tinker-actors demo``: the main job — supervised fine-tuning, then sampling, end to end.

It fine-tunes a built-in model with LoRA on a small task shipped with the package (country →
capital), shows the loss per step, samples the answers it learned, and prints the checkpoint
path. With no ``TINKER_BASE_URL`` it runs against the embedded local server. The code uses only
the public, official-SDK-shaped API, so ``--sdk tinker`` runs the same job with the official SDK
(pointed at the embedded server, which this process starts, when no ``TINKER_BASE_URL`` is set).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import time
from importlib import resources
from types import ModuleType
from typing import Any

DEFAULT_MODEL = "tinker-actors/byte-1m"
DEFAULT_STEPS = 60
DEFAULT_LEARNING_RATE = 3e-3


def load_task() -> list[dict[str, str]]:
    text = resources.files("tinker_actors.data").joinpath("capitals.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def build_datum(tinker: ModuleType, tokenizer: Any, prompt: str, completion: str) -> Any:
    """Next-token datum: the model sees prompt+completion and is scored on the completion."""
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    tokens = prompt_ids + completion_ids
    weights = [0.0] * len(prompt_ids) + [1.0] * len(completion_ids)
    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights[1:]},
    )


def _bar(fraction: float, width: int = 24) -> str:
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


async def run_job(
    tinker: ModuleType,
    *,
    base_model: str = DEFAULT_MODEL,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    rank: int = 32,
    base_url: str | None = None,
    api_key: str | None = None,
    out: Any = sys.stdout,
    show: int = 6,
) -> dict[str, Any]:
    """Runs the job and returns what it measured (losses, samples, checkpoint path).

    It uses the 0.38 forms only (plain methods return futures; ``await`` them), so it runs
    unchanged, without deprecation warnings, with ``tinker_actors`` and the official SDK.
    """
    task = load_task()
    kwargs = {k: v for k, v in {"base_url": base_url, "api_key": api_key}.items() if v}
    service = tinker.ServiceClient(**kwargs)
    started = time.perf_counter()
    training = await service.create_lora_training_client(base_model=base_model, rank=rank)
    tokenizer = training.get_tokenizer()
    data = [build_datum(tinker, tokenizer, row["prompt"], row["completion"]) for row in task]
    n_tokens = sum(sum(d.loss_fn_inputs["weights"].tolist()) for d in data)
    print(f"fine-tuning {base_model} (LoRA rank {rank}) on {len(data)} examples", file=out)

    adam = tinker.AdamParams(learning_rate=learning_rate)
    losses: list[float] = []
    for step in range(steps):
        # Pipelined: both requests are queued before either result is awaited.
        fwd = training.forward_backward(data, "cross_entropy")
        opt = training.optim_step(adam)
        result = await fwd
        await opt
        loss = result.metrics["loss:sum"] / n_tokens
        losses.append(loss)
        print(
            f"step {step + 1:3d}/{steps}  loss/token {loss:7.4f}  {_bar((step + 1) / steps)}",
            file=out,
            flush=True,
        )

    saved = await training.save_state("demo-final")
    sampler = await training.save_weights_and_get_sampling_client()
    params = tinker.SamplingParams(max_tokens=16, temperature=0.0, stop=["\n"])
    responses = await asyncio.gather(
        *[
            sampler.sample(
                prompt=tinker.ModelInput.from_ints(
                    tokenizer.encode(row["prompt"], add_special_tokens=False)
                ),
                num_samples=1,
                sampling_params=params,
            )
            for row in task
        ]
    )
    samples = []
    print("\nwhat it learned (greedy samples):", file=out)
    for i, (row, response) in enumerate(zip(task, responses, strict=True)):
        text = tokenizer.decode(response.sequences[0].tokens).rstrip("\n")
        samples.append(
            {
                "prompt": row["prompt"],
                "expected": row["completion"].strip(),
                "sampled": text.strip(),
            }
        )
        if i < show:
            mark = "✓" if text.strip() == row["completion"].strip() else "✗"
            print(f"  {mark} {row['prompt']}{text}", file=out)
    correct = sum(s["sampled"] == s["expected"] for s in samples)
    elapsed = time.perf_counter() - started
    print(f"  ... {correct}/{len(samples)} capitals right", file=out)
    print(
        f"\nloss/token {losses[0]:.3f} → {losses[-1]:.3f} in {steps} steps ({elapsed:.1f} s)",
        file=out,
    )
    print(f"checkpoint: {saved.path}", file=out)
    await service.close("success")
    return {"losses": losses, "samples": samples, "correct": correct, "checkpoint": saved.path}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="base model to fine-tune")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument(
        "--sdk",
        default="tinker_actors",
        help="client package to drive the job with (tinker_actors or tinker)",
    )


def _configure_logging() -> None:
    """The demo is an app, so it decides what is shown: the client's one line saying it
    started the embedded server (and warnings); the server's own log stays quiet."""
    import logging

    if os.environ.get("TINKER_LOG") or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("tinker_actors").addHandler(handler)
    logging.getLogger("tinker_actors.embedded").setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    _configure_logging()
    tinker = importlib.import_module(args.sdk)
    base_url = api_key = None
    if args.sdk != "tinker_actors" and not os.environ.get("TINKER_BASE_URL"):
        # Another SDK has no embedded default: start ours and point that SDK at it.
        from tinker_actors.embedded import embedded_endpoint

        base_url, api_key = embedded_endpoint()
    asyncio.run(
        run_job(
            tinker,
            base_model=args.model,
            steps=args.steps,
            learning_rate=args.learning_rate,
            base_url=base_url,
            api_key=api_key,
        )
    )
    return 0
