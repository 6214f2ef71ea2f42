"""Checkpoint download: signed-URL fetches with a progress bar, and safe archive extraction.

* ``external_weights`` paths: every file of the checkpoint by its signed URL (re-signed
  five minutes before the URLs expire).
* ``weights`` (training state) paths, as the official CLI: a temporary training run loads
  the state, exports it as external weights, those are fetched, then the export is deleted.
* ``sampler_weights`` paths (which the official CLI refuses): the checkpoint's archive, safely
  extracted (no absolute paths, no ``..``, no links or devices).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import click

from .core import CliError, parse_path, service_client
from .render import progress

EXPORT_TTL_S = 3600  # lifetime of the temporary export a training checkpoint goes through
_CHUNK = 1 << 16


def fetch_url(url: str, dest: Path, *, label: str, show: bool) -> int:
    """Streams ``url`` to ``dest``; a progress bar on stderr when ``show``. Returns bytes."""
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            if show:
                with progress(label, total, unit="B") as advance:
                    while chunk := resp.read(_CHUNK):
                        f.write(chunk)
                        written += len(chunk)
                        advance(len(chunk))
            else:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    written += len(chunk)
    except urllib.error.URLError as exc:
        raise CliError(
            f"Failed to download: {exc}", "Check the connection to the server and retry."
        ) from exc
    except OSError as exc:
        raise CliError(
            f"Failed to save {dest}: {exc}", f"Check that {dest.parent} is writable."
        ) from exc
    return written


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Extracts a tar (plain or gzip) into ``dest``, refusing any entry that would escape it."""
    try:
        tar = tarfile.open(archive, "r:*")
    except tarfile.TarError as exc:
        raise CliError(f"Not a checkpoint archive: {exc}") from exc
    with tar:
        members = tar.getmembers()
        base = dest.resolve()
        for m in members:
            p = PurePosixPath(m.name)
            if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                raise CliError(
                    f"Unsafe path in checkpoint archive: {m.name}",
                    "The archive may be corrupted or malicious; nothing was extracted.",
                )
            if not (base / m.name).resolve().is_relative_to(base):
                raise CliError(f"Unsafe path in checkpoint archive: {m.name}")
        tar.extractall(dest, members=members, filter="data")
    return [m.name for m in members if m.isfile()]


def _safe_dest(base: Path, name: str) -> Path:
    dest = (base / name).resolve()
    if not dest.is_relative_to(base.resolve()):
        raise CliError(
            f"Unsafe file path in checkpoint: {name}", "The checkpoint may be corrupted."
        )
    return dest


def download_external(
    rest: Any, tinker_path: str, dest: Path, *, show: bool, renew_ttl: int | None = None
) -> int:
    def sign() -> Any:
        resp = rest.get_external_weights_urls(tinker_path).result()
        if renew_ttl is not None:
            rest.set_checkpoint_ttl_from_tinker_path(tinker_path, renew_ttl).result()
        return resp

    signed = sign()
    if not signed.urls:
        raise CliError(f"External weights checkpoint has no files: {tinker_path}")
    targets = {name: _safe_dest(dest, name) for name in signed.urls}
    total = 0
    for name, target in sorted(targets.items()):
        expires = signed.expires
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        if dt.datetime.now(dt.UTC) >= expires - dt.timedelta(minutes=5):
            signed = sign()
        target.parent.mkdir(parents=True, exist_ok=True)
        total += fetch_url(signed.urls[name], target, label=name, show=show)
    return total


def download_archive(rest: Any, tinker_path: str, dest: Path, *, show: bool) -> int:
    """The checkpoint's archive (a signed URL from the archive route), safely extracted."""
    url = rest.get_checkpoint_archive_url_from_tinker_path(tinker_path).result().url
    with tempfile.TemporaryDirectory(prefix="tinker-actors-dl-") as tmp:
        archive = Path(tmp) / "checkpoint.tar"
        fetch_url(url, archive, label=tinker_path.rsplit("/", 1)[-1], show=show)
        safe_extract(archive, dest)
    return sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())


def download_checkpoint(rest: Any, tinker_path: str, dest: Path, *, show: bool) -> int:
    """Fetches the checkpoint's files into ``dest``; returns the bytes on disk."""
    kind = parse_path(tinker_path).checkpoint_type
    if kind == "external":
        return download_external(rest, tinker_path, dest, show=show)
    if kind == "sampler":
        return download_archive(rest, tinker_path, dest, show=show)
    if show:
        click.echo(
            f"Exporting {tinker_path} as external weights (this starts a training session "
            "on the checkpoint's base model)...",
            err=True,
        )
    sc = service_client(user_metadata={"created_by": "tinker-actors checkpoint download"})
    status: Literal["success", "errored"] = "errored"
    try:
        tc = sc.create_training_client_from_state(
            tinker_path, user_metadata={"created_by": "tinker checkpoint download"}
        ).result()
        export = tc.save_weights_external("download", ttl_seconds=EXPORT_TTL_S).result().path
        try:
            total = download_external(rest, export, dest, show=show, renew_ttl=EXPORT_TTL_S)
        finally:
            try:
                rest.delete_checkpoint_from_tinker_path(export).result()
            except Exception as exc:
                click.echo(
                    f"Warning: could not delete the temporary export {export} ({exc}); "
                    f"it expires in {EXPORT_TTL_S} seconds.",
                    err=True,
                )
        status = "success"
        return total
    finally:
        sc.close(status).result()


def prepare_target(tinker_path: str, output: str | None, force: bool) -> Path:
    """``<output or cwd>/<run>_<kind>_<name>``; an existing one is an error unless ``force``."""
    parse_path(tinker_path)
    out = Path(output) if output else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    target = out / tinker_path.removeprefix("tinker://").replace("/", "_")
    if target.exists():
        if not force:
            raise CliError(
                f"Target directory already exists: {target}",
                "Use --force to overwrite or choose a different output directory.",
            )
        shutil.rmtree(target)
    return target
