"""The local server's service layer: sessions, models, checkpoints and samplers.

Handlers parse the wire and call these methods; this layer owns the store, the futures
registry, the per-model lanes and per-sampler lanes, and the files under the data dir. It
speaks plain Python values (dicts for JSON results, engine dataclasses for tensors), so the
same operations serve the 0.38 protocol and the older JSON routes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import tarfile
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from tinker_actors.server.config import ServerConfig
from tinker_actors.server.engine.base import (
    AdamSpec,
    DatumArrays,
    Engine,
    EngineUserError,
    LoraSpec,
    SampleJob,
)
from tinker_actors.server.errors import HttpError, bad_request, conflict, gone, not_found
from tinker_actors.server.futures import FutureRecord, FutureRegistry, Outcome
from tinker_actors.server.scheduler import ModelLane, SamplerLane
from tinker_actors.server.store import (
    CheckpointRow,
    ModelRow,
    SamplerRow,
    SessionRow,
    Store,
)

log = structlog.get_logger("tinker_actors.server")

SEGMENT_TYPES = {
    "weights": "training",
    "sampler_weights": "sampler",
    "external_weights": "external",
}
TTL_MIN_S = 3600
TTL_MAX_S = 10 * 365 * 24 * 3600
OWNER = "local-user"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_outcome(obj: dict[str, Any]) -> Outcome:
    return Outcome("json", dumps(obj))


def parse_tinker_path(path: str) -> tuple[str, str, str]:
    """``tinker://{run}/{segment}/{name}`` -> (run, segment, name); 400 when malformed."""
    if not isinstance(path, str) or not path.startswith("tinker://"):
        raise bad_request(f"not a tinker path: {path!r} (expected tinker://RUN/SEGMENT/NAME)")
    parts = path[len("tinker://") :].split("/")
    if len(parts) != 3 or not all(parts) or parts[1] not in SEGMENT_TYPES:
        raise bad_request(
            f"malformed tinker path {path!r}: expected tinker://RUN/"
            "{weights|sampler_weights|external_weights}/NAME"
        )
    return parts[0], parts[1], parts[2]


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or "/" in name or "\\" in name:
        raise bad_request(f"invalid checkpoint name {name!r}: 1-200 characters, no '/'")
    if name.startswith(".") or "\x00" in name:
        raise bad_request(f"invalid checkpoint name {name!r}")
    return name


def check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise bad_request("ttl_seconds must be an integer or null")
    if not TTL_MIN_S <= ttl <= TTL_MAX_S:
        raise bad_request(f"ttl_seconds must be between {TTL_MIN_S} and {TTL_MAX_S}, got {ttl}")
    return float(ttl)


def _safe(component: str) -> str:
    return quote(component, safe="")


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass(slots=True)
class _CompletionLog:
    """What /retrieve_futures reports for one (sampler, clone): an append-only cursor log."""

    base: int = 0
    items: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100_000))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def end(self) -> int:
        return self.base + len(self.items)

    def append(self, item: dict[str, Any]) -> None:
        if len(self.items) == self.items.maxlen:
            self.base += 1
        self.items.append(item)
        self.changed.set()
        self.changed = asyncio.Event()

    def since(self, cursor: int) -> list[dict[str, Any]]:
        start = max(cursor - self.base, 0)
        return list(self.items)[start:]


