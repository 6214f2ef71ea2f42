"""Three chores of a vision fine-tune: sample from text plus an image (ImageChunk), resume
training with weights and optimizer state from a checkpoint, and the CLI line that cleans
checkpoints up.

The local server serves no vision model: the image step says so and is skipped; the resume
and cleanup steps run.

Env: TINKER_BASE_MODEL (a vision model; default: the first "-VL" model the server lists),
TINKER_IMAGE_PATH (examples/assets/vision_sample.png), TINKER_IMAGE_EXPECTED_TOKENS,
TINKER_CHECKPOINT_PATH (default: tmp/checkpoints/default.path if cached, else the newest
training checkpoint, else one saved now).
"""

from __future__ import annotations

import os
from pathlib import Path

import _common as c

import tinker_actors as tinker
from tinker_actors import types


def sample_with_image(service: tinker.ServiceClient) -> None:
    served = [
        m.model_name or ""
        for m in tinker.RestClient().get_server_capabilities().result().supported_models
    ]
    model = os.environ.get("TINKER_BASE_MODEL") or next((m for m in served if "-VL" in m), None)
    if model is None:
        c.not_available(
            f"no vision-capable model is served here ({', '.join(served)}): image sampling skipped"
        )
        return
    print(f"Using vision-capable model: {model}")
    image = Path(
        c.env_str(
            "TINKER_IMAGE_PATH", str(Path(__file__).with_name("assets") / "vision_sample.png")
        )
    )
    expected = os.environ.get("TINKER_IMAGE_EXPECTED_TOKENS")
    sampler = service.create_sampling_client(base_model=model).result()
    tokenizer = sampler.get_tokenizer()
    prompt = tinker.ModelInput(
        chunks=[
            types.EncodedTextChunk(
                tokens=tokenizer.encode("Describe this image: ", add_special_tokens=False)
            ),
            types.ImageChunk(
                data=image.read_bytes(),
                format="png",
                expected_tokens=int(expected) if expected else None,
            ),
        ]
    )
    res = sampler.sample(prompt, 1, tinker.SamplingParams(max_tokens=32)).result()
    print(f"Sampled {len(res.sequences)} sequence(s) with image + text.")
    print(repr(tokenizer.decode(res.sequences[0].tokens)))


def resume(service: tinker.ServiceClient) -> str:
    cached = Path("tmp/checkpoints/default.path")
    path = os.environ.get("TINKER_CHECKPOINT_PATH") or (
        cached.read_text().strip()
        if cached.is_file()
        else c.ensure_checkpoint(tinker, service, "training")
    )
    print(f"Restoring weights + optimizer from {path}")
    try:
        training = service.create_training_client_from_state_with_optimizer(path).result()
    except tinker.TinkerError as exc:
        c.fail(f"Resume failed: {exc}")
    print(f"Resumed training client: {training.model_id}")
    return path


def main() -> None:
    with tinker.ServiceClient() as service:
        sample_with_image(service)
        path = resume(service)
    print("Clean up checkpoints with the CLI (validated first, then deleted):")
    print(f"  tinker-actors checkpoint delete {path} --yes")


if __name__ == "__main__":
    main()
