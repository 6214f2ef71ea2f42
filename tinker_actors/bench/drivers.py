"""The client a benchmark drives: ours (``tinker_actors``) or the official SDK (``tinker``).

Both expose the same 0.38 surface (``await service.create_sampling_client(...)``,
``await sampler.sample(...)``, ``training.forward_backward(...)`` returning an awaitable
future), so one driver serves both; only ``sample_stream`` is ours alone.
"""

from __future__ import annotations

import contextlib
import importlib
import time
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from tinker_actors.bench.workload import SampleSpec
from tinker_actors.errors import DriverError

CLIENTS = ("tinker_actors", "official")


def load_client(name: str) -> ModuleType:
    """The client module: ``tinker_actors``, or the official ``tinker`` when installed."""
    if name == "tinker_actors":
        import tinker_actors

        return tinker_actors
    if name != "official":
        raise DriverError(f"unknown client {name!r}: expected one of {', '.join(CLIENTS)}")
    try:
        module = importlib.import_module("tinker")
    except ImportError as exc:
        raise DriverError("--client official needs the official SDK: pip install tinker") from exc
    if (
        getattr(module, "__name__", "") != "tinker"
        or module.__spec__ is None
        or ("tinker_actors" in str(getattr(module, "__file__", "")))
    ):
        raise DriverError("`import tinker` resolves to tinker_actors here, not the official SDK")
    return module


def client_version(module: ModuleType) -> str | None:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    with contextlib.suppress(Exception):
        from importlib.metadata import version as dist_version

        return dist_version("tinker" if module.__name__ == "tinker" else "tinker-actors")
    return None


@dataclass
class Outcome:
    """One sampling request as measured: times are seconds since its own send."""

    output_lens: list[int] = field(default_factory=list)  # per returned sequence
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)  # gaps between tokens of one sequence


class Driver:
    """One ServiceClient, one sampler or trainer, requests at the benchmark's pace."""

    def __init__(self, client: str, base_url: str, api_key: str | None) -> None:
        self.client = client
        self.module = load_client(client)
        self.base_url = base_url
        self.api_key = api_key
        self.service: Any = None
        self.sampler: Any = None
        self.trainer: Any = None
        self.types: Any = self.module.types

    async def open(self) -> None:
        self.service = self.module.ServiceClient(base_url=self.base_url, api_key=self.api_key)

    async def default_model(self) -> str:
        """The first model the server lists."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            caps = await self.service.get_server_capabilities_async()
        models = [m.model_name for m in caps.supported_models if m.model_name]
        if not models:
            raise DriverError("the server lists no models: pass --model")
        return str(models[0])

    async def open_sampler(self, model: str | None, model_path: str | None) -> None:
        self.sampler = await self.service.create_sampling_client(
            base_model=model, model_path=model_path
        )

    async def open_trainer(self, model: str, rank: int) -> None:
        self.trainer = await self.service.create_lora_training_client(base_model=model, rank=rank)

    def _params(self, spec: SampleSpec, temperature: float) -> Any:
        return self.types.SamplingParams(
            max_tokens=spec.max_tokens, seed=spec.seed, temperature=temperature, stop=[]
        )

    async def sample(self, spec: SampleSpec, num_samples: int, temperature: float) -> Outcome:
        prompt = self.types.ModelInput.from_ints(spec.prompt)
        res = await self.sampler.sample(prompt, num_samples, self._params(spec, temperature))
        return Outcome(output_lens=[len(s.tokens) for s in res.sequences])

    async def stream(self, spec: SampleSpec, num_samples: int, temperature: float) -> Outcome:
        """Through ``sample_stream``: TTFT at the first token event, ITL between the token
        events of each sequence, output lengths from the token events seen."""
        if self.client != "tinker_actors":
            raise DriverError("--stream needs sample_stream, which only tinker_actors has")
        prompt = self.types.ModelInput.from_ints(spec.prompt)
        t0 = time.perf_counter()
        out = Outcome(output_lens=[0] * num_samples)
        last: dict[int, float] = {}
        async for chunk in self.sampler.sample_stream(
            prompt, self._params(spec, temperature), num_samples
        ):
            if chunk.event_type == "error":
                raise DriverError(f"stream_sample error event: {chunk.error}")
            if chunk.event_type != "token":
                continue
            now = time.perf_counter() - t0
            if out.ttft is None:
                out.ttft = now
            i = chunk.index
            if i >= len(out.output_lens):
                out.output_lens.extend([0] * (i + 1 - len(out.output_lens)))
            out.output_lens[i] += 1
            if i in last:
                out.itls.append(now - last[i])
            last[i] = now
        return out

    def step(self, datums: list[Any], learning_rate: float) -> tuple[Any, Any]:
        """Submits one forward_backward and one optim_step; returns their futures."""
        fb = self.trainer.forward_backward(datums, "cross_entropy")
        opt = self.trainer.optim_step(self.types.AdamParams(learning_rate=learning_rate))
        return fb, opt

    def datum(self, tokens: list[int]) -> Any:
        t = self.types
        n = len(tokens) - 1
        return t.Datum(
            model_input=t.ModelInput.from_ints(tokens[:-1]),
            loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * n},
        )

    async def close(self) -> None:
        if self.service is None:
            return
        service, self.service = self.service, None
        with contextlib.suppress(Exception):
            await service.close("success")
