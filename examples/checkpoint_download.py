"""Download a checkpoint's archive through its signed URL, with a progress line, and extract
it (PEFT layout: adapter_config.json, adapter_model.safetensors).

Env: TINKER_CHECKPOINT_PATH (default: the newest sampler checkpoint, or one saved now),
TINKER_OUTPUT_DIR (default: <tmp>/tinker_checkpoints), FORCE=true to replace an existing
download.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import _common as c

import tinker_actors as tinker


def download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=120) as resp, dest.open("wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        done = 0
        while chunk := resp.read(1 << 16):
            out.write(chunk)
            done += len(chunk)
            if total:
                print(f"\rProgress: {100 * done / total:5.1f}% ({done} / {total} B)", end="")
    print("\nDownload complete!")


def main() -> None:
    out_dir = Path(
        c.env_str("TINKER_OUTPUT_DIR", os.path.join(tempfile.gettempdir(), "tinker_checkpoints"))
    )
    force = c.env_flag("FORCE", False)
    with tinker.ServiceClient() as service:
        path = os.environ.get("TINKER_CHECKPOINT_PATH") or c.ensure_checkpoint(tinker, service)
    print(f"Checkpoint: {path}")
    target = out_dir / path.removeprefix("tinker://").replace("/", "_")
    if target.exists():
        if not force:
            c.fail(f"{target} exists (set FORCE=true to replace it)")
        shutil.rmtree(target)

    url = c.archive_url(tinker, tinker.RestClient(), path)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "checkpoint.tar.gz"
        download(url, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")  # refuses absolute paths, '..', devices
    print(f"Extracted to: {target}")
    files = sorted(p for p in target.rglob("*") if p.is_file())
    print(f"Extracted files ({len(files)}):")
    for f in files:
        print(f"  • {f.relative_to(target)} ({f.stat().st_size} B)")


if __name__ == "__main__":
    main()
