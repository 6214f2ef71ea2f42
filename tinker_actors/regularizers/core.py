"""Regularizer pipeline: specs, an executor, gradient norms, and the combined output.

A regularizer is a function of ``(data, logprobs)`` (or ``(data, logprobs, opts)``, or an
object with ``compute(data, logprobs, opts)``) returning ``(loss_tensor, metrics)`` or a bare
tensor. ``logprobs`` is whatever the base loss receives: one tensor, or (in
``forward_backward_custom``) a list of per-datum tensors. Every term stays a torch graph, so
the total loss carries the true gradient of every term; nothing is replaced by a constant.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import events
from ..errors import RegularizerError, RegularizerTimeoutError
from ..telemetry import get_logger

if TYPE_CHECKING:
    import torch

__all__ = [
    "CustomLossOutput",
    "Executor",
    "GradientTracker",
    "Pipeline",
    "RegularizerError",
    "RegularizerOutput",
    "RegularizerSpec",
    "RegularizerTimeoutError",
    "execute",
]

_log = get_logger("tinker_actors.regularizers")

Logprobs = Any  # torch.Tensor | Sequence[torch.Tensor]


# ----------------------------------------------------------------------------- dispatch
def _is_module_like(fn: Any) -> bool:
    """An object (module, class or instance) offering ``compute(data, logprobs, opts)``."""
    return (
        not inspect.isfunction(fn)
        and not inspect.ismethod(fn)
        and callable(getattr(fn, "compute", None))
    )


def _positional_arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` accepts (None: any number / unknown)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    n = 0
    for p in sig.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


def _required_positional(fn: Callable[..., Any]) -> int:
    sig = inspect.signature(fn)
    return sum(
        1
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


def _call_arity(fn: Callable[..., Any]) -> int:
    """2 or 3: whether ``fn`` is called with ``opts`` as a third argument."""
    n = _positional_arity(fn)
    if n is None:
        return 2
    if n >= 3:
        return 3 if _required_positional(fn) >= 3 or n == 3 else 2
    if n == 2:
        return 2
    raise TypeError(
        f"a regularizer function takes (data, logprobs) or (data, logprobs, opts); "
        f"{getattr(fn, '__name__', fn)!r} takes {n} positional argument(s)"
    )


def execute(fn: Any, data: Any, logprobs: Logprobs, opts: Mapping[str, Any] | None = None) -> Any:
    """Calls a 2-argument function, a 3-argument function (given ``opts``) or a module-like
    object's ``compute(data, logprobs, opts)``; a class is instantiated first."""
    opts = dict(opts or {})
    if _is_module_like(fn):
        target: Any = fn() if inspect.isclass(fn) else fn
        return target.compute(data, logprobs, opts)
    if _call_arity(fn) == 3:
        return fn(data, logprobs, opts)
    return fn(data, logprobs)


# ----------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class RegularizerSpec:
    """One weighted term: ``contribution = weight * value``.

    ``fn`` is a 2-argument function, a 3-argument function (it also gets ``opts``) or an
    object/module/class with ``compute(data, logprobs, opts)``. With ``async_=True`` calling
    ``fn`` returns an awaitable (a coroutine or a future) of the usual result.
    """

    fn: Any
    weight: float
    name: str
    async_: bool = False
    opts: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.fn) and not _is_module_like(self.fn):
            raise TypeError(
                f"RegularizerSpec {self.name!r}: fn must be a function of (data, logprobs[, opts])"
                f" or have compute(data, logprobs, opts); got {type(self.fn).__name__}"
            )
        if not _is_module_like(self.fn):
            _call_arity(self.fn)  # raises TypeError for a wrong arity
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float):
            raise TypeError(
                f"RegularizerSpec {self.name!r}: weight must be a number, "
                f"got {type(self.weight).__name__}"
            )
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(
                f"RegularizerSpec {self.name!r}: weight must be finite and >= 0, got {self.weight}"
            )
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"RegularizerSpec: name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.async_, bool):
            raise TypeError(f"RegularizerSpec {self.name!r}: async_ must be a bool")
        if not isinstance(self.opts, Mapping):
            raise TypeError(f"RegularizerSpec {self.name!r}: opts must be a mapping")


