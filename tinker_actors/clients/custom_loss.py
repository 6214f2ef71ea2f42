"""Per-datum custom losses: ``LossHandle`` / ``PerDatumLossFn`` as in the official SDK (0.38).

``ServiceClient.create_custom_loss(fn, input_ranks)`` traces ``fn`` with ``torch.fx`` and
checks the official rules (``logprobs`` first, then ``loss_fn_inputs`` names; at most 16
parameters; ranks 0-2; metric keys ``custom/<name>:sum|mean``). The handle always runs
client-side here: ``forward_backward_custom`` runs it once per datum and sums the losses and
metrics, dividing ``:mean`` metrics by the datum count (protocol.md 6.1 step 4).
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Concatenate

from .. import types

if TYPE_CHECKING:
    import torch
    import torch.fx

__all__ = ["LossHandle", "PerDatumLossFn", "run_loss_handle", "trace_loss"]

# (logprobs, *the loss_fn_inputs it reads) -> (scalar loss, {custom/<name>:sum|mean: scalar})
PerDatumLossFn = Callable[
    Concatenate["torch.Tensor", ...], tuple["torch.Tensor", Mapping[str, "torch.Tensor"]]
]

_INPUT_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")
_METRIC_KEY = re.compile(r"custom/[a-z0-9_./-]{1,64}:(sum|mean)")
_MAX_INPUTS = 16


@dataclass(frozen=True)
class LossHandle:
    """A traced per-datum loss; pass it to ``TrainingClient.forward_backward_custom``."""

    name: str
    inputs: tuple[types.CustomLossInput, ...]
    session_id: str
    graph: torch.fx.GraphModule = field(repr=False, compare=False)
    loss_id: str | None = None  # the server's id when uploaded; None: runs client-side

    @property
    def key(self) -> str:
        """Identifies the traced loss (graph code and inputs)."""
        digest = hashlib.sha256(self.graph.code.encode())
        digest.update(repr(self.inputs).encode())
        return digest.hexdigest()

    @property
    def input_names(self) -> tuple[str, ...]:
        """The ``loss_fn_inputs`` keys the loss reads, in parameter order."""
        return tuple(i.name for i in self.inputs[1:])


def trace_loss(
    fn: PerDatumLossFn, input_ranks: Mapping[str, types.CustomLossInputRank], session_id: str
) -> LossHandle:
    """Validates ``fn``'s signature against the official rules and traces it."""
    try:
        import torch.fx
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("custom losses need PyTorch: pip install 'tinker-actors[local]'") from exc
    params = list(inspect.signature(fn).parameters)
    if not params or params[0] != "logprobs":
        raise ValueError("a custom loss takes `logprobs` as its first parameter")
    if len(params) > _MAX_INPUTS:
        raise ValueError(f"a custom loss takes at most {_MAX_INPUTS} parameters")
    for p in params:
        if not _INPUT_NAME.fullmatch(p):
            raise ValueError(f"parameter name {p!r} must match {_INPUT_NAME.pattern}")
    if set(input_ranks) != set(params):
        raise ValueError(f"input_ranks must give the rank of exactly {params}")
    for p, rank in input_ranks.items():
        if rank not in (0, 1, 2):
            raise ValueError(f"rank of {p!r} must be 0, 1 or 2, got {rank}")
    graph = torch.fx.symbolic_trace(fn)
    inputs = tuple(types.CustomLossInput(name=p, rank=input_ranks[p]) for p in params)
    name = getattr(fn, "__name__", type(fn).__name__)
    return LossHandle(name=name, inputs=inputs, session_id=session_id, graph=graph)


def run_loss_handle(
    handle: LossHandle, data: list[types.Datum], logprobs_list: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Runs ``handle`` per datum; losses and metrics are summed, ``:mean`` ones averaged."""
    import torch

    total: Any = None
    sums: dict[str, float] = {}
    for datum, logprobs in zip(data, logprobs_list, strict=True):
        args = []
        for name in handle.input_names:
            if name not in datum.loss_fn_inputs:
                raise ValueError(f"loss {handle.name!r} reads loss_fn_inputs[{name!r}]")
            args.append(torch.as_tensor(datum.loss_fn_inputs[name].to_numpy()))
        loss, metrics = handle.graph(logprobs, *args)
        if loss.ndim != 0:
            raise ValueError(f"loss {handle.name!r} must return a scalar, got {tuple(loss.shape)}")
        total = loss if total is None else total + loss
        for key, value in metrics.items():
            if not _METRIC_KEY.fullmatch(key):
                raise ValueError(f"metric key {key!r} must match {_METRIC_KEY.pattern}")
            v = value.detach().item() if isinstance(value, torch.Tensor) else float(value)
            sums[key] = sums.get(key, 0.0) + v
    n = max(1, len(data))
    return total, {k: v / n if k.endswith(":mean") else v for k, v in sums.items()}
