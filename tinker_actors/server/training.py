"""Training: models and their seq_id lanes, forward/backward, optimizer steps, save and load.

Every call that carries a seq id goes through :meth:`Training._sequenced`, so ordering,
retries (the original future back, also after a restart while the result is known) and
conflicts are handled in one place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from tinker_actors import types
from tinker_actors.server import wire
from tinker_actors.server.checkpoints import Checkpoints
from tinker_actors.server.context import (
    Context,
    check_name,
    check_ttl,
    json_outcome,
    required,
    safe,
    session_of,
    write_atomically,
)
from tinker_actors.server.engine.base import (
    AdamSpec,
    EngineUserError,
    LoraSpec,
    RequestRefused,
)
from tinker_actors.server.errors import bad_request, conflict, gone, not_found
from tinker_actors.server.futures import FutureRecord, Outcome
from tinker_actors.server.sampling import Sampling
from tinker_actors.server.scheduler import ModelLane
from tinker_actors.server.sessions import Sessions
from tinker_actors.server.store import ModelRow
from tinker_actors.server.users import caller
from tinker_actors.server.wire import FwdBwd
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server")

Work = Callable[[], Any]
Finish = Callable[[Any], Outcome]
# Most forward_backward results per model kept across a clean stop (those since the last
# optim_step; beyond this many only the newest).
MAX_KEPT_RESULTS = 4096


def lora_spec(cfg: types.LoraConfig | None) -> LoraSpec:
    cfg = cfg or types.LoraConfig(rank=32)
    if cfg.rank < 1:
        raise bad_request(f"lora_config.rank must be a positive integer, got {cfg.rank!r}")
    spec = LoraSpec(
        rank=cfg.rank,
        seed=None if cfg.seed is None else cfg.seed % 2**63,  # any int is a seed
        train_attn=cfg.train_attn,
        train_mlp=cfg.train_mlp,
        train_unembed=cfg.train_unembed,
    )
    if not (spec.train_attn or spec.train_mlp or spec.train_unembed):
        raise bad_request("lora_config: at least one of train_attn/train_mlp/train_unembed")
    return spec


def lora_json(spec: LoraSpec, optimizer: dict[str, Any]) -> dict[str, Any]:
    return {
        "rank": spec.rank,
        "seed": spec.seed,
        "train_attn": spec.train_attn,
        "train_mlp": spec.train_mlp,
        "train_unembed": spec.train_unembed,
        "optimizer_config": optimizer,
    }


def accepted(rec_or_id: FutureRecord | str, model_id: str) -> dict[str, Any]:
    rid = rec_or_id if isinstance(rec_or_id, str) else rec_or_id.request_id
    return {"request_id": rid, "model_id": model_id}


class Training:
    def __init__(
        self, ctx: Context, sessions: Sessions, checkpoints: Checkpoints, sampling: Sampling
    ) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.registry = ctx.registry
        self.sessions = sessions
        self.checkpoints = checkpoints
        self.sampling = sampling
        self.lanes: dict[str, ModelLane] = {}
        # Per live model: the forward_backward futures whose gradients wait for optim_step
        # (their results are kept across a clean stop), and the seq ids of forward_backward
        # calls a server stop failed before they ran (the next optim_step refuses to apply
        # a partial accumulation).
        self.accumulated: dict[str, list[FutureRecord]] = {}
        self.lost: dict[str, set[int]] = {}
        self.registry.rebuilders["ForwardBackward"] = wire.fwdbwd_outcome_from_json

    # lanes --------------------------------------------------------------------------------
    def _new_lane(self, model_id: str, next_seq: int, prelude: Any = None) -> ModelLane:
        def on_ran(seq: int) -> None:
            self.store.update_model(model_id, last_seq=seq, last_request_time=time.time())

        def recall(seq_id: int, digest: str) -> str | None:
            row = self.store.future_for_seq(model_id, seq_id)
            if row is None or row.digest != digest or row.status == "pending":
                return None
            # Failed futures and JSON results are rebuilt from the store; a tensor result
            # from before a restart is gone, so its seq id stays a conflict.
            ok = row.status == "failed" or row.result is not None
            return row.request_id if ok and self.registry.get(row.request_id) else None

        lane = ModelLane(model_id, self.registry, next_seq, on_ran, prelude, recall)
        self.lanes[model_id] = lane
        return lane

    def lane(self, model_id: str) -> ModelLane:
        """The caller's model's lane; a model that was live before a restart is revived
        lazily."""
        self.ctx.own_model(model_id)
        lane = self.lanes.get(model_id)
        if lane is not None:
            return lane
        row = self.ctx.model(model_id)
        if row.state == "expired":
            raise gone(
                f"model {model_id} was released because its session expired (no heartbeat); "
                "create a training client from a checkpoint to continue"
            )
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
            details = self.ctx.engine.load_state(
                model_id, state_dir, with_optimizer=True, base_model=row.base_model
            )
            self.ctx.engine.load_gradients(model_id, state_dir)
            return details

        if row.lost_seqs:
            self.lost[model_id] = set(row.lost_seqs)

        lane = self._new_lane(
            model_id,
            row.last_seq + 1,
            prelude=(rec, reload, lambda _: json_outcome({"model_id": model_id})),
        )
        # The saved state is in use now; a later crash must not revive this stale copy.
        self.store.update_model(model_id, state="live", live_state_dir=None)
        log.info("model_revived", model_id=model_id, next_seq=row.last_seq + 1)
        return lane

    def _sequenced(
        self,
        model_id: str,
        seq_id: int,
        digest: str,
        request_type: str,
        work: Work,
        finish: Finish,
    ) -> dict[str, Any]:
        """Submits one seq_id of a model: a retry gets the original future back."""
        lane = self.lane(model_id)
        self.sessions.touch(session_of(model_id))
        rid = lane.lookup(seq_id, digest)
        if rid is not None:
            return accepted(rid, model_id)
        rec = self.registry.create(request_type, model_id=model_id, seq_id=seq_id, digest=digest)
        lane.submit(seq_id, digest, rec, work, finish)
        return accepted(rec, model_id)

    def _create(
        self,
        session_id: str,
        model_seq_id: int,
        digest: str,
        base_model: str,
        lora: dict[str, Any],
        meta: dict[str, Any] | None,
        request_type: str,
        work: Callable[[str], Any],
        finish: Callable[[str], dict[str, Any]],
    ) -> dict[str, Any]:
        """A new model whose first request (create, or create-via-load) is its seq 0."""
        model_id = f"{session_id}:train:{model_seq_id}"
        self.ctx.own_session(session_id)
        lane = self.lanes.get(model_id)
        if lane is not None and (rid := lane.lookup(0, digest)) is not None:
            return accepted(rid, model_id)
        self.sessions.check_active(session_id)
        self.sessions.touch(session_id)
        if self.store.get_model(model_id) is not None:
            raise conflict(f"model {model_id} already exists (model_seq_id reused)")
        now = time.time()
        self.store.add_model(
            ModelRow(
                model_id,
                session_id,
                model_seq_id,
                base_model,
                lora,
                dict(meta or {}),
                now,
                now,
                "live",
                0,
                None,
                False,
                owner=caller(),
            )
        )
        lane = self._new_lane(model_id, 0)
        rec = self.registry.create(
            request_type, session_id=session_id, model_id=model_id, seq_id=0, digest=digest
        )
        lane.submit(
            0, digest, rec, lambda: work(model_id), lambda _: json_outcome(finish(model_id))
        )

        async def mark_failed() -> None:
            await rec.event.wait()
            if rec.state == "failed":
                self.store.update_model(model_id, state="failed")

        self.ctx.spawn(mark_failed())
        return accepted(rec, model_id)

    async def release(self, model_ids: list[str], reason: str, state: str) -> None:
        """Runs what was received, then frees the engine's copy; the records stay."""
        loop = asyncio.get_running_loop()
        for model_id in model_ids:
            self.accumulated.pop(model_id, None)
            self.lost.pop(model_id, None)
            lane = self.lanes.pop(model_id, None)
            if lane is None:
                if state == "expired":  # dormant since a restart: nothing in memory
                    self.store.update_model(model_id, state=state, live_state_dir=None)
                continue
            self.store.update_model(model_id, state=state)  # new requests get a clear answer
            await lane.drained()
            await lane.close(reason)
            await loop.run_in_executor(None, self.ctx.engine.unload_model, model_id)
            self.store.update_model(model_id, state=state)

    async def close(self) -> None:
        for model_id, lane in list(self.lanes.items()):
            await self._close_lane(model_id, lane)
        self.lanes.clear()

    async def _close_lane(self, model_id: str, lane: ModelLane) -> None:
        """At a clean stop, saves each live model so it resumes exactly after a restart."""
        directory = self.ctx.data_dir / "live" / safe(model_id)
        final = None
        engine = self.ctx.engine
        lost = self.lost.pop(model_id, set())
        lost.update(
            rec.seq_id
            for rec in lane.queued()
            if rec.request_type == "ForwardBackward" and rec.seq_id is not None
        )
        if self.ctx.config.save_live_state_on_stop and not lane.broken:

            def final() -> int:
                def write(tmp: Path) -> int:
                    return engine.save_state(model_id, tmp) + engine.save_gradients(model_id, tmp)

                return write_atomically(directory, write, overwrite=True)

        try:
            await lane.close("the local server stopped before this request ran", final)
        except Exception as exc:  # reported at next use: the model cannot be revived
            log.warning("live_save_failed", model_id=model_id, error=str(exc))
            return
        if final is not None:
            # The results of the accumulated forward_backward calls stay retrievable: their
            # gradients are in the saved state, so the client must not see them as lost.
            for rec in self.accumulated.pop(model_id, []):
                if rec.state == "done" and rec.outcome is not None:
                    self.store.finish_future(
                        rec.request_id, result_json=wire.fwdbwd_outcome_json(rec.outcome)
                    )
            self.store.update_model(
                model_id,
                live_state_dir=str(directory),
                last_seq=lane.next_seq - 1,
                lost_seqs=sorted(lost),
            )

    # models -------------------------------------------------------------------------------
    def create_model(self, req: types.CreateModelRequest, digest: str) -> dict[str, Any]:
        spec = lora_spec(req.lora_config)
        optimizer = msgspec.to_builtins(req.optimizer_config)

        def work(model_id: str) -> Any:
            if req.optimizer_config.type != "adamw":
                raise EngineUserError(
                    f"optimizer {req.optimizer_config.type!r} is not supported by the local "
                    "server (only adamw)"
                )
            return self.ctx.engine.create_model(model_id, req.base_model, spec)

        return self._create(
            req.session_id,
            req.model_seq_id,
            digest,
            req.base_model,
            lora_json(spec, optimizer),
            req.user_metadata,
            "CreateModel",
            work,
            lambda model_id: {"model_id": model_id, "type": "create_model"},
        )

    def engine_models(self) -> list[Any]:
        try:
            return list(self.ctx.engine.models())
        except Exception:
            return []

    def get_info(self, req: types.GetInfoRequest) -> dict[str, Any]:
        row = self.ctx.model(req.model_id)
        arch = "llama"
        for spec in self.engine_models():
            if spec.model_name == row.base_model:
                arch = spec.arch
        model_data: dict[str, Any] = {"arch": arch, "model_name": row.base_model}
        try:
            model_data["tokenizer_id"] = self.ctx.engine.tokenizer_dir(row.base_model)
        except Exception:
            pass
        extra: dict[str, Any] = {}
        if self.ctx.benchmark:  # extra keys are ignored by the SDK
            extra["engine"] = {
                "name": self.ctx.engine.name,
                "benchmark": True,
                "note": getattr(self.ctx.engine, "note", "benchmark engine"),
            }
        return {
            **extra,
            "model_id": req.model_id,
            "model_data": model_data,
            "type": "get_info",
            "is_lora": True,
            "lora_rank": row.lora.get("rank"),
            "model_name": row.base_model,
            "optimizer_config": row.lora.get("optimizer_config") or {"type": "adamw"},
        }

    def unload_model(self, req: types.UnloadModelRequest) -> dict[str, Any]:
        model_id = req.model_id
        lane = self.lane(model_id)
        rec = self.registry.create("UnloadModel", model_id=model_id)

        def work() -> None:
            self.ctx.engine.unload_model(model_id)

        def finish(_: Any) -> Outcome:
            self.accumulated.pop(model_id, None)
            self.lost.pop(model_id, None)
            self.store.update_model(model_id, state="unloaded")
            if self.lanes.get(model_id) is lane:
                del self.lanes[model_id]
                self.ctx.spawn(lane.close(f"model {model_id} unloaded"))
            return json_outcome({"model_id": model_id, "type": "unload_model"})

        lane.submit_unsequenced(rec, work, finish)
        return accepted(rec, model_id)

    def create_custom_loss(self, req: types.CreateCustomLossRequest) -> dict[str, Any]:
        self.sessions.get(req.session_id)
        rec = self.registry.create("CreateCustomLoss", session_id=req.session_id)
        self.registry.fail(
            rec,
            "server-side custom losses are not supported by the local server; use "
            "forward_backward_custom with the client-side default (custom_loss_server_side "
            "is off)",
            "user",
        )
        return {"request_id": rec.request_id}

    # steps --------------------------------------------------------------------------------
    def forward_backward(self, req: FwdBwd, digest: str) -> dict[str, Any]:
        """``req.data`` is a thunk so datum conversion errors fail this seq's future in order."""

        model_id = req.model_id

        def work() -> Any:
            result = self.ctx.engine.forward_backward(
                model_id, req.data(), req.loss_fn, req.loss_fn_config, req.forward_only
            )
            if not req.forward_only and (lost := self.lost.get(model_id)):
                lost.discard(req.seq_id)  # the resubmitted seq id fills the hole
            return result

        mine: list[FutureRecord] = []  # this request's record, known once submitted

        def finish(result: Any) -> Outcome:
            if "loss:sum" not in result.metrics:
                result.metrics["loss:sum"] = 0.0
            if not req.forward_only:
                acc = self.accumulated.setdefault(model_id, [])
                acc.extend(mine)
                if len(acc) > MAX_KEPT_RESULTS:  # memory bound for endless accumulation
                    del acc[:-MAX_KEPT_RESULTS]
            return Outcome("fwdbwd", result)

        kind = "Forward" if req.forward_only else "ForwardBackward"
        out = self._sequenced(model_id, req.seq_id, digest, kind, work, finish)
        rec = self.registry.get(out["request_id"])
        if rec is not None:
            mine.append(rec)
        return out

    def optim_step(self, req: types.OptimStepRequest, digest: str) -> dict[str, Any]:
        seq_id = required(req.seq_id, "seq_id")

        def work() -> Any:
            if req.adam_params is None and req.optimizer_params is not None:
                raise EngineUserError(
                    f"optimizer {req.optimizer_params.__struct_config__.tag!r} is not "
                    "supported by the local server (only adamw)"
                )
            adam = req.adam_params or types.AdamParams()
            spec = AdamSpec(**msgspec.structs.asdict(adam))
            if spec.learning_rate < 0:
                raise EngineUserError("learning_rate must be >= 0")
            lost = self.lost.pop(req.model_id, None)
            if lost:
                self.ctx.engine.discard_gradients(req.model_id)
                self.accumulated.pop(req.model_id, None)
                raise RequestRefused(
                    f"optim_step not applied: forward_backward seq_id(s) {sorted(lost)} of "
                    f"model {req.model_id} were lost when the local server stopped before "
                    "they ran, so this step's gradients are incomplete; the partial "
                    "gradients were discarded: redo the step's forward_backward calls, "
                    "then optim_step"
                )
            metrics = self.ctx.engine.optim_step(req.model_id, spec)
            # engines that can tell (torch) report non-finite weights: the run is corrupted
            finite = getattr(self.ctx.engine, "weights_finite", None)
            return metrics, finite is None or finite(req.model_id)

        def finish(result: tuple[dict[str, float], bool]) -> Outcome:
            metrics, finite = result
            self.accumulated.pop(req.model_id, None)
            if not finite:
                self.store.update_model(req.model_id, corrupted=1)
            return json_outcome({"metrics": {k: float(v) for k, v in metrics.items()}})

        return self._sequenced(req.model_id, seq_id, digest, "OptimStep", work, finish)

    # weights ------------------------------------------------------------------------------
    def _save(self, model_id: str, directory: Path, *, sampler: bool, overwrite: bool) -> int:
        engine = self.ctx.engine
        save = engine.save_sampler_weights if sampler else engine.save_state
        return write_atomically(directory, lambda tmp: save(model_id, tmp), overwrite=overwrite)

    def save_weights(self, req: types.SaveWeightsRequest, digest: str) -> dict[str, Any]:
        seq_id = required(req.seq_id, "seq_id")
        name = check_name(req.path or f"state-{seq_id:06d}")
        ttl = check_ttl(req.ttl_seconds)
        directory = self.ctx.checkpoint_dir(req.model_id, "weights", name)

        def work() -> int:
            return self._save(req.model_id, directory, sampler=False, overwrite=req.overwrite)

        def finish(size: int) -> Outcome:
            row = self.checkpoints.register(
                req.model_id, "weights", name, size, ttl, req.user_metadata, directory
            )
            return json_outcome({"path": row.tinker_path, "type": "save_weights"})

        return self._sequenced(req.model_id, seq_id, digest, "SaveWeights", work, finish)

    def save_weights_for_sampler(
        self, req: types.SaveWeightsForSamplerRequest, digest: str
    ) -> dict[str, Any]:
        seq_id = required(req.seq_id, "seq_id")
        model_id = req.model_id
        row = self.ctx.model(model_id)
        name = req.path
        if name is not None:
            check_name(name)
        ttl = check_ttl(req.ttl_seconds)
        sss = req.sampling_session_seq_id
        sampler_id = None
        if sss is not None or name is None:
            sampler_id = f"{row.session_id}:sample:{sss if sss is not None else f'eph{seq_id}'}"
        directory = (
            self.ctx.checkpoint_dir(model_id, "sampler_weights", name)
            if name is not None
            else self.ctx.sampler_dir(sampler_id or "")
        )

        def work() -> int:
            # An ephemeral snapshot may be rewritten; a named one never (the request type
            # has no overwrite flag).
            size = self._save(model_id, directory, sampler=True, overwrite=name is None)
            if sampler_id is not None:
                self.ctx.engine.create_sampler(sampler_id, row.base_model, directory)
            return size

        def finish(size: int) -> Outcome:
            out: dict[str, Any] = {"type": "save_weights_for_sampler"}
            if name is not None:
                ck = self.checkpoints.register(
                    model_id, "sampler_weights", name, size, ttl, req.user_metadata, directory
                )
                out["path"] = ck.tinker_path
            if sampler_id is not None:
                self.sampling.add_snapshot(
                    sampler_id, row.session_id, row.base_model, out.get("path"), directory
                )
                out["sampling_session_id"] = sampler_id
            return json_outcome(out)

        return self._sequenced(model_id, seq_id, digest, "SaveWeightsForSampler", work, finish)

    def save_weights_external(
        self, req: types.SaveWeightsExternalRequest, digest: str
    ) -> dict[str, Any]:
        seq_id = required(req.seq_id, "seq_id")
        name = check_name(req.path)
        ttl = check_ttl(req.ttl_seconds)
        directory = self.ctx.checkpoint_dir(req.model_id, "external_weights", name)

        def work() -> int:
            if req.age_encryption_recipients:
                raise EngineUserError(
                    "age_encryption_recipients is not supported by the local server"
                )
            return self._save(req.model_id, directory, sampler=True, overwrite=True)

        def finish(size: int) -> Outcome:
            row = self.checkpoints.register(
                req.model_id, "external_weights", name, size, ttl, None, directory
            )
            return json_outcome(
                {"path": row.tinker_path, "size_bytes": size, "type": "save_weights_external"}
            )

        return self._sequenced(req.model_id, seq_id, digest, "SaveWeightsExternal", work, finish)

    def load_weights(self, req: types.LoadWeightsRequest, digest: str) -> dict[str, Any]:
        path = req.path
        engine = self.ctx.engine
        if req.model_id is not None and req.session_id is None:  # the older in-place load
            model_id = req.model_id
            seq_id = required(req.seq_id, "seq_id")
            self.ctx.own_model(model_id)
            lane = self.lanes.get(model_id)
            if lane is not None and (rid := lane.lookup(seq_id, digest)) is not None:
                return accepted(rid, model_id)
            ck = self.checkpoints.resolve(path, ("training",), public_ok=True)

            def work() -> Any:
                return engine.load_state(
                    model_id, Path(ck.path), with_optimizer=req.optimizer, base_model=None
                )

            def finish(_: Any) -> Outcome:
                return json_outcome({"path": path, "model_id": model_id, "type": "load_weights"})

            return self._sequenced(model_id, seq_id, digest, "LoadWeights", work, finish)
        # create-via-load: the load is the new model's implicit seq 0
        session_id = required(req.session_id, "session_id")
        model_seq_id = required(req.model_seq_id, "model_seq_id")
        model_id = f"{session_id}:train:{model_seq_id}"
        self.ctx.own_session(session_id)
        lane = self.lanes.get(model_id)
        if lane is not None and (rid := lane.lookup(0, digest)) is not None:
            return accepted(rid, model_id)
        ck = self.checkpoints.resolve(path, ("training",), public_ok=True)
        source = self.store.get_model(ck.model_id)
        base_model = req.base_model or (source.base_model if source else None)
        if not base_model:
            raise bad_request(f"base model of {path} is unknown; pass base_model")
        lora = dict(source.lora) if source else {"rank": 32}
        if req.optimizer_config is not None:
            lora["optimizer_config"] = msgspec.to_builtins(req.optimizer_config)
        return self._create(
            session_id,
            model_seq_id,
            digest,
            base_model,
            lora,
            req.user_metadata,
            "LoadWeights",
            lambda mid: engine.load_state(
                mid, Path(ck.path), with_optimizer=req.optimizer, base_model=base_model
            ),
            lambda mid: {"path": path, "model_id": mid, "type": "load_weights"},
        )

    def counters(self) -> dict[str, dict[str, int]]:
        """Each loaded model's engine counters (optimizer steps applied, pending gradients):
        the server's own ground truth for tests and benchmarks."""
        out = {}
        for model_id in list(self.lanes):
            try:
                out[model_id] = dict(self.ctx.engine.counters(model_id))
            except Exception:  # not created yet, or unloaded meanwhile
                continue
        return out

    def queue_reason(self, rec: FutureRecord) -> str | None:
        if rec.model_id is None or (lane := self.lanes.get(rec.model_id)) is None:
            return None
        if lane.running is rec:
            return "running"
        if rec.seq_id is not None and rec.seq_id > lane.next_seq and lane.waiting_for_gap():
            return f"waiting for seq_id {lane.next_seq} of model {rec.model_id}"
        return f"queued behind {lane.depth} request(s) of model {rec.model_id}"