# ----------------------------------------------------------------------------- outputs
@dataclass
class RegularizerOutput:
    """One term's result; ``loss`` is its (scalar) torch tensor, kept for the total."""

    name: str
    value: float
    weight: float
    contribution: float
    grad_norm: float | None = None
    grad_norm_weighted: float | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    loss: Any = field(default=None, repr=False, compare=False)
    grads: list[Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "value": self.value,
            "weight": self.weight,
            "contribution": self.contribution,
            "custom": dict(self.custom),
        }
        if self.grad_norm is not None:
            out["grad_norm"] = self.grad_norm
            out["grad_norm_weighted"] = self.grad_norm_weighted
        return out


@dataclass
class CustomLossOutput:
    """The base loss plus weighted regularizers; ``loss`` is the differentiable total."""

    loss_total: float
    regularizer_total: float
    base_loss: dict[str, Any]
    regularizers: dict[str, RegularizerOutput]
    total_grad_norm: float | None = None
    loss: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "loss_total": self.loss_total,
            "regularizer_total": self.regularizer_total,
            "regularizers": {
                n: {
                    "value": r.value,
                    "weight": r.weight,
                    "contribution": r.contribution,
                    "grad_norm": r.grad_norm,
                    "grad_norm_weighted": r.grad_norm_weighted,
                    "custom": dict(r.custom),
                }
                for n, r in self.regularizers.items()
            },
        }
        if self.base_loss is not None:
            out["base_loss"] = {k: v for k, v in self.base_loss.items()}
        if self.total_grad_norm is not None:
            out["total_grad_norm"] = self.total_grad_norm
        return out

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat float metrics (the keys ``forward_backward_custom`` reports)."""
        m: dict[str, float] = {
            f"{prefix}loss_total": self.loss_total,
            f"{prefix}regularizer_total": self.regularizer_total,
            f"{prefix}base_loss": float(self.base_loss["value"]),
        }
        if self.base_loss.get("grad_norm") is not None:
            m[f"{prefix}base_loss/grad_norm"] = float(self.base_loss["grad_norm"])
        if self.total_grad_norm is not None:
            m[f"{prefix}total_grad_norm"] = self.total_grad_norm
        for name, r in self.regularizers.items():
            base = f"{prefix}regularizer/{name}"
            m[f"{base}/value"] = r.value
            m[f"{base}/contribution"] = r.contribution
            if r.grad_norm is not None:
                m[f"{base}/grad_norm"] = r.grad_norm
                m[f"{base}/grad_norm_weighted"] = float(r.grad_norm_weighted or 0.0)
            for k, v in r.custom.items():
                if isinstance(v, bool):
                    continue
                if isinstance(v, int | float):
                    m[f"{base}/{k}"] = float(v)
        return m


# ----------------------------------------------------------------------------- helpers
def _tensors(logprobs: Logprobs) -> list[torch.Tensor]:
    import torch

    if isinstance(logprobs, torch.Tensor):
        return [logprobs]
    if isinstance(logprobs, Sequence) and all(isinstance(t, torch.Tensor) for t in logprobs):
        return list(logprobs)
    raise TypeError(
        f"logprobs must be a torch.Tensor or a list of torch.Tensor, got {type(logprobs).__name__}"
    )


def _leaves(logprobs: Logprobs) -> Logprobs:
    """Detached copies that require grad (same structure)."""
    import torch

    if isinstance(logprobs, torch.Tensor):
        return logprobs.detach().clone().requires_grad_(True)
    return [t.detach().clone().requires_grad_(True) for t in logprobs]


def _differentiable(logprobs: Logprobs) -> bool:
    ts = _tensors(logprobs)
    return all(t.requires_grad for t in ts) and all(t.is_floating_point() for t in ts)


def _unpack(name: str, result: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """(loss tensor summed to a scalar, metrics) from a regularizer's return value."""
    import torch

    metrics: Any = {}
    loss = result
    if isinstance(result, tuple):
        if len(result) != 2:
            raise RegularizerError(name, f"returned a {len(result)}-tuple, not (loss, metrics)")
        loss, metrics = result
    if not isinstance(loss, torch.Tensor):
        if isinstance(loss, int | float) and not isinstance(loss, bool):
            loss = torch.tensor(float(loss))
        else:
            raise RegularizerError(name, f"returned a {type(loss).__name__}, not a torch.Tensor")
    if loss.ndim != 0:
        loss = loss.sum()
    if metrics is None:
        metrics = {}
    if not isinstance(metrics, Mapping):
        raise RegularizerError(name, f"metrics must be a mapping, got {type(metrics).__name__}")
    return loss, {str(k): _number(v) for k, v in metrics.items()}


