"""Checkpoints: registration, ``tinker://`` resolution, REST listings, publish/TTL, copies,
and the HMAC-signed download URLs (external weights, archives) this server serves itself."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

from tinker_actors import types
from tinker_actors.errors import InvalidTinkerPathError
from tinker_actors.server.context import (
    Context,
    check_name,
    check_ttl,
    dir_size,
    dumps,
    implicit_session,
    iso,
    safe,
    string_metadata,
)
from tinker_actors.server.errors import HttpError, bad_request, conflict, not_found
from tinker_actors.server.store import CheckpointRow, ModelRow
from tinker_actors.server.users import caller
from tinker_actors.tinker_path import SEGMENT_TO_TYPE, parse_tinker_path

FILES_PREFIX = "/api/v1/_files/"


def parse_path(path: str) -> types.ParsedCheckpointTinkerPath:
    """The shared parser, its error as a 400."""
    try:
        return parse_tinker_path(path)
    except InvalidTinkerPathError as exc:
        raise bad_request(str(exc)) from exc


class Checkpoints:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self._signing_key = hashlib.sha256(b"tinker-actors-url:" + ctx.secret).digest()
        self._copy_keys: dict[str, dict[str, Any]] = {}

    # registration and lookup --------------------------------------------------------------
    def register(
        self,
        model_id: str,
        segment: str,
        name: str,
        size: int,
        ttl: float | None,
        meta: dict[str, str] | None,
        directory: Path,
    ) -> CheckpointRow:
        now = time.time()
        row = CheckpointRow(
            model_id,
            f"{segment}/{name}",
            SEGMENT_TO_TYPE[segment],
            now,
            size,
            False,
            now + ttl if ttl else None,
            {str(k): str(v) for k, v in meta.items()} if meta else None,
            str(directory),
        )
        self.store.add_checkpoint(row)
        return row

    def _visible(self, row: CheckpointRow | None, public_ok: bool) -> bool:
        """The caller's own checkpoint, or (to read) a published one."""
        if row is None:
            return False
        if public_ok and row.public:
            return True
        return self.ctx.model_owner(row.model_id) == caller()

    def resolve(
        self, path: str, kinds: tuple[str, ...], *, public_ok: bool = False
    ) -> CheckpointRow:
        """The live checkpoint behind a ``tinker://`` path, of one of ``kinds``: the caller's
        own, or with ``public_ok`` (reading it) a published one."""
        parsed = parse_path(path)
        row = self.store.get_checkpoint(parsed.training_run_id, parsed.checkpoint_id)
        expired = row is not None and row.expires_at is not None and row.expires_at <= time.time()
        if row is None or expired or not self._visible(row, public_ok):
            raise not_found(f"checkpoint {path} not found")
        if row.checkpoint_type not in kinds:
            raise bad_request(
                f"checkpoint {path} is a {row.checkpoint_type} checkpoint; this call needs "
                f"{' or '.join(kinds)}"
            )
        return row

    def get(self, run_id: str, checkpoint_id: str, *, public_ok: bool = False) -> CheckpointRow:
        parse_path(f"tinker://{run_id}/{checkpoint_id}")
        row = self.store.get_checkpoint(run_id, checkpoint_id)
        if row is None or not self._visible(row, public_ok):
            raise not_found(f"checkpoint tinker://{run_id}/{checkpoint_id} not found")
        return row

    # REST ---------------------------------------------------------------------------------
    @staticmethod
    def checkpoint_json(row: CheckpointRow) -> dict[str, Any]:
        out: dict[str, Any] = {
            "checkpoint_id": row.checkpoint_id,
            "checkpoint_type": row.checkpoint_type,
            "time": iso(row.created_at),
            "tinker_path": row.tinker_path,
            "size_bytes": row.size_bytes,
            "public": row.public,
            "expires_at": iso(row.expires_at),
        }
        if row.user_metadata is not None:
            out["user_metadata"] = row.user_metadata
        return out

    def training_run_json(self, row: ModelRow) -> dict[str, Any]:
        last = self.store.last_checkpoint(row.model_id, "training")
        last_s = self.store.last_checkpoint(row.model_id, "sampler")
        return {
            "training_run_id": row.model_id,
            "base_model": row.base_model,
            "model_owner": row.owner,
            "is_lora": True,
            "corrupted": row.corrupted,
            "lora_rank": row.lora.get("rank"),
            "last_request_time": iso(row.last_request_time),
            "last_checkpoint": self.checkpoint_json(last) if last else None,
            "last_sampler_checkpoint": self.checkpoint_json(last_s) if last_s else None,
            "user_metadata": string_metadata(row.user_metadata),
        }

    def training_run(self, run_id: str) -> dict[str, Any]:
        return self.training_run_json(self.ctx.model(run_id))

    def list_training_runs(self, limit: int, offset: int) -> dict[str, Any]:
        rows, total = self.store.list_models(limit, offset, caller())
        return {
            "training_runs": [self.training_run_json(r) for r in rows],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    @staticmethod
    def _live(rows: list[CheckpointRow]) -> list[CheckpointRow]:
        now = time.time()
        return [r for r in rows if r.expires_at is None or r.expires_at > now]

    def run_checkpoints(self, run_id: str) -> dict[str, Any]:
        self.ctx.model(run_id)
        rows = self._live(self.store.run_checkpoints(run_id))
        return {"checkpoints": [self.checkpoint_json(r) for r in rows]}

    def user_checkpoints(self, limit: int, offset: int) -> dict[str, Any]:
        rows, total = self.store.user_checkpoints(limit, offset, caller())
        return {
            "checkpoints": [self.checkpoint_json(r) for r in self._live(rows)],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    def delete(self, run_id: str, checkpoint_id: str) -> None:
        row = self.get(run_id, checkpoint_id)
        self.store.delete_checkpoint(run_id, checkpoint_id)
        shutil.rmtree(row.path, ignore_errors=True)

    def sweep_expired(self, now: float) -> None:
        for row in self.store.expired_checkpoints(now):
            shutil.rmtree(row.path, ignore_errors=True)
            self.store.delete_checkpoint(row.model_id, row.checkpoint_id)

    def set_public(self, run_id: str, checkpoint_id: str, public: bool) -> None:
        row = self.get(run_id, checkpoint_id)
        if row.public == public:
            raise conflict(
                f"checkpoint {row.tinker_path} is already {'public' if public else 'private'}"
            )
        self.store.update_checkpoint(run_id, checkpoint_id, public=int(public))

    def set_ttl(self, run_id: str, checkpoint_id: str, req: types.SetCheckpointTtlRequest) -> None:
        row = self.get(run_id, checkpoint_id)
        seconds = check_ttl(req.ttl_seconds)
        expires = time.time() + seconds if seconds is not None else None
        self.store.update_checkpoint(run_id, row.checkpoint_id, expires_at=expires)

    def weights_info(self, req: types.WeightsInfoRequest) -> dict[str, Any]:
        ck = self.resolve(req.tinker_path, ("training", "sampler", "external"), public_ok=True)
        run = self.store.get_model(ck.model_id)
        if run is None:
            raise not_found(f"training run of {req.tinker_path} not found")
        return {
            "base_model": run.base_model,
            "is_lora": True,
            "lora_rank": run.lora.get("rank"),
            "train_unembed": run.lora.get("train_unembed", True),
            "train_mlp": run.lora.get("train_mlp", True),
            "train_attn": run.lora.get("train_attn", True),
            "optimizer_config": run.lora.get("optimizer_config") or {"type": "adamw"},
        }

    def copy_weights(self, req: types.CopyWeightsRequest, idem_key: str | None) -> dict[str, Any]:
        if idem_key and idem_key in self._copy_keys:
            return self._copy_keys[idem_key]
        ck = self.resolve(req.source_path, ("training", "sampler", "external"), public_ok=True)
        source = self.ctx.model(ck.model_id, check=False)
        ttl = check_ttl(req.ttl_seconds)
        user = caller()
        if req.session_id and req.model_seq_id is not None:
            self.ctx.own_session(req.session_id)
            dest_run = f"{req.session_id}:train:{req.model_seq_id}"
            session_id = req.session_id
        elif req.destination_project_id is not None:
            dest_run = "copy-" + uuid.uuid4().hex[:12]
            session_id = source.session_id if source.owner == user else implicit_session(user)
        else:
            raise bad_request(
                "copy_weights needs destination_project_id or session_id+model_seq_id"
            )
        if self.store.get_model(dest_run) is None:
            now = time.time()
            self.store.add_model(
                ModelRow(
                    dest_run,
                    session_id,
                    -1,
                    source.base_model,
                    dict(source.lora),
                    {"copied_from": ck.tinker_path},
                    now,
                    now,
                    "unloaded",
                    0,
                    None,
                    False,
                    owner=user,
                )
            )
        elif self.ctx.model_owner(dest_run) != user:
            raise not_found(f"model {dest_run!r} not found")
        segment, _, name = ck.checkpoint_id.partition("/")
        directory = self.ctx.checkpoint_dir(dest_run, segment, name)
        if directory.exists():
            shutil.rmtree(directory)
        shutil.copytree(ck.path, directory)
        row = self.register(
            dest_run,
            segment,
            name,
            ck.size_bytes or dir_size(directory),
            ttl,
            ck.user_metadata,
            directory,
        )
        out = {"tinker_path": row.tinker_path}
        if idem_key:
            self._copy_keys[idem_key] = out
        return out

    def storage_usage(self) -> dict[str, Any]:
        user = caller()
        count, size = self.store.storage_bytes(user)
        return {
            "effective_rate_usd_per_gigabyte_month": 0.0,
            "data": [
                {
                    "project_id": None,
                    "user_name": user,
                    "checkpoint_count": count,
                    "size_bytes": size,
                    "size_gigabytes": size / 1e9,
                    "estimated_monthly_cost_usd": 0.0,
                }
            ],
        }

    # signed downloads ---------------------------------------------------------------------
    def sign(self, relpath: str, expires: float) -> str:
        payload = base64.urlsafe_b64encode(dumps({"p": relpath, "e": int(expires)})).decode()
        mac = hmac.new(self._signing_key, payload.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{payload}.{mac}"

    def verify(self, token: str) -> Path:
        payload, _, mac = token.rpartition(".")
        good = hmac.new(self._signing_key, payload.encode(), hashlib.sha256).hexdigest()[:32]
        if not payload or not hmac.compare_digest(mac, good):
            raise HttpError(403, "invalid download signature")
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
            relpath, expires = str(claims["p"]), float(claims["e"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HttpError(403, "invalid download token") from exc
        if expires < time.time():
            raise HttpError(403, "this download URL has expired; ask for a new one")
        data_dir = self.ctx.data_dir.resolve()
        path = (data_dir / relpath).resolve()
        if data_dir not in path.parents or not path.is_file():
            raise not_found("file not found")
        return path

    def _url(self, base_url: str, file: Path, expires: float) -> str:
        rel = str(file.relative_to(self.ctx.data_dir))
        return f"{base_url}{FILES_PREFIX}{self.sign(rel, expires)}"

    def external_urls(self, run_id: str, name: str, base_url: str) -> dict[str, Any]:
        row = self.get(run_id, f"external_weights/{check_name(name)}", public_ok=True)
        root = Path(row.path)
        expires = time.time() + self.ctx.config.signed_url_ttl_s
        urls = {
            str(file.relative_to(root)): self._url(base_url, file, expires)
            for file in sorted(p for p in root.rglob("*") if p.is_file())
        }
        return {"urls": urls, "expires": iso(expires)}

    async def archive_url(self, run_id: str, checkpoint_id: str, base_url: str) -> tuple[str, str]:
        row = self.get(run_id, checkpoint_id, public_ok=True)
        src = Path(row.path)
        target = self.ctx.data_dir / "archives" / safe(run_id) / (safe(checkpoint_id) + ".tar.gz")

        def build() -> None:
            if target.exists() and target.stat().st_mtime >= src.stat().st_mtime:
                return
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
            with tarfile.open(tmp, "w:gz") as tar:
                for file in sorted(p for p in src.rglob("*") if p.is_file()):
                    tar.add(file, arcname=str(file.relative_to(src)))
            tmp.rename(target)

        await asyncio.get_running_loop().run_in_executor(None, build)
        expires = time.time() + self.ctx.config.signed_url_ttl_s
        return self._url(base_url, target, expires), iso(expires) or ""
