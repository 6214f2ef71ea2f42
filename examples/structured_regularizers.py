"""The regularizer pipeline offline (no server): a base loss plus weighted penalties over mock
logprobs, with values, contributions and gradient norms, parallel vs sequential, an async
regularizer, the executor and gradient tracker directly, the event log, JSON, and the errors
bad specs get.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import numpy as np
import torch

import tinker_actors as tinker
from tinker_actors import telemetry
from tinker_actors.regularizers import (
    L1,
    L2,
    Consistency,
    ElasticNet,
    Entropy,
    Executor,
    GradientPenalty,
    GradientTracker,
    KLDivergence,
    Orthogonality,
    Pipeline,
    RegularizerSpec,
)

LOGPROBS = torch.tensor(
    [-0.5, -1.2, -0.8, -2.1, -0.3, -1.5, -0.9, -1.8, -0.6, -1.1], dtype=torch.float64
)
REFERENCE = torch.log(torch.tensor([0.15, 0.1, 0.12, 0.05, 0.2, 0.08, 0.1, 0.06, 0.09, 0.05]))
DATA = [
    tinker.Datum(
        model_input=tinker.ModelInput.from_ints(list(range(10))),
        loss_fn_inputs={
            "target_tokens": list(range(10)),
            "reference_logprobs": REFERENCE.numpy().astype(np.float32),
            "original_logprobs": (LOGPROBS + 0.05).numpy().astype(np.float32),
        },
    )
]


def nll(data: object, logprobs: torch.Tensor) -> tuple[torch.Tensor, dict]:
    loss = -logprobs.mean()
    return loss, {"perplexity": math.exp(float(loss.detach()))}


SPECS = [
    RegularizerSpec(L1(), 0.01, "l1"),
    RegularizerSpec(Entropy(mode="maximize"), 0.01, "entropy"),
    RegularizerSpec(Entropy(mode="maximize", temperature=0.5), 0.005, "entropy_sharp"),
    RegularizerSpec(L2(center="mean"), 0.005, "l2"),
    RegularizerSpec(ElasticNet(l1_ratio=0.6), 0.002, "elastic_net"),
    RegularizerSpec(KLDivergence(reference_field="reference_logprobs"), 0.01, "kl_forward"),
    RegularizerSpec(
        KLDivergence(reference_field="reference_logprobs", direction="reverse"), 0.01, "kl_reverse"
    ),
    RegularizerSpec(
        KLDivergence(reference_field="reference_logprobs", symmetric=True), 0.005, "kl_symmetric"
    ),
    RegularizerSpec(Consistency(), 0.02, "consistency"),
    RegularizerSpec(Orthogonality(mode="soft"), 0.003, "orthogonality"),
    RegularizerSpec(GradientPenalty(loss_fn=torch.sum), 0.001, "gradient_penalty"),
]


def section(n: int, title: str) -> None:
    print(f"\n{n}. {title}")


def show(out: object) -> None:
    for name, r in out.regularizers.items():
        grad = "" if r.grad_norm is None else f" grad_norm={r.grad_norm:.4f}"
        print(
            f"   {name:17s} value={r.value:9.4f} weight={r.weight:<6} contribution={r.contribution:.6f}{grad}"
        )


def main() -> None:
    section(1, "Baseline (no regularizers)")
    base = Pipeline.compute(DATA, LOGPROBS, nll)
    print(
        f"   loss_total={base.loss_total:.4f} perplexity={base.base_loss['custom']['perplexity']:.4f}"
    )

    section(2, f"All {len(SPECS)} regularizers, in parallel")
    out = Pipeline.compute(DATA, LOGPROBS, nll, regularizers=SPECS)
    show(out)
    print(f"   loss_total={out.loss_total:.6f} regularizer_total={out.regularizer_total:.6f}")

    section(3, "With gradient norms (d total / d logprobs)")
    tracked = Pipeline.compute(DATA, LOGPROBS, nll, regularizers=SPECS, track_grad_norms=True)
    show(tracked)
    print(f"   total_grad_norm={tracked.total_grad_norm:.6f}")

    section(4, "Parallel vs sequential")
    t0 = time.perf_counter()
    par = Pipeline.compute(DATA, LOGPROBS, nll, regularizers=SPECS, parallel=True)
    t1 = time.perf_counter()
    seq = Pipeline.compute(DATA, LOGPROBS, nll, regularizers=SPECS, parallel=False)
    t2 = time.perf_counter()
    print(f"   parallel {1000 * (t1 - t0):.1f} ms, sequential {1000 * (t2 - t1):.1f} ms")
    print(f"   Results match: {par.to_dict() == seq.to_dict()}")

    section(5, "An async regularizer (returns a coroutine)")

    async def slow_l1(data: object, logprobs: torch.Tensor) -> torch.Tensor:
        await asyncio.sleep(0.01)
        return logprobs.abs().sum()

    out = Pipeline.compute(
        DATA, LOGPROBS, nll, regularizers=[RegularizerSpec(slow_l1, 0.1, "async_l1", async_=True)]
    )
    show(out)

    section(6, "Executor and GradientTracker directly")
    one = Executor.execute_one(SPECS[0], DATA, LOGPROBS, track_grad_norms=True)
    print(f"   execute_one(l1): value={one.value:.4f} grad_norm={one.grad_norm:.4f}")
    outs = Executor.execute_all(SPECS[:3], DATA, LOGPROBS)
    print(f"   execute_all: {[o.name for o in outs]}")
    print(
        f"   grad norm of sum(logprobs) = {GradientTracker.compute_grad_norm(torch.sum, LOGPROBS):.4f} (sqrt(10) = {math.sqrt(10):.4f})"
    )

    section(7, "Event log (custom_loss.* and regularizer.* events)")
    hid = telemetry.attach(
        lambda name, m, md: print(f"   [event] {name} {md.get('name') or ''}".rstrip()),
        ["custom_loss", "regularizer"],
    )
    Pipeline.compute(DATA, LOGPROBS, nll, regularizers=SPECS[:2], parallel=False)
    telemetry.detach(hid)

    section(8, "JSON")
    print(
        "   "
        + json.dumps(Pipeline.compute(DATA, LOGPROBS, nll, regularizers=SPECS[:2]).to_dict())[:300]
    )

    section(9, "Errors for bad specs")
    try:
        Pipeline.compute(DATA, LOGPROBS, nll, regularizers=[SPECS[0], SPECS[0]])
    except ValueError as exc:
        print(f"   duplicate names: {exc}")
    try:
        RegularizerSpec("not a function", 1.0, "bad")
    except TypeError as exc:
        print(f"   not a function: {exc}")

    section(10, "A module-style regularizer (an object with compute)")

    class MeanAbs:
        def compute(
            self, data: object, logprobs: torch.Tensor, opts: dict
        ) -> tuple[torch.Tensor, dict]:
            return logprobs.abs().mean(), {"scale": opts.get("scale", 1)}

    out = Pipeline.compute(
        DATA,
        LOGPROBS,
        nll,
        regularizers=[RegularizerSpec(MeanAbs, 0.5, "mean_abs", opts={"scale": 2})],
    )
    show(out)
    print("\nDone: every regularizer ran offline.")


if __name__ == "__main__":
    main()
