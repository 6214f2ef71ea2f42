"""Create clients from async code, several at once with asyncio.gather: a sampling client
and a LoRA training client together, then training clients restored from checkpoints
concurrently. (Tinkex's ``*_async`` creators; in 0.38 you ``await`` the plain methods, and the
``_async`` names are deprecated.)

Env: TINKER_BASE_MODEL, TINKER_CHECKPOINT_PATHS (comma-separated tinker:// training
checkpoints to restore concurrently; default: the one this script saves).
"""

from __future__ import annotations

import asyncio
import os

import _common as c

import tinker_actors as tinker


async def main() -> None:
    model = c.base_model()
    service = tinker.ServiceClient()
    try:
        sampler, training = await asyncio.gather(
            service.create_sampling_client(base_model=model),
            service.create_lora_training_client(base_model=model, rank=8),
        )
        print(f"✓ Sampling client created: {sampler.get_base_model()}")
        print(f"✓ Training client created: {training.model_id}")
        saved = await training.save_state("async-demo")
        print(f"✓ Saved state to: {saved.path}")

        paths = [p for p in os.environ.get("TINKER_CHECKPOINT_PATHS", "").split(",") if p]
        paths = paths or [saved.path, saved.path]
        results = await asyncio.gather(
            *(service.create_training_client_from_state(p) for p in paths),
            return_exceptions=True,
        )
        for path, res in zip(paths, results, strict=True):
            if isinstance(res, BaseException):
                print(f"✗ Restore failed for {path}: {res!r}")
            else:
                print(f"✓ Training client restored: {res.model_id} from {path}")
        ok = sum(not isinstance(r, BaseException) for r in results)
        print(f"Success: {ok}/{len(paths)}")
    finally:
        await service.aclose()


if __name__ == "__main__":
    asyncio.run(main())
