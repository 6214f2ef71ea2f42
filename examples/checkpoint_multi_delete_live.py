"""Delete several checkpoints with one CLI call: save three, cache the one that stays in
tmp/checkpoints/default.path (multimodal_resume_and_cleanup resumes from it), then
``tinker-actors -f json checkpoint delete P1 P2 --yes`` (every path is validated before any
is deleted) and read its JSON summary; finally check that both are gone.

Env: TINKER_BASE_MODEL.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _common as c

import tinker_actors as tinker


def main() -> None:
    stamp = int(time.time() * 1000)
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        *paths, keep = [
            training.save_state(f"multi-delete-{stamp}-{s}").result().path
            for s in ("a", "b", "keep")
        ]
        for p in (*paths, keep):
            print(f"Saved checkpoint {p}")
        cache = Path("tmp/checkpoints/default.path")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(keep + "\n")
        print(f"Cached default checkpoint path at {cache}")

        proc = c.run_cli("-f", "json", "checkpoint", "delete", *paths, "--yes")
        summary = json.loads(proc.stdout)
        print(
            f"Multi-delete summary: deleted={summary['deleted_count']} failed={summary['failed']}"
        )

        run_id = paths[0].split("/")[2]
        left = {
            ck.tinker_path
            for ck in tinker.RestClient().list_checkpoints(run_id).result().checkpoints
        }
        print(f"Still listed after delete: {sorted(left & set(paths)) or 'none'}; kept {keep}")


if __name__ == "__main__":
    main()