class Service:
    def __init__(self, config: ServerConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.data_dir = Path(config.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir / "server.sqlite3")
        failed, dormant = self.store.recover_after_restart()
        if failed or dormant:
            log.info("recovered", failed_futures=failed, dormant_models=dormant)
        self.registry = FutureRegistry(self.store, config.future_ttl_s)
        self.registry.add_listener(self._on_future_finished)
        self.lanes: dict[str, ModelLane] = {}
        self.sampler_lanes: dict[str, SamplerLane] = {}
        self.sample_pool = ThreadPoolExecutor(
            max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="sample"
        )
        self._completions: dict[tuple[str, int], _CompletionLog] = {}
        self._sample_ids: dict[str, list[str]] = {}
        self._copy_keys: dict[str, dict[str, Any]] = {}
        self._join_counters: dict[str, int] = {}
        self._signing_key = hashlib.sha256(b"tinker-actors-url:" + config.api_key.encode()).digest()
        self.telemetry_events = 0
        self.access_log = False
        self.jwt_key = hashlib.sha256(b"tinker-actors-jwt:" + config.api_key.encode()).digest()
        # /client/config flags; every field has a client-side default
        self.client_config: dict[str, Any] = {
            "pjwt_auth_enabled": False,
            "proto_compress_fwdbwd": config.proto_compress_fwdbwd,
        }
        self._bg: set[asyncio.Task[None]] = set()
        self._releases: weakref.WeakSet[asyncio.Task[None]] = weakref.WeakSet()
        self._sweeper: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(60)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep_failed")

    def sweep(self) -> None:
        now = time.time()
        self.registry.sweep(now)
        for row in self.store.expired_checkpoints(now):
            self._delete_checkpoint_files(row)
            self.store.delete_checkpoint(row.model_id, row.checkpoint_id)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        pending_releases = [t for t in self._releases if not t.done()]
        if pending_releases:  # finished sessions still unloading their models
            await asyncio.wait(pending_releases, timeout=5)
        for lane in list(self.sampler_lanes.values()):
            await lane.close("the local server stopped")
        for model_id, lane in list(self.lanes.items()):
            await self._close_lane(model_id, lane)
        self.lanes.clear()
        self.sampler_lanes.clear()
        for task in list(self._bg):
            task.cancel()
        self.sample_pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    async def _close_lane(self, model_id: str, lane: ModelLane) -> None:
        """At a clean stop, saves each live model so it resumes exactly after a restart."""
        directory = self.data_dir / "live" / _safe(model_id)
        final = None
        if self.config.save_live_state_on_stop and not lane.broken:

            def final() -> int:
                return self._write_atomically(
                    directory, lambda tmp: self.engine.save_state(model_id, tmp), overwrite=True
                )

        try:
            await lane.close("the local server stopped before this request ran", final)
        except Exception as exc:  # reported at next use: the model cannot be revived
            log.warning("live_save_failed", model_id=model_id, error=str(exc))
            return
        if final is not None:
            self.store.update_model(
                model_id, live_state_dir=str(directory), last_seq=lane.next_seq - 1
            )

    # paths -------------------------------------------------------------------------------
    def checkpoint_dir(self, model_id: str, segment: str, name: str) -> Path:
        return self.data_dir / "checkpoints" / _safe(model_id) / segment / _safe(name)

    def sampler_dir(self, sampler_id: str) -> Path:
        return self.data_dir / "samplers" / _safe(sampler_id)

    @staticmethod
    def _write_atomically(directory: Path, write: Callable[[Path], int], *, overwrite: bool) -> int:
        """Writes into a temp dir then renames, so a crash never leaves a half checkpoint."""
        if directory.exists() and not overwrite:
            raise EngineUserError(
                f"checkpoint {directory.name!r} already exists; pass overwrite=True or use "
                "another name"
            )
        tmp = directory.with_name(directory.name + f".tmp-{uuid.uuid4().hex[:8]}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            size = write(tmp)
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return size or _dir_size(directory)

    # sessions ----------------------------------------------------------------------------
    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        session_id = "sess-" + uuid.uuid4().hex[:16]
        tags = body.get("tags") or []
        meta = body.get("user_metadata") or {}
        if not isinstance(tags, list) or not isinstance(meta, dict):
            raise bad_request("tags must be a list and user_metadata an object")
        self.store.add_session(
            SessionRow(
                session_id,
                time.time(),
                [str(t) for t in tags],
                meta,
                body.get("sdk_version"),
                body.get("project_id"),
                body.get("display_name"),
                "active",
                None,
                None,
                None,
            )
        )
        info = None
        if getattr(self.engine, "benchmark", False):
            info = "this local server runs the null BENCHMARK engine: results are not real"
        out: dict[str, Any] = {"session_id": session_id, "type": "create_session"}
        if info:
            out["info_message"] = info
        return out

    def session(self, session_id: str) -> SessionRow:
        row = self.store.get_session(session_id)
        if row is None:
            raise not_found(f"session {session_id!r} not found")
        return row

    def heartbeat(self, session_id: str) -> dict[str, Any]:
        row = self.session(session_id)
        if row.status != "active":
            raise gone(f"session {session_id} is finished")
        self.store.heartbeat(session_id, time.time())
        return {"type": "session_heartbeat"}

    async def finish_session(self, session_id: str, reason: str, detail: str | None) -> None:
        self.session(session_id)
        if not self.store.finish_session(session_id, reason, detail):
            return  # the first reason wins
        # Free the engine memory of the session's models and samplers (records stay) in the
        # background: requests already received still run, and finish answers at once.
        lanes = [(m, self.lanes.pop(m, None)) for m in self.store.session_models(session_id)]
        samplers = [
            (sid, self.sampler_lanes.pop(sid, None))
            for sid in self.store.session_samplers(session_id)
        ]

        async def release() -> None:
            for model_id, lane in lanes:
                if lane is not None:
                    await self._drain_and_unload(model_id, lane)
            for sampler_id, slane in samplers:
                if slane is not None:
                    await slane.close(f"session {session_id} finished")
                    await asyncio.get_running_loop().run_in_executor(
                        self.sample_pool, self.engine.close_sampler, sampler_id
                    )

        self._releases.add(self._spawn(release()))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    async def _drain_and_unload(self, model_id: str, lane: ModelLane) -> None:
        # Requests already received still run; then the model leaves the engine.
        await lane.drained()
        await lane.close(f"model {model_id} was unloaded")
        await asyncio.get_running_loop().run_in_executor(None, self.engine.unload_model, model_id)
        self.store.update_model(model_id, state="unloaded")

    # models ------------------------------------------------------------------------------
    def model(self, model_id: str) -> ModelRow:
        row = self.store.get_model(model_id)
        if row is None:
            raise not_found(f"model {model_id!r} not found")
        return row

    def _new_lane(self, model_id: str, next_seq: int, prelude: Any = None) -> ModelLane:
        def on_ran(seq: int) -> None:
            self.store.update_model(model_id, last_seq=seq, last_request_time=time.time())

        lane = ModelLane(model_id, self.registry, next_seq, on_ran, prelude)
        self.lanes[model_id] = lane
        return lane

    def lane(self, model_id: str) -> ModelLane:
        """The model's lane; a model that was live before a restart is revived lazily."""
        lane = self.lanes.get(model_id)
        if lane is not None:
            return lane
        row = self.model(model_id)
        if row.state == "unloaded":
            raise not_found(f"model {model_id} was unloaded; load a checkpoint to continue")
        if row.state != "dormant":
            raise not_found(f"model {model_id} is not available (state {row.state})")
        if not row.live_state_dir or not Path(row.live_state_dir).exists():
            last = self.store.last_checkpoint(model_id, "training")
            hint = f"; its last saved state is {last.tinker_path}" if last else ""
            raise gone(
                f"model {model_id} lost its live state when the local server stopped "
                f"uncleanly{hint}; create a training client from a checkpoint to continue"
            )
        rec = self.registry.create("LoadWeights", model_id=model_id)
        state_dir = Path(row.live_state_dir)

        def reload() -> Any:
            return self.engine.load_state(
                model_id, state_dir, with_optimizer=True, base_model=row.base_model
            )

        lane = self._new_lane(
            model_id,
            row.last_seq + 1,
            prelude=(rec, reload, lambda _: json_outcome({"model_id": model_id})),
        )
        # The saved state is in use now; a later crash must not revive this stale copy.
        self.store.update_model(model_id, state="live", live_state_dir=None)
        log.info("model_revived", model_id=model_id, next_seq=row.last_seq + 1)
        return lane

    def _lora(self, cfg: Any) -> LoraSpec:
        cfg = cfg or {}
        if not isinstance(cfg, dict):
            raise bad_request("lora_config must be an object")
        rank = cfg.get("rank", 32)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise bad_request(f"lora_config.rank must be a positive integer, got {rank!r}")
        spec = LoraSpec(
            rank=rank,
            seed=cfg.get("seed"),
            train_attn=bool(cfg.get("train_attn", True)),
            train_mlp=bool(cfg.get("train_mlp", True)),
            train_unembed=bool(cfg.get("train_unembed", True)),
        )
        if not (spec.train_attn or spec.train_mlp or spec.train_unembed):
            raise bad_request("lora_config: at least one of train_attn/train_mlp/train_unembed")
        return spec

    @staticmethod
    def _lora_json(spec: LoraSpec, optimizer: Any = None) -> dict[str, Any]:
        return {
            "rank": spec.rank,
            "seed": spec.seed,
            "train_attn": spec.train_attn,
            "train_mlp": spec.train_mlp,
            "train_unembed": spec.train_unembed,
            "optimizer_config": optimizer or {"type": "adamw"},
        }

    def _check_session_active(self, session_id: str) -> None:
        row = self.session(session_id)
        if row.status != "active":
            raise gone(f"session {session_id} is finished")

    def create_model(self, body: dict[str, Any], digest: str) -> dict[str, Any]:
        session_id = _req_str(body, "session_id")
        model_seq_id = _req_int(body, "model_seq_id")
        base_model = _req_str(body, "base_model")
        model_id = f"{session_id}:train:{model_seq_id}"
        lane = self.lanes.get(model_id)
        if lane is not None:
            rid = lane.lookup(0, digest)
            if rid is not None:
                return {"request_id": rid, "model_id": model_id}
        self._check_session_active(session_id)
        if self.store.get_model(model_id) is not None:
            raise conflict(f"model {model_id} already exists (model_seq_id reused)")
        lora = self._lora(body.get("lora_config"))
        optimizer = body.get("optimizer_config") or {"type": "adamw"}
        now = time.time()
        meta = body.get("user_metadata") or {}
        self.store.add_model(
            ModelRow(
                model_id,
                session_id,
                model_seq_id,
                base_model,
                self._lora_json(lora, optimizer),
                meta if isinstance(meta, dict) else {},
                now,
                now,
                "live",
                0,
                None,
                False,
            )
        )
        lane = self._new_lane(model_id, 0)
        rec = self.registry.create(
            "CreateModel", session_id=session_id, model_id=model_id, seq_id=0
        )

        def work() -> Any:
            if optimizer.get("type", "adamw") != "adamw":
                raise EngineUserError(
                    f"optimizer {optimizer.get('type')!r} is not supported by the local server "
                    "(only adamw)"
                )
            return self.engine.create_model(model_id, base_model, lora)

        def finish(_: Any) -> Outcome:
            return json_outcome({"model_id": model_id, "type": "create_model"})

        def fail_cleanup(rec: FutureRecord) -> None:
            if rec.state == "failed":
                self.store.update_model(model_id, state="failed")

        lane.submit(0, digest, rec, work, finish)
        self._watch(rec, fail_cleanup)
        return {"request_id": rec.request_id, "model_id": model_id}

    def _watch(self, rec: FutureRecord, fn: Callable[[FutureRecord], None]) -> None:
        async def waiter() -> None:
            await rec.event.wait()
            fn(rec)

        self._spawn(waiter())

    def get_info(self, model_id: str) -> dict[str, Any]:
        row = self.model(model_id)
        arch = "llama"
        for spec in self._engine_models():
            if spec.model_name == row.base_model:
                arch = spec.arch
        model_data: dict[str, Any] = {"arch": arch, "model_name": row.base_model}
        try:
            model_data["tokenizer_id"] = self.engine.tokenizer_dir(row.base_model)
        except Exception:
            pass
        extra: dict[str, Any] = {}
        if getattr(self.engine, "benchmark", False):  # extra keys are ignored by the SDK
            extra["engine"] = {
                "name": self.engine.name,
                "benchmark": True,
                "note": getattr(self.engine, "note", "benchmark engine"),
            }
        return {
            **extra,
            "model_id": model_id,
            "model_data": model_data,
            "type": "get_info",
            "is_lora": True,
            "lora_rank": row.lora.get("rank"),
            "model_name": row.base_model,
            "optimizer_config": row.lora.get("optimizer_config") or {"type": "adamw"},
        }

    def _engine_models(self) -> list[Any]:
        try:
            return list(self.engine.models())
        except Exception:
            return []

    def _sequenced(
        self,
        model_id: str,
        seq_id: int,
        digest: str,
        request_type: str,
        work: Callable[[], Any],
        finish: Callable[[Any], Outcome],
    ) -> dict[str, Any]:
        """Submits one seq_id of a model: a retry gets the original future back."""
        lane = self.lane(model_id)
        rid = lane.lookup(seq_id, digest)
        if rid is not None:
            return {"request_id": rid, "model_id": model_id}
        rec = self.registry.create(request_type, model_id=model_id, seq_id=seq_id)
        lane.submit(seq_id, digest, rec, work, finish)
        return {"request_id": rec.request_id, "model_id": model_id}

    def forward_backward(
        self,
        model_id: str,
        seq_id: int,
        digest: str,
        data: Callable[[], list[DatumArrays]],
        loss_fn: str,
        loss_fn_config: dict[str, float | str],
        forward_only: bool,
    ) -> dict[str, Any]:
        """``data`` is a thunk so datum conversion errors fail this seq's future in order."""

        def work() -> Any:
            return self.engine.forward_backward(
                model_id, data(), loss_fn, loss_fn_config, forward_only
            )

        def finish(result: Any) -> Outcome:
            if "loss:sum" not in result.metrics:
                result.metrics["loss:sum"] = 0.0
            return Outcome("fwdbwd", result)

        kind = "Forward" if forward_only else "ForwardBackward"
        return self._sequenced(model_id, seq_id, digest, kind, work, finish)

    def optim_step(
        self, model_id: str, seq_id: int, digest: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        def work() -> Any:
            adam = body.get("adam_params")
            if adam is None:
                other = body.get("optimizer_params") or body.get("optim_params")
                if other is not None:
                    kind = other.get("type") if isinstance(other, dict) else other
                    raise EngineUserError(
                        f"optimizer {kind!r} is not supported by the local server (only adamw)"
                    )
                adam = {}
            if not isinstance(adam, dict):
                raise EngineUserError("adam_params must be an object")
            try:
                spec = AdamSpec(**{k: float(v) for k, v in adam.items()})
            except (TypeError, ValueError) as exc:
                raise EngineUserError(f"invalid adam_params: {exc}") from exc
            if spec.learning_rate < 0:
                raise EngineUserError("learning_rate must be >= 0")
            return self.engine.optim_step(model_id, spec)

        def finish(metrics: dict[str, float]) -> Outcome:
            return json_outcome({"metrics": {k: float(v) for k, v in metrics.items()}})

        return self._sequenced(model_id, seq_id, digest, "OptimStep", work, finish)

    def _register_checkpoint(
        self,
        model_id: str,
        segment: str,
        name: str,
        size: int,
        ttl: float | None,
        meta: Any,
        directory: Path,
    ) -> CheckpointRow:
        now = time.time()
        row = CheckpointRow(
            model_id,
            f"{segment}/{name}",
            SEGMENT_TYPES[segment],
            now,
            size,
            False,
            now + ttl if ttl else None,
            {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else None,
            str(directory),
        )
        self.store.add_checkpoint(row)
        return row

    def save_weights(
        self, model_id: str, seq_id: int, digest: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        name = body.get("path") or f"state-{seq_id:06d}"
        check_name(name)
        ttl = check_ttl(body.get("ttl_seconds"))
        overwrite = bool(body.get("overwrite", False))
        directory = self.checkpoint_dir(model_id, "weights", name)

        def work() -> int:
            return self._write_atomically(
                directory, lambda tmp: self.engine.save_state(model_id, tmp), overwrite=overwrite
            )

        def finish(size: int) -> Outcome:
            row = self._register_checkpoint(
                model_id, "weights", name, size, ttl, body.get("user_metadata"), directory
            )
            return json_outcome({"path": row.tinker_path, "type": "save_weights"})

        return self._sequenced(model_id, seq_id, digest, "SaveWeights", work, finish)

    def save_weights_for_sampler(
        self, model_id: str, seq_id: int, digest: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        row = self.model(model_id)
        name = body.get("path")
        if name is not None:
            check_name(name)
        ttl = check_ttl(body.get("ttl_seconds"))
        sss = body.get("sampling_session_seq_id")
        sampler_id = None
        if sss is not None or name is None:
            n = sss if isinstance(sss, int) else f"eph{seq_id}"
            sampler_id = f"{row.session_id}:sample:{n}"
        directory = (
            self.checkpoint_dir(model_id, "sampler_weights", name)
            if name is not None
            else self.sampler_dir(sampler_id or "")
        )

        def work() -> int:
            size = self._write_atomically(
                directory,
                lambda tmp: self.engine.save_sampler_weights(model_id, tmp),
                overwrite=name is None or bool(body.get("overwrite", False)),
            )
            if sampler_id is not None:
                self.engine.create_sampler(sampler_id, row.base_model, directory)
            return size

        def finish(size: int) -> Outcome:
            out: dict[str, Any] = {"type": "save_weights_for_sampler"}
            if name is not None:
                ck = self._register_checkpoint(
                    model_id,
                    "sampler_weights",
                    name,
                    size,
                    ttl,
                    body.get("user_metadata"),
                    directory,
                )
                out["path"] = ck.tinker_path
            if sampler_id is not None:
                self.store.add_sampler(
                    SamplerRow(
                        sampler_id,
                        row.session_id,
                        row.base_model,
                        out.get("path"),
                        str(directory),
                        time.time(),
                    )
                )
                self._new_sampler_lane(sampler_id, loaded=True)
                out["sampling_session_id"] = sampler_id
            return json_outcome(out)

        return self._sequenced(model_id, seq_id, digest, "SaveWeightsForSampler", work, finish)

    def save_weights_external(
        self, model_id: str, seq_id: int, digest: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        name = check_name(_req_str(body, "path"))
        ttl = check_ttl(body.get("ttl_seconds"))
        directory = self.checkpoint_dir(model_id, "external_weights", name)
        recipients = body.get("age_encryption_recipients")

        def work() -> int:
            if recipients:
                raise EngineUserError(
                    "age_encryption_recipients is not supported by the local server"
                )
            return self._write_atomically(
                directory,
                lambda tmp: self.engine.save_sampler_weights(model_id, tmp),
                overwrite=True,
            )

        def finish(size: int) -> Outcome:
            row = self._register_checkpoint(
                model_id, "external_weights", name, size, ttl, None, directory
            )
            return json_outcome(
                {"path": row.tinker_path, "size_bytes": size, "type": "save_weights_external"}
            )

        return self._sequenced(model_id, seq_id, digest, "SaveWeightsExternal", work, finish)

    def resolve_checkpoint(self, path: str, types: tuple[str, ...]) -> CheckpointRow:
        run, segment, name = parse_tinker_path(path)
        row = self.store.get_checkpoint(run, f"{segment}/{name}")
        if row is None or (row.expires_at is not None and row.expires_at <= time.time()):
            raise not_found(f"checkpoint {path} not found")
        if row.checkpoint_type not in types:
            raise bad_request(
                f"checkpoint {path} is a {row.checkpoint_type} checkpoint; this call needs "
                f"{' or '.join(types)}"
            )
        return row

    def load_weights(self, body: dict[str, Any], digest: str) -> dict[str, Any]:
        path = _req_str(body, "path")
        with_optimizer = bool(body.get("optimizer", False))
        if "model_id" in body and body.get("model_id") is not None and "session_id" not in body:
            model_id = _req_str(body, "model_id")
            seq_id = _req_int(body, "seq_id")
            lane = self.lanes.get(model_id)
            if lane is not None and (rid := lane.lookup(seq_id, digest)) is not None:
                return {"request_id": rid, "model_id": model_id}
            ck = self.resolve_checkpoint(path, ("training",))

            def work() -> Any:
                return self.engine.load_state(
                    model_id, Path(ck.path), with_optimizer=with_optimizer, base_model=None
                )

            def finish(_: Any) -> Outcome:
                return json_outcome({"path": path, "model_id": model_id, "type": "load_weights"})

            return self._sequenced(model_id, seq_id, digest, "LoadWeights", work, finish)
        # create-via-load: the load is the new model's implicit seq 0
        session_id = _req_str(body, "session_id")
        model_seq_id = _req_int(body, "model_seq_id")
        model_id = f"{session_id}:train:{model_seq_id}"
        lane = self.lanes.get(model_id)
        if lane is not None and (rid := lane.lookup(0, digest)) is not None:
            return {"request_id": rid, "model_id": model_id}
        self._check_session_active(session_id)
        if self.store.get_model(model_id) is not None:
            raise conflict(f"model {model_id} already exists (model_seq_id reused)")
        ck = self.resolve_checkpoint(path, ("training",))
        source = self.store.get_model(ck.model_id)
        base_model = body.get("base_model") or (source.base_model if source else None)
        if not base_model:
            raise bad_request(f"base model of {path} is unknown; pass base_model")
        lora_json = dict(source.lora) if source else {"rank": 32}
        if body.get("optimizer_config"):
            lora_json["optimizer_config"] = body["optimizer_config"]
        now = time.time()
        meta = body.get("user_metadata") or {}
        self.store.add_model(
            ModelRow(
                model_id,
                session_id,
                model_seq_id,
                base_model,
                lora_json,
                meta if isinstance(meta, dict) else {},
                now,
                now,
                "live",
                0,
                None,
                False,
            )
        )
        lane = self._new_lane(model_id, 0)
        rec = self.registry.create(
            "LoadWeights", session_id=session_id, model_id=model_id, seq_id=0
        )

        def work_create() -> Any:
            return self.engine.load_state(
                model_id, Path(ck.path), with_optimizer=with_optimizer, base_model=base_model
            )

        def finish_create(_: Any) -> Outcome:
            return json_outcome({"path": path, "model_id": model_id, "type": "load_weights"})

        lane.submit(0, digest, rec, work_create, finish_create)
        self._watch(
            rec, lambda r: r.state == "failed" and self.store.update_model(model_id, state="failed")
        )
        return {"request_id": rec.request_id, "model_id": model_id}

    def unload_model(self, model_id: str) -> dict[str, Any]:
        lane = self.lane(model_id)
        rec = self.registry.create("UnloadModel", model_id=model_id)

        def work() -> None:
            self.engine.unload_model(model_id)

        def finish(_: Any) -> Outcome:
            self.store.update_model(model_id, state="unloaded")
            if self.lanes.get(model_id) is lane:
                del self.lanes[model_id]
                asyncio.get_running_loop().create_task(lane.close(f"model {model_id} unloaded"))
            return json_outcome({"model_id": model_id, "type": "unload_model"})

        lane.submit_unsequenced(rec, work, finish)
        return {"request_id": rec.request_id, "model_id": model_id}

    def create_custom_loss(self, body: dict[str, Any]) -> dict[str, Any]:
        session_id = _req_str(body, "session_id")
        self.session(session_id)
        rec = self.registry.create("CreateCustomLoss", session_id=session_id)
        self.registry.fail(
            rec,
            "server-side custom losses are not supported by the local server; use "
            "forward_backward_custom with the client-side default (custom_loss_server_side "
            "is off)",
            "user",
        )
        return {"request_id": rec.request_id}

    # samplers ----------------------------------------------------------------------------
    def _new_sampler_lane(self, sampler_id: str, *, loaded: bool) -> SamplerLane:
        old = self.sampler_lanes.get(sampler_id)
        if old is not None:
            return old
        prepare = None
        if not loaded:
            row = self.store.get_sampler(sampler_id)
            if row is None:
                raise not_found(f"sampler {sampler_id!r} not found")
            weights = Path(row.weights_dir) if row.weights_dir else None

            def prepare() -> None:
                if weights is not None and not weights.exists():
                    raise EngineUserError(
                        f"the weights of sampler {sampler_id} are gone ({weights}); "
                        "create a new sampling client"
                    )
                self.engine.create_sampler(sampler_id, row.base_model, weights)

        lane = SamplerLane(
            sampler_id,
            self.registry,
            self.sample_pool,
            self.engine.sample,
            prepare,
            self.config.sample_queue_depth,
            self.config.sample_batch_size,
        )
        self.sampler_lanes[sampler_id] = lane
        return lane

    async def create_sampling_session(
        self, body: dict[str, Any], sampler_id: str | None = None
    ) -> dict[str, Any]:
        session_id = _req_str(body, "session_id")
        seq = _req_int(body, "sampling_session_seq_id")
        sampler_id = sampler_id or f"{session_id}:sample:{seq}"
        base_model = body.get("base_model")
        model_path = body.get("model_path")
        existing = self.store.get_sampler(sampler_id)
        if existing is not None:
            if existing.model_path == model_path and (
                base_model is None or base_model == existing.base_model
            ):
                return {"type": "create_sampling_session", "sampling_session_id": sampler_id}
            raise conflict(f"sampling_session_seq_id {seq} of session {session_id} was reused")
        self._check_session_active(session_id)
        weights_dir = None
        if model_path is not None:
            ck = self.resolve_checkpoint(model_path, ("sampler", "external"))
            weights_dir = Path(ck.path)
            source = self.store.get_model(ck.model_id)
            base_model = base_model or (source.base_model if source else None)
            if not base_model:
                raise bad_request(f"base model of {model_path} is unknown; pass base_model")
        elif not isinstance(base_model, str) or not base_model:
            raise bad_request("create_sampling_session needs base_model or model_path")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.sample_pool, self.engine.create_sampler, sampler_id, base_model, weights_dir
            )
        except EngineUserError as exc:
            raise bad_request(str(exc)) from exc
        self.store.add_sampler(
            SamplerRow(
                sampler_id,
                session_id,
                base_model,
                model_path,
                str(weights_dir) if weights_dir else None,
                time.time(),
            )
        )
        self._new_sampler_lane(sampler_id, loaded=True)
        return {"type": "create_sampling_session", "sampling_session_id": sampler_id}

    def get_sampler(self, sampler_id: str) -> dict[str, Any]:
        row = self.store.get_sampler(sampler_id)
        if row is None:
            raise not_found(f"sampler {sampler_id!r} not found")
        out = {"sampler_id": sampler_id, "base_model": row.base_model}
        if row.model_path:
            out["model_path"] = row.model_path
        return out

    def join_sampling_session(self, sampler_id: str) -> dict[str, Any]:
        self.get_sampler(sampler_id)
        n = self._join_counters.get(sampler_id, 0) + 1
        self._join_counters[sampler_id] = n
        return {"type": "join_sampling_session", "client_counter": n}

    def asample(
        self,
        sampler_id: str,
        seq_id: int | None,
        digest: str,
        job: SampleJob,
        finish: Callable[[Any], Outcome],
    ) -> dict[str, Any]:
        """Queues one sample; a retry of a seq id already received gets the same future."""
        lane = self.sampler_lanes.get(sampler_id) or self._new_sampler_lane(
            sampler_id, loaded=False
        )
        rid = lane.lookup(seq_id, digest) if seq_id is not None else None
        if rid is None:
            lane.check_capacity()  # 429 before the seq id is recorded
            rec = self.registry.create("Sample", sampler_id=sampler_id, seq_id=seq_id)
            rid = rec.request_id
            self._sample_ids[rid] = [f"{rid}:{i}" for i in range(job.num_samples)]
            lane.submit(seq_id, digest, rec, job, finish)
        ids = self._sample_ids.get(rid) or [f"{rid}:{i}" for i in range(job.num_samples)]
        return {"request_id": rid, "sample_sequence_ids": ids}

    async def implicit_sampler(self, base_model: str | None, model_path: str | None) -> str:
        """Older clients may sample by base_model / model_path without a sampling session."""
        key = hashlib.blake2b(f"{base_model}|{model_path}".encode(), digest_size=8).hexdigest()
        sampler_id = f"implicit:sample:{key}"
        if self.store.get_sampler(sampler_id) is None:
            session_id = "implicit"
            if self.store.get_session(session_id) is None:
                self.store.add_session(
                    SessionRow(
                        session_id,
                        time.time(),
                        [],
                        {},
                        None,
                        None,
                        "implicit samplers",
                        "active",
                        None,
                        None,
                        None,
                    )
                )
            body = {
                "session_id": session_id,
                "sampling_session_seq_id": 0,
                "base_model": base_model,
                "model_path": model_path,
            }
            await self.create_sampling_session(body, sampler_id=sampler_id)
        return sampler_id

    def queue_reason(self, rec: FutureRecord) -> str:
        """A human hint for try_again: what this future waits for."""
        if rec.model_id is not None and (lane := self.lanes.get(rec.model_id)) is not None:
            if lane.running is rec:
                return "running"
            if rec.seq_id is not None and rec.seq_id > lane.next_seq and lane.waiting_for_gap():
                return f"waiting for seq_id {lane.next_seq} of model {rec.model_id}"
            return f"queued behind {lane.depth} request(s) of model {rec.model_id}"
        if rec.sampler_id is not None and (sl := self.sampler_lanes.get(rec.sampler_id)):
            return f"queued with {sl.depth} sample request(s)"
        return "running"

    def cancel_future(self, request_id: str) -> None:
        rec = self.registry.get(request_id)
        if rec is not None and not rec.finished:
            rec.cancelled = True

    def _on_future_finished(self, rec: FutureRecord) -> None:
        self._sample_ids.pop(rec.request_id, None)
        if rec.sampler_id is None or rec.seq_id is None:
            return
        key = (rec.sampler_id, rec.seq_id // 1_000_000_000)
        log_ = self._completions.get(key)
        if log_ is None:
            log_ = self._completions[key] = _CompletionLog()
        item: dict[str, Any] = {
            "state": "finished" if rec.state == "done" else "failed",
            "request_id": rec.request_id,
        }
        log_.append(item)

    async def retrieve_futures(
        self, sampler_id: str, clone: int, cursor: int, *, poll_s: float
    ) -> dict[str, Any]:
        key = (sampler_id, clone)
        log_ = self._completions.get(key)
        if log_ is None:
            log_ = self._completions[key] = _CompletionLog()
        if cursor >= log_.end and poll_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await log_.changed.wait()
        return {"completions": log_.since(cursor), "cursor": log_.end}

    # checkpoints REST --------------------------------------------------------------------
    def checkpoint_json(self, row: CheckpointRow) -> dict[str, Any]:
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
            "model_owner": OWNER,
            "is_lora": True,
            "corrupted": row.corrupted,
            "lora_rank": row.lora.get("rank"),
            "last_request_time": iso(row.last_request_time),
            "last_checkpoint": self.checkpoint_json(last) if last else None,
            "last_sampler_checkpoint": self.checkpoint_json(last_s) if last_s else None,
            "user_metadata": {str(k): str(v) for k, v in row.user_metadata.items()} or None,
        }

    def list_training_runs(self, limit: int, offset: int) -> dict[str, Any]:
        rows, total = self.store.list_models(limit, offset)
        return {
            "training_runs": [self.training_run_json(r) for r in rows],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    def _live_checkpoints(self, rows: list[CheckpointRow]) -> list[CheckpointRow]:
        now = time.time()
        return [r for r in rows if r.expires_at is None or r.expires_at > now]

    def run_checkpoints(self, run_id: str) -> dict[str, Any]:
        self.model(run_id)
        rows = self._live_checkpoints(self.store.run_checkpoints(run_id))
        return {"checkpoints": [self.checkpoint_json(r) for r in rows]}

    def user_checkpoints(self, limit: int, offset: int) -> dict[str, Any]:
        rows, total = self.store.user_checkpoints(limit, offset)
        return {
            "checkpoints": [self.checkpoint_json(r) for r in self._live_checkpoints(rows)],
            "cursor": {"offset": offset, "limit": limit, "total_count": total},
        }

    def _checkpoint(self, run_id: str, checkpoint_id: str) -> CheckpointRow:
        segment, _, name = checkpoint_id.partition("/")
        if segment not in SEGMENT_TYPES or not name or "/" in name:
            raise bad_request(
                f"invalid checkpoint id {checkpoint_id!r}: expected "
                "{weights|sampler_weights|external_weights}/NAME"
            )
        row = self.store.get_checkpoint(run_id, checkpoint_id)
        if row is None:
            raise not_found(f"checkpoint tinker://{run_id}/{checkpoint_id} not found")
        return row

    def _delete_checkpoint_files(self, row: CheckpointRow) -> None:
        shutil.rmtree(row.path, ignore_errors=True)

    def delete_checkpoint(self, run_id: str, checkpoint_id: str) -> None:
        row = self._checkpoint(run_id, checkpoint_id)
        self.store.delete_checkpoint(run_id, checkpoint_id)
        self._delete_checkpoint_files(row)

    def set_public(self, run_id: str, checkpoint_id: str, public: bool) -> None:
        row = self._checkpoint(run_id, checkpoint_id)
        if row.public == public:
            raise conflict(
                f"checkpoint {row.tinker_path} is already {'public' if public else 'private'}"
            )
        self.store.update_checkpoint(run_id, checkpoint_id, public=int(public))

    def set_ttl(self, run_id: str, checkpoint_id: str, ttl: Any) -> None:
        row = self._checkpoint(run_id, checkpoint_id)
        seconds = check_ttl(ttl)
        expires = time.time() + seconds if seconds is not None else None
        self.store.update_checkpoint(run_id, row.checkpoint_id, expires_at=expires)

    def weights_info(self, tinker_path: str) -> dict[str, Any]:
        ck = self.resolve_checkpoint(tinker_path, ("training", "sampler", "external"))
        run = self.store.get_model(ck.model_id)
        if run is None:
            raise not_found(f"training run of {tinker_path} not found")
        return {
            "base_model": run.base_model,
            "is_lora": True,
            "lora_rank": run.lora.get("rank"),
            "train_unembed": run.lora.get("train_unembed", True),
            "train_mlp": run.lora.get("train_mlp", True),
            "train_attn": run.lora.get("train_attn", True),
            "optimizer_config": run.lora.get("optimizer_config") or {"type": "adamw"},
        }

    def copy_weights(self, body: dict[str, Any], idem_key: str | None) -> dict[str, Any]:
        if idem_key and idem_key in self._copy_keys:
            return self._copy_keys[idem_key]
        ck = self.resolve_checkpoint(
            _req_str(body, "source_path"), ("training", "sampler", "external")
        )
        source = self.model(ck.model_id)
        ttl = check_ttl(body.get("ttl_seconds"))
        if body.get("session_id") is not None and body.get("model_seq_id") is not None:
            dest_run = f"{_req_str(body, 'session_id')}:train:{_req_int(body, 'model_seq_id')}"
            session_id = _req_str(body, "session_id")
        elif body.get("destination_project_id") is not None:
            dest_run = "copy-" + uuid.uuid4().hex[:12]
            session_id = source.session_id
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
                )
            )
        segment, _, name = ck.checkpoint_id.partition("/")
        directory = self.checkpoint_dir(dest_run, segment, name)
        if directory.exists():
            shutil.rmtree(directory)
        shutil.copytree(ck.path, directory)
        row = self._register_checkpoint(
            dest_run,
            segment,
            name,
            ck.size_bytes or _dir_size(directory),
            ttl,
            ck.user_metadata,
            directory,
        )
        out = {"tinker_path": row.tinker_path}
        if idem_key:
            self._copy_keys[idem_key] = out
        return out

    # signed downloads --------------------------------------------------------------------
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
        path = (self.data_dir / relpath).resolve()
        if self.data_dir.resolve() not in path.parents or not path.is_file():
            raise not_found("file not found")
        return path

    def external_urls(self, run_id: str, name: str, base_url: str) -> dict[str, Any]:
        row = self._checkpoint(run_id, f"external_weights/{check_name(name)}")
        root = Path(row.path)
        expires = time.time() + self.config.signed_url_ttl_s
        urls = {}
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = str(file.relative_to(self.data_dir))
            urls[str(file.relative_to(root))] = (
                f"{base_url}/api/v1/_files/{self.sign(rel, expires)}"
            )
        return {"urls": urls, "expires": iso(expires)}

    async def archive_url(self, run_id: str, checkpoint_id: str, base_url: str) -> tuple[str, str]:
        row = self._checkpoint(run_id, checkpoint_id)
        src = Path(row.path)
        target = self.data_dir / "archives" / _safe(run_id) / (_safe(checkpoint_id) + ".tar.gz")

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
        expires = time.time() + self.config.signed_url_ttl_s
        rel = str(target.relative_to(self.data_dir))
        return f"{base_url}/api/v1/_files/{self.sign(rel, expires)}", iso(expires) or ""

    # sessions REST -----------------------------------------------------------------------
    def session_json(self, session_id: str) -> dict[str, Any]:
        row = self.session(session_id)
        return {
            "training_run_ids": self.store.session_models(session_id),
            "sampler_ids": self.store.session_samplers(session_id),
            "user_metadata": row.user_metadata or None,
            "display_name": row.display_name,
        }

    def session_summary(self, row: SessionRow) -> dict[str, Any]:
        if row.status == "active":
            status: dict[str, Any] = {"type": "active"}
        else:
            status = {
                "type": "client_finished",
                "reason": {"type": row.finish_reason or "success"},
                "detail": row.finish_detail,
            }
        checkpoints = 0
        size = 0
        for model_id in self.store.session_models(row.session_id):
            for ck in self.store.run_checkpoints(model_id):
                checkpoints += 1
                size += ck.size_bytes or 0
        return {
            "session_id": row.session_id,
            "created_at": iso(row.created_at),
            "owner": OWNER,
            "project_id": row.project_id or "local",
            "status": status,
            "checkpoints_count": checkpoints,
            "display_name": row.display_name,
            "user_metadata": row.user_metadata or None,
            "checkpoint_storage_bytes": size,
        }

    def search_sessions(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = body.get("limit", 50)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 200:
            raise bad_request("limit must be between 1 and 200")
        want_meta = body.get("user_metadata") or {}
        statuses = body.get("statuses")
        cursor = body.get("cursor") or {}
        rows = self.store.all_sessions()
        out = []
        past_cursor = not cursor
        for row in rows:
            if not past_cursor:
                if row.session_id == cursor.get("last_session_id"):
                    past_cursor = True
                continue
            if body.get("session_id") and row.session_id != body["session_id"]:
                continue
            if body.get("display_name") and row.display_name != body["display_name"]:
                continue
            if body.get("project_ids") and (row.project_id or "local") not in body["project_ids"]:
                continue
            if any(row.user_metadata.get(k) != v for k, v in want_meta.items()):
                continue
            if statuses:
                kind = "active" if row.status == "active" else "client_finished"
                if not any(isinstance(s, dict) and s.get("type") == kind for s in statuses):
                    continue
            out.append(self.session_summary(row))
            if len(out) == limit:
                break
        next_cursor = None
        if len(out) == limit:
            last = out[-1]
            next_cursor = {
                "last_created_at": last["created_at"],
                "last_session_id": last["session_id"],
            }
        return {"sessions": out, "next_cursor": next_cursor}

    def storage_usage(self) -> dict[str, Any]:
        count, size = self.store.storage_bytes()
        return {
            "effective_rate_usd_per_gigabyte_month": 0.0,
            "data": [
                {
                    "project_id": None,
                    "user_name": OWNER,
                    "checkpoint_count": count,
                    "size_bytes": size,
                    "size_gigabytes": size / 1e9,
                    "estimated_monthly_cost_usd": 0.0,
                }
            ],
        }


def _req_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise HttpError(422, f"field {key!r} is required and must be a non-empty string")
    return value


def _req_int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(422, f"field {key!r} is required and must be an integer")
    return value
