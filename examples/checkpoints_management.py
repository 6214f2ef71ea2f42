"""Checkpoints through the RestClient: one page of the user's checkpoints, all of them page by
page, and one training run's own listing.

Env: TINKER_RUN_ID (default: the run of the newest checkpoint), TINKER_PAGE_SIZE (20).
"""

from __future__ import annotations

import os

import _common as c

import tinker_actors as tinker


def show(ckpt: tinker.Checkpoint) -> None:
    size = "N/A" if ckpt.size_bytes is None else f"{ckpt.size_bytes} B"
    print(f"  Path: {ckpt.tinker_path}")
    print(f"    Type: {ckpt.checkpoint_type}  Size: {size}  Public: {ckpt.public}")
    print(f"    Created: {ckpt.time.isoformat()}  Expires: {ckpt.expires_at or 'Never'}")


def main() -> None:
    page = c.env_int("TINKER_PAGE_SIZE", 20)
    with tinker.ServiceClient() as service:
        c.ensure_checkpoint(tinker, service, "training")
        rest = tinker.RestClient()

        first = rest.list_user_checkpoints(limit=page).result()
        total = first.cursor.total_count if first.cursor else len(first.checkpoints)
        print(f"Found {len(first.checkpoints)} of {total} checkpoints:")
        for ckpt in first.checkpoints:
            show(ckpt)

        everything, offset = [], 0
        while True:
            batch = rest.list_user_checkpoints(limit=page, offset=offset).result().checkpoints
            everything += batch
            offset += len(batch)
            if len(batch) < page:
                break
        print(f"Paginated: {len(everything)} checkpoints in pages of {page}")

        run_id = os.environ.get("TINKER_RUN_ID") or first.checkpoints[0].tinker_path.split("/")[2]
        per_run = rest.list_checkpoints(run_id).result().checkpoints
        print(f"Checkpoints of run {run_id}: {len(per_run)}")
        for ckpt in per_run:
            show(ckpt)


if __name__ == "__main__":
    main()