def _number(v: Any) -> Any:
    if hasattr(v, "detach") and hasattr(v, "numel") and v.numel() == 1:
        return float(v.detach().item())
    return v


def _run_awaitable(aw: Any, timeout: float | None) -> Any:
    """Waits for an awaitable or future from a sync context (never on a running loop)."""
    if isinstance(aw, concurrent.futures.Future):
        return aw.result(timeout)
    if isinstance(aw, asyncio.Future) and aw.get_loop().is_running():
        # a task already running on the caller's loop (in another thread): wait there
        loop = aw.get_loop()
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            raise TypeError("an async_ regularizer's task cannot be awaited on its own loop")
        cf = asyncio.run_coroutine_threadsafe(_as_coro(aw), loop)
        return cf.result(timeout)
    if inspect.isawaitable(aw):
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        async def wrap() -> None:
            try:
                done.set_result(await asyncio.wait_for(_as_coro(aw), timeout))
            except BaseException as exc:  # re-raised in the caller's thread
                done.set_exception(exc)

        # A loop of its own on a helper thread: the caller may itself be on a running loop.
        # The result is taken as soon as it is set, not after the loop's cleanup.
        threading.Thread(
            target=asyncio.run, args=(wrap(),), name="regularizer-async", daemon=True
        ).start()
        return done.result()
    raise TypeError(f"async_ regularizer returned {type(aw).__name__}, not an awaitable")


async def _as_coro(aw: Awaitable[Any]) -> Any:
    return await aw


def _norm(grads: Sequence[torch.Tensor | None]) -> float:
    total = 0.0
    for g in grads:
        if g is not None:
            total += float(g.detach().double().pow(2).sum().item())
    return math.sqrt(total)


