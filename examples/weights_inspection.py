"""Inspect training runs and weights through the RestClient: accessible runs, one run's
details, the user's checkpoints, weights_info of a checkpoint, its archive URL, a sampler's
record, and a check of the LoRA rank against what you expect.

Env: TINKER_RUN_ID, TINKER_CHECKPOINT_PATH, TINKER_SAMPLER_ID, TINKER_EXPECTED_RANK (8).
"""

from __future__ import annotations

import os

import _common as c

import tinker_actors as tinker


def main() -> None:
    expected_rank = c.env_int("TINKER_EXPECTED_RANK", 8)
    with tinker.ServiceClient() as service:
        path = os.environ.get("TINKER_CHECKPOINT_PATH")
        if not path:
            training = service.create_lora_training_client(
                base_model=c.base_model(), rank=expected_rank
            ).result()
            path = training.save_state("inspect-me").result().path
            training.save_weights_and_get_sampling_client().result()  # a sampler to inspect
        rest = tinker.RestClient()

        print("--- Training Runs ---")
        for run in (
            rest.list_training_runs(limit=5, access_scope="accessible").result().training_runs
        ):
            last = run.last_checkpoint.tinker_path if run.last_checkpoint else None
            print(f"{run.training_run_id}")
            print(f"  Base Model: {run.base_model}  Is LoRA: {run.is_lora}  Rank: {run.lora_rank}")
            print(
                f"  Corrupted: {run.corrupted}  Last Checkpoint: {last}  Owner: {run.model_owner}"
            )

        run_id = os.environ.get("TINKER_RUN_ID") or path.split("/")[2]
        run = rest.get_training_run(run_id).result()
        print("--- Training Run Details ---")
        print(f"{run.training_run_id}: base={run.base_model} lora_rank={run.lora_rank}")

        print("--- User Checkpoints ---")
        for ckpt in rest.list_user_checkpoints(limit=5).result().checkpoints:
            print(f"  {ckpt.tinker_path} ({ckpt.checkpoint_type}, {ckpt.size_bytes} B)")

        print("--- Weights Info ---")
        info = rest.get_weights_info_by_tinker_path(path).result()
        print(
            f"{path}: base_model={info.base_model} is_lora={info.is_lora} lora_rank={info.lora_rank}"
        )

        print("--- Archive URL ---")
        url = c.archive_url(tinker, rest, path)
        print(f"url={url}")

        print("--- Sampler ---")
        sampler_id = os.environ.get("TINKER_SAMPLER_ID")
        if not sampler_id:
            samplers = rest.get_session(service.holder.session_id).result().sampler_ids
            sampler_id = samplers[0] if samplers else None
        if sampler_id:
            sampler = rest.get_sampler(sampler_id).result()
            print(
                f"{sampler.sampler_id}: base_model={sampler.base_model} model_path={sampler.model_path}"
            )
        else:
            print("(no sampler in this session)")

        print("--- LoRA rank validation ---")
        verdict = "OK" if info.lora_rank == expected_rank else "MISMATCH"
        print(f"Rank {verdict}: expected {expected_rank}, got {info.lora_rank}")


if __name__ == "__main__":
    main()
