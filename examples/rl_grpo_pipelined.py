"""Recipe: reinforcement learning with pipelined sampling and training (GRPO-style).

Toy task: the model is rewarded for the share of lowercase ASCII letters in what it writes
(a random byte model starts near 26/256). Each step samples a group of completions per
prompt, scores them, centres the rewards within each group (the group advantage), and trains
with the ``importance_sampling`` loss on the sampler's own logprobs.

Pipelining: the next step's samples are requested *before* this step's training is awaited,
from the weights one step behind, so sampling and training run at the same time; the
importance-sampling ratio corrects for that lag. The actor runtime keeps every request in
flight at once, in order per client, without threads in user code.

Env: TINKER_BASE_MODEL, TINKER_RL_STEPS (16), TINKER_RL_GROUP (16 samples per prompt),
TINKER_RL_PROMPTS (4), TINKER_RL_TOKENS (12 per sample), TINKER_RL_LR (0.02), TINKER_SEED (0).
Prints one line per step and ``RESULT first=<mean reward of the first quarter>
last=<mean reward of the last quarter>``.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import _common as c

import tinker_actors as tinker

LETTERS = set(range(ord("a"), ord("z") + 1))


def reward(tokens: list[int]) -> float:
    return sum(t in LETTERS for t in tokens) / max(len(tokens), 1)


def datum(prompt: list[int], seq: tinker.SampledSequence, advantage: float) -> tinker.Datum:
    """One trajectory: prompt + completion, scored on the completion tokens only."""
    tokens = prompt + list(seq.tokens)
    n_prompt = len(prompt) - 1  # targets start at the second token
    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": tokens[1:],
            "logprobs": [0.0] * n_prompt + list(seq.logprobs),
            "advantages": [0.0] * n_prompt + [advantage] * len(seq.tokens),
        },
    )


async def main() -> None:
    steps = c.env_int("TINKER_RL_STEPS", 16)
    group = c.env_int("TINKER_RL_GROUP", 16)
    n_prompts = c.env_int("TINKER_RL_PROMPTS", 4)
    seed = c.env_int("TINKER_SEED", 0)
    params = tinker.SamplingParams(max_tokens=c.env_int("TINKER_RL_TOKENS", 12), temperature=1.0)
    adam = tinker.AdamParams(learning_rate=c.env_float("TINKER_RL_LR", 0.02))

    service = tinker.ServiceClient()
    training = await service.create_lora_training_client(
        base_model=c.base_model(), rank=16, seed=seed
    )
    tok = training.get_tokenizer()
    prompts = [
        tok.encode(f"Q{i}: write a word:", add_special_tokens=False) for i in range(n_prompts)
    ]

    def request_batch(sampler: tinker.SamplingClient, step: int) -> list[tinker.APIFuture]:
        return [
            sampler.sample(
                tinker.ModelInput.from_ints(p),
                group,
                tinker.SamplingParams(
                    **{**params.model_dump(), "seed": seed * 100_003 + step * 1009 + i}
                ),
            )
            for i, p in enumerate(prompts)
        ]

    sampler = await training.save_weights_and_get_sampling_client()
    pending = request_batch(sampler, 0)
    history: list[float] = []
    started = time.perf_counter()
    for step in range(steps):
        results = await asyncio.gather(*pending)
        data, rewards = [], []
        for prompt, res in zip(prompts, results, strict=True):
            scores = [reward(list(s.tokens)) for s in res.sequences]
            mean = statistics.fmean(scores)
            rewards += scores
            data += [datum(prompt, s, r - mean) for s, r in zip(res.sequences, scores, strict=True)]
        fwd = training.forward_backward(data, "importance_sampling")
        opt = training.optim_step(adam)
        pending = request_batch(sampler, step + 1)  # pipelined: samples while this step trains
        await fwd
        await opt
        sampler = await training.save_weights_and_get_sampling_client()
        history.append(statistics.fmean(rewards))
        print(
            f"step {step + 1:3d}/{steps}  mean reward {history[-1]:.3f}  ({len(data)} trajectories)",
            flush=True,
        )
    await asyncio.gather(*pending)

    q = max(1, steps // 4)
    first, last = statistics.fmean(history[:q]), statistics.fmean(history[-q:])
    print(
        f"{steps} steps in {time.perf_counter() - started:.1f}s; mean reward {first:.3f} -> {last:.3f}"
    )
    print(f"RESULT first={first:.4f} last={last:.4f}")
    await service.aclose()


if __name__ == "__main__":
    asyncio.run(main())
