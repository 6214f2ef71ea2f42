"""Runs one of tinker-cookbook 0.6.1's own training loops against a running local server.

    python run_loop.py {tinker|tinker_actors} {sl|rl} BASE_URL WORK_DIR DEADLINE_S

``tinker`` imports the official SDK; ``tinker_actors`` first calls ``tinker_actors.install()``,
so every ``tinker`` import (the cookbook's included) is served by tinker_actors. The API key
comes from ``TINKER_API_KEY``. The cookbook's code runs unedited; only what needs the network is
replaced: the tokenizer is registered from the server's ``tokenizer_id`` (a local directory),
the dataset is a local JSONL file, and the pricing download answers "unavailable". Prints one
JSON line: the file that defines the ``tinker.ServiceClient`` it ran, the modules loaded from
the official package, the rows of ``metrics.jsonl`` and of ``checkpoints.jsonl``.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import inspect
import json
import os
import sys
from pathlib import Path

MODEL = "tinker-actors/byte-1m"
RENDERER = "role_colon"
SL_CONVERSATIONS = 36  # 4 held out for the NLL evaluator, 4 batches of 8
SL_TEST = 4
RL_STEPS = 3


def _select_sdk(sdk: str) -> None:
    os.environ.setdefault("TINKER_TELEMETRY", "0")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    if sdk == "tinker_actors":
        import tinker_actors

        tinker_actors.install()
    elif sdk != "tinker":
        raise SystemExit(f"unknown sdk {sdk!r}")


def _offline_patches(base_url: str) -> None:
    """Replace the cookbook's network needs, nothing else."""
    import tinker
    from tinker_cookbook import tokenizer_utils
    from tinker_cookbook.utils import cost_estimation

    with tinker.ServiceClient(base_url=base_url) as service:
        client = service.create_lora_training_client(base_model=MODEL, rank=1).result()
        tokenizer_id = client.get_info().model_data.tokenizer_id
    if not tokenizer_id or not Path(tokenizer_id).is_dir():
        raise SystemExit(f"server's tokenizer_id is not a local directory: {tokenizer_id!r}")

    @functools.cache
    def load():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tokenizer_id)

    tokenizer_utils.register_tokenizer(MODEL, load)
    cost_estimation.load_model_pricing = lambda **_: None


def _conversations(path: Path) -> None:
    """Small arithmetic chats, the same on every run."""
    with path.open("w") as f:
        for i in range(SL_CONVERSATIONS):
            a, b = i % 7 + 1, i // 7 + 2
            msgs = [
                {"role": "user", "content": f"{a} + {b}?"},
                {"role": "assistant", "content": f"{a + b}"},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")


def run_sl(base_url: str, work: Path) -> None:
    from tinker_cookbook.supervised import train
    from tinker_cookbook.supervised.data import FromConversationFileBuilder
    from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig

    data = work / "conversations.jsonl"
    _conversations(data)
    config = train.Config(
        log_path=str(work / "log"),
        model_name=MODEL,
        recipe_name="tinker_actors_acceptance_sl",
        renderer_name=RENDERER,
        dataset_builder=FromConversationFileBuilder(
            file_path=str(data),
            test_size=SL_TEST,
            common_config=ChatDatasetBuilderCommonConfig(
                model_name_for_tokenizer=MODEL,
                renderer_name=RENDERER,
                max_length=64,
                batch_size=8,
            ),
        ),
        learning_rate=2e-3,
        lora_rank=4,
        base_url=base_url,
        save_every=2,
        eval_every=2,
    )
    asyncio.run(train.main(config))


def run_rl(base_url: str, work: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from envs import LowercaseDatasetBuilder
    from tinker_cookbook.rl import train

    config = train.Config(
        log_path=str(work / "log"),
        model_name=MODEL,
        recipe_name="tinker_actors_acceptance_rl",
        renderer_name=RENDERER,
        dataset_builder=LowercaseDatasetBuilder(model_name=MODEL, renderer_name=RENDERER),
        learning_rate=2e-3,
        lora_rank=4,
        max_tokens=8,
        base_url=base_url,
        save_every=2,
        eval_every=0,
        max_steps=RL_STEPS,
    )
    asyncio.run(train.main(config))


def _official_modules() -> list[str]:
    """Loaded modules whose code comes from the installed official ``tinker`` package."""
    out = []
    for name, module in list(sys.modules.items()):
        parts = Path(getattr(module, "__file__", None) or "").parts
        if "site-packages" in parts[:-1] and parts[parts.index("site-packages") + 1] == "tinker":
            out.append(name)
    return sorted(out)


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    sdk, loop, base_url, work_dir, deadline_s = sys.argv[1:6]
    # A hang shows where every thread waits, then exits.
    faulthandler.dump_traceback_later(float(deadline_s), exit=True)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    _select_sdk(sdk)
    import tinker

    served_by = inspect.getfile(tinker.ServiceClient)
    _offline_patches(base_url)
    {"sl": run_sl, "rl": run_rl}[loop](base_url, work)
    out = {
        "served_by": served_by,
        "official_modules": _official_modules(),
        "metrics": _rows(work / "log" / "metrics.jsonl"),
        "checkpoints": _rows(work / "log" / "checkpoints.jsonl"),
    }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