# ----------------------------------------------------------------------------- gradients
class GradientTracker:
    """Norms of a term's gradient with respect to the logprobs (L2 over every element)."""

    @staticmethod
    def grads(loss: torch.Tensor, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
        import torch

        if not loss.requires_grad:
            return [None] * len(inputs)
        return list(torch.autograd.grad(loss, list(inputs), retain_graph=True, allow_unused=True))

    @staticmethod
    def norm(grads: Sequence[Any]) -> float:
        return _norm(grads)

    @classmethod
    def compute_grad_norm(cls, loss_fn: Callable[[Any], Any], logprobs: Logprobs) -> float:
        """‖∂loss_fn(logprobs)/∂logprobs‖₂ for ``loss_fn(logprobs) -> tensor``."""
        leaves = _leaves(logprobs)
        out = loss_fn(leaves)
        loss, _ = _unpack(getattr(loss_fn, "__name__", "loss_fn"), out)
        return cls.norm(cls.grads(loss, _tensors(leaves)))

    @classmethod
    def grad_norm_for_regularizer(
        cls, spec: RegularizerSpec, data: Any, logprobs: Logprobs, *, timeout: float | None = None
    ) -> float:
        leaves = _leaves(logprobs)
        loss, _ = _unpack(spec.name, _call_spec(spec, data, leaves, timeout))
        return cls.norm(cls.grads(loss, _tensors(leaves)))

    @classmethod
    def total_grad_norm(
        cls,
        base_loss_fn: Callable[[Any, Any], Any],
        regularizers: Sequence[RegularizerSpec],
        data: Any,
        logprobs: Logprobs,
        *,
        timeout: float | None = None,
    ) -> float:
        """The norm of the gradient of ``base + Σ weight_i * reg_i``."""
        leaves = _leaves(logprobs)
        total, _ = _unpack("base_loss", base_loss_fn(data, leaves))
        for spec in regularizers:
            loss, _ = _unpack(spec.name, _call_spec(spec, data, leaves, timeout))
            total = total + spec.weight * loss
        return cls.norm(cls.grads(total, _tensors(leaves)))


def _combine(
    inputs: Sequence[torch.Tensor],
    base: Sequence[torch.Tensor | None],
    terms: Sequence[tuple[float, Sequence[torch.Tensor | None] | None]],
) -> list[torch.Tensor]:
    """base + Σ weight·grad, in order, with missing gradients as zeros."""
    import torch

    out = [
        g.detach() if g is not None else torch.zeros_like(x)
        for x, g in zip(inputs, base, strict=True)
    ]
    for w, grads in terms:
        for j, g in enumerate(grads or ()):
            if g is not None:
                out[j] = out[j] + w * g.detach()
    return out


def _call_spec(spec: RegularizerSpec, data: Any, logprobs: Logprobs, timeout: float | None) -> Any:
    try:
        result = execute(spec.fn, data, logprobs, spec.opts)
    except RegularizerError:
        raise
    except Exception as exc:
        raise RegularizerError(spec.name, f"{type(exc).__name__}: {exc}", exc) from exc
    if spec.async_:
        try:
            return _run_awaitable(result, timeout)
        except TimeoutError as exc:
            raise RegularizerTimeoutError(spec.name, f"no result within {timeout}s", exc) from exc
        except RegularizerError:
            raise
        except Exception as exc:
            raise RegularizerError(spec.name, f"{type(exc).__name__}: {exc}", exc) from exc
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise RegularizerError(spec.name, "returned an awaitable; declare it with async_=True")
    return result


# ----------------------------------------------------------------------------- executor
def _emit_failed(name: str, exc: BaseException, started: float) -> None:
    if events.ON:
        events.emit(
            events.REGULARIZER_EXCEPTION,
            {"duration": time.perf_counter() - started},
            {"name": name, "error_type": type(exc).__name__, "error": str(exc)},
        )


class Executor:
    """Runs regularizers in parallel (a thread pool; torch releases the GIL) or in sequence.

    Both orders give identical results: each term is computed from the same inputs and the
    outputs are kept in the order of the specs. In parallel every term runs and the first
    error in spec order is raised; in sequence execution stops at the first error.
    """

    @staticmethod
    def execute_one(
        spec: RegularizerSpec,
        data: Any,
        logprobs: Logprobs,
        *,
        track_grad_norms: bool = False,
        timeout: float | None = None,
        keep_grads: bool = False,
    ) -> RegularizerOutput:
        """Runs one term on its own leaf copies of ``logprobs`` (so terms never share a
        graph and any run order gives the same bits); ``grads`` holds its gradient."""
        started = time.perf_counter()
        need_grads = track_grad_norms or keep_grads
        inputs = _leaves(logprobs) if need_grads else logprobs
        if events.ON:
            events.emit(events.REGULARIZER_START, {"system_time": time.time()}, {"name": spec.name})
        try:
            loss, custom = _unpack(spec.name, _call_spec(spec, data, inputs, timeout))
            if not math.isfinite(value := float(loss.detach().item())):
                _log.warning("regularizer value is not finite", regularizer=spec.name, value=value)
            grads = GradientTracker.grads(loss, _tensors(inputs)) if need_grads else None
            grad_norm = GradientTracker.norm(grads) if track_grad_norms and grads else None
        except RegularizerError as exc:
            _log.debug("regularizer failed", regularizer=spec.name, reason=exc.reason)
            _emit_failed(spec.name, exc, started)
            raise
        except Exception as exc:
            _emit_failed(spec.name, exc, started)
            raise RegularizerError(spec.name, f"{type(exc).__name__}: {exc}", exc) from exc
        if events.ON:
            events.emit(
                events.REGULARIZER_STOP,
                {"duration": time.perf_counter() - started, "value": value},
                {"name": spec.name, "weight": float(spec.weight)},
            )
        _log.debug(
            "regularizer computed",
            regularizer=spec.name,
            value=round(value, 4),
            ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return RegularizerOutput(
            name=spec.name,
            value=value,
            weight=float(spec.weight),
            contribution=float(spec.weight) * value,
            grad_norm=grad_norm,
            grad_norm_weighted=None if grad_norm is None else float(spec.weight) * grad_norm,
            custom=custom,
            loss=loss.detach(),
            grads=grads if keep_grads else None,
        )

    @classmethod
    def execute_all(
        cls,
        regularizers: Sequence[RegularizerSpec],
        data: Any,
        logprobs: Logprobs,
        *,
        parallel: bool = True,
        track_grad_norms: bool = False,
        timeout: float | None = 30.0,
        max_concurrency: int | None = None,
        keep_grads: bool = False,
    ) -> list[RegularizerOutput]:
        specs = list(regularizers)
        if not parallel or len(specs) <= 1:
            return [
                cls.execute_one(
                    s,
                    data,
                    logprobs,
                    track_grad_norms=track_grad_norms,
                    timeout=timeout,
                    keep_grads=keep_grads,
                )
                for s in specs
            ]
        workers = max(1, min(len(specs), max_concurrency or os.cpu_count() or 1))
        pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="regularizer")
        try:
            futs = [
                pool.submit(
                    cls.execute_one,
                    s,
                    data,
                    logprobs,
                    track_grad_norms=track_grad_norms,
                    timeout=timeout,
                    keep_grads=keep_grads,
                )
                for s in specs
            ]
            deadline = None if timeout is None else time.monotonic() + timeout
            concurrent.futures.wait(
                futs, None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            outs: list[RegularizerOutput] = []
            for spec, fut in zip(specs, futs, strict=True):
                if not fut.done():
                    raise RegularizerTimeoutError(spec.name, f"no result within {timeout}s")
                outs.append(fut.result())
            return outs
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


# ----------------------------------------------------------------------------- pipeline
class Pipeline:
    """``base_loss_fn(data, logprobs)`` plus weighted regularizers, with optional grad norms."""

    @staticmethod
    def compute(
        data: Any,
        logprobs: Logprobs,
        base_loss_fn: Callable[[Any, Any], Any],
        *,
        regularizers: Sequence[RegularizerSpec] = (),
        track_grad_norms: bool = False,
        parallel: bool = True,
        timeout: float | None = 30.0,
        max_concurrency: int | None = None,
    ) -> CustomLossOutput:
        """Returns a ``CustomLossOutput`` whose ``loss`` tensor is differentiable with respect
        to ``logprobs`` (when they require grad), so its backward carries every term."""
        if not callable(base_loss_fn):
            raise TypeError(
                f"base_loss_fn must be a function of (data, logprobs), "
                f"got {type(base_loss_fn).__name__}"
            )
        specs = list(regularizers or ())
        for s in specs:
            if not isinstance(s, RegularizerSpec):
                raise TypeError(f"regularizers must be RegularizerSpec, got {type(s).__name__}")
        names = [s.name for s in specs]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"Duplicate regularizer names: {dups}")
        _tensors(logprobs)  # type check before any user code runs
        started = time.perf_counter()
        _log.debug(
            "custom loss starting", regularizers=len(specs), track_grad_norms=track_grad_norms
        )
        # Every term (the base loss too) runs on its own leaf copies; the total's gradient
        # is then summed in spec order, so parallel and sequential runs agree to the bit.
        wants_grad = _differentiable(logprobs)
        need_grads = track_grad_norms or wants_grad
        base_inputs = _leaves(logprobs) if need_grads else logprobs
        base_tensor, base_metrics = _unpack("base_loss", base_loss_fn(data, base_inputs))
        base_value = float(base_tensor.detach().item())
        base_grads = (
            GradientTracker.grads(base_tensor, _tensors(base_inputs)) if need_grads else None
        )
        outs = Executor.execute_all(
            specs,
            data,
            logprobs,
            parallel=parallel,
            track_grad_norms=track_grad_norms,
            timeout=timeout,
            max_concurrency=max_concurrency,
            keep_grads=need_grads,
        )
        total = base_tensor.detach()
        for spec, out in zip(specs, outs, strict=True):
            total = total + float(spec.weight) * out.loss
        total_grads = None
        if base_grads is not None:
            total_grads = _combine(
                _tensors(logprobs),
                base_grads,
                [(float(s.weight), o.grads) for s, o in zip(specs, outs, strict=True)],
            )
            for o in outs:
                o.grads = None
        if wants_grad and total_grads is not None:
            # value unchanged (x*g - x*g is exactly 0); gradient exactly total_grads
            for x, g in zip(_tensors(logprobs), total_grads, strict=True):
                total = total + ((x * g).sum() - (x.detach() * g).sum())
        total_grad_norm = (
            None
            if not track_grad_norms or total_grads is None
            else GradientTracker.norm(total_grads)
        )
        regularizer_total = sum(o.contribution for o in outs)
        result = CustomLossOutput(
            loss_total=base_value + regularizer_total,
            regularizer_total=regularizer_total,
            base_loss={
                "value": base_value,
                "grad_norm": None
                if not track_grad_norms or base_grads is None
                else GradientTracker.norm(base_grads),
                "custom": base_metrics,
            },
            regularizers={o.name: o for o in outs},
            total_grad_norm=total_grad_norm,
            loss=total,
        )
        _log.debug(
            "custom loss computed",
            ms=round((time.perf_counter() - started) * 1000, 3),
            total=round(result.loss_total, 4),
            regularizer_total=round(regularizer_total, 4),
            regularizers=len(specs),
        )
        return result
