"""The load generators: ``run_sample`` and ``run_train``, one result per sweep point.

Closed loop: ``concurrency`` workers each send their next request when the previous one
answers, so the offered load follows the service's speed. Open loop: requests go at the
times of a seeded arrival schedule (Poisson or fixed interval) whatever the service does,
so a slow service builds a backlog, as real traffic would. Failed requests are counted by
error type, never averaged into the latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from tinker_actors.bench.drivers import Driver, Outcome
from tinker_actors.bench.measure import EventTally, summarize
from tinker_actors.bench.workload import LengthDist, SampleSpec, Workload, arrivals

MAX_ERROR_EXAMPLES = 5


class Progress(Protocol):
    """What the live display is told; every call comes from the benchmark's loop."""

    def start(self, label: str, total: int | None, duration: float | None) -> None: ...
    def update(self, completed: int, failed: int, in_flight: int) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    def start(self, label: str, total: int | None, duration: float | None) -> None:
        pass

    def update(self, completed: int, failed: int, in_flight: int) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class Target:
    """``base_url``/``api_key`` of the endpoint, or the embedded server's ``engine``."""

    base_url: str | None = None
    api_key: str | None = None
    engine: str = "torch"
    client: str = "tinker_actors"


@dataclass
class SampleConfig:
    model: str | None = None
    model_path: str | None = None
    prompt_len: LengthDist = field(default_factory=lambda: LengthDist("fixed", 32))
    output_len: LengthDist = field(default_factory=lambda: LengthDist("fixed", 32))
    num_samples: int = 1
    concurrency: list[int] | None = None
    request_rate: list[float] | None = None
    arrival: str = "poisson"
    max_concurrency: int | None = None
    requests: int | None = None
    duration: float | None = None
    warmup: int = 1
    seed: int = 0
    stream: bool = False
    temperature: float = 1.0
    vocab_size: int = 256
    percentiles: list[float] = field(default_factory=lambda: [50.0, 90.0, 99.0])

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_len"], d["output_len"] = str(self.prompt_len), str(self.output_len)
        return d

    def points(self) -> list[tuple[str, float]]:
        if self.request_rate:
            return [("open", r) for r in self.request_rate]
        return [("closed", float(c)) for c in (self.concurrency or [1])]


@dataclass
class TrainConfig:
    model: str | None = None
    rank: int = 16
    batch_size: int = 8
    seq_len: int = 128
    depth: list[int] = field(default_factory=lambda: [1])
    steps: int | None = None
    duration: float | None = None
    warmup: int = 1
    seed: int = 0
    learning_rate: float = 1e-4
    vocab_size: int = 256
    percentiles: list[float] = field(default_factory=lambda: [50.0, 90.0, 99.0])

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ endpoint
@contextlib.contextmanager
def endpoint(target: Target) -> Iterator[dict[str, Any]]:
    """The endpoint to load: the given URL, or an embedded local server (in a thread, on a
    temporary data directory) when there is none. Yields its JSON description, plus
    ``server`` (the LocalServer, embedded only; not serialized)."""
    if target.base_url:
        yield {
            "base_url": target.base_url,
            "api_key": target.api_key,
            "embedded": False,
            "engine": None,
            "client": target.client,
        }
        return
    from tinker_actors.server import LocalServer

    with tempfile.TemporaryDirectory(prefix="tinker-actors-bench-") as data_dir:
        server = LocalServer(engine=target.engine, data_dir=data_dir).start_in_thread()
        try:
            yield {
                "base_url": server.base_url,
                "api_key": server.api_key,
                "embedded": True,
                "engine": target.engine,
                "client": target.client,
                "server": server,
            }
        finally:
            server.stop_in_thread()


def _server_counts(ep: dict[str, Any]) -> dict[str, int] | None:
    server = ep.get("server")
    if server is None:
        return None
    return dict(server.stats()["requests"])


def _delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in sorted(out.items()) if v}


# ------------------------------------------------------------------------------ sampling
@dataclass(slots=True)
class _Record:
    index: int
    input_len: int
    scheduled: float | None
    start: float = 0.0
    end: float = 0.0
    outcome: Outcome | None = None
    error: BaseException | None = None


class _Counts:
    __slots__ = ("completed", "failed", "in_flight", "max_in_flight")

    def __init__(self) -> None:
        self.completed = self.failed = self.in_flight = self.max_in_flight = 0


async def run_sample(
    target: Target, cfg: SampleConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """Every point of the sweep against one endpoint; returns ``{"endpoint", "model",
    "results", "warmup"}`` for the JSON document."""
    progress = progress or NoProgress()
    with endpoint(target) as ep:
        driver = Driver(target.client, ep["base_url"], ep["api_key"])
        await driver.open()
        try:
            model = cfg.model
            if model is None and cfg.model_path is None:
                model = await driver.default_model()
            await driver.open_sampler(model, cfg.model_path)
            workload = Workload(cfg.prompt_len, cfg.output_len, cfg.seed, cfg.vocab_size)
            warm = await _warmup(driver, cfg, workload)
            specs: list[SampleSpec] | None = None
            if cfg.requests is not None:
                specs = [workload.spec(i) for i in range(cfg.requests)]
            results = []
            for mode, value in cfg.points():
                before = _server_counts(ep)
                point = await _sample_point(driver, cfg, workload, specs, mode, value, progress)
                point["server_requests"] = _delta(before, _server_counts(ep))
                results.append(point)
        finally:
            progress.stop()  # idempotent: a point cut short leaves no live display behind
            await driver.close()
    ep.pop("server", None)
    ep.pop("api_key", None)  # never into the report
    return {
        "endpoint": ep,
        "model": model,
        "model_path": cfg.model_path,
        "warmup": warm,
        "results": results,
    }


async def _warmup(driver: Driver, cfg: SampleConfig, workload: Workload) -> dict[str, Any]:
    """``cfg.warmup`` requests (the first of the workload, from a distinct seed range) to load
    the sampler and open connections; counted apart."""
    ok = failed = 0
    for i in range(cfg.warmup):
        spec = workload.spec(-(i + 1) % 2**31)
        try:
            if cfg.stream:
                await driver.stream(spec, cfg.num_samples, cfg.temperature)
            else:
                await driver.sample(spec, cfg.num_samples, cfg.temperature)
            ok += 1
        except Exception:
            failed += 1
    return {"requests": cfg.warmup, "completed": ok, "failed": failed}


async def _sample_point(
    driver: Driver,
    cfg: SampleConfig,
    workload: Workload,
    specs: list[SampleSpec] | None,
    mode: str,
    value: float,
    progress: Progress,
) -> dict[str, Any]:
    label = f"concurrency {int(value)}" if mode == "closed" else f"rate {value:g}/s"
    progress.start(label, cfg.requests, cfg.duration)
    counts = _Counts()
    records: list[_Record] = []
    sem = asyncio.Semaphore(cfg.max_concurrency) if mode == "open" and cfg.max_concurrency else None
    send = driver.stream if cfg.stream else driver.sample

    def spec_of(i: int) -> SampleSpec:
        return specs[i] if specs is not None else workload.spec(i)

    async def one(rec: _Record, spec: SampleSpec) -> None:
        async with sem if sem is not None else contextlib.nullcontext():
            counts.in_flight += 1
            counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
            rec.start = time.perf_counter()
            try:
                rec.outcome = await send(spec, cfg.num_samples, cfg.temperature)
                counts.completed += 1
            except Exception as exc:
                rec.error = exc
                counts.failed += 1
            finally:
                rec.end = time.perf_counter()
                counts.in_flight -= 1
        progress.update(counts.completed, counts.failed, counts.in_flight)

    with EventTally() as tally:
        t0 = time.perf_counter()
        deadline = t0 + cfg.duration if cfg.duration is not None else None
        if mode == "closed":
            issued = 0

            def take() -> int | None:
                nonlocal issued
                if cfg.requests is not None and issued >= cfg.requests:
                    return None
                if deadline is not None and time.perf_counter() >= deadline:
                    return None
                issued += 1
                return issued - 1

            async def worker() -> None:
                while (i := take()) is not None:
                    spec = spec_of(i)
                    rec = _Record(i, len(spec.prompt), None)
                    records.append(rec)
                    await one(rec, spec)

            await asyncio.gather(*(worker() for _ in range(int(value))))
        else:
            tasks = []
            for i, at in enumerate(arrivals(value, seed=cfg.seed, process=cfg.arrival)):
                if cfg.requests is not None and i >= cfg.requests:
                    break
                if cfg.duration is not None and at >= cfg.duration:
                    break
                delay = t0 + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                spec = spec_of(i)
                rec = _Record(i, len(spec.prompt), at)
                records.append(rec)
                tasks.append(asyncio.ensure_future(one(rec, spec)))
            await asyncio.gather(*tasks)
        t_end = time.perf_counter()
    progress.stop()
    records.sort(key=lambda r: r.index)
    point = _sample_figures(cfg, records, t0, t_end, counts.max_in_flight)
    point.update(
        {
            "mode": mode,
            "max_concurrency": int(value) if mode == "closed" else cfg.max_concurrency,
            "request_rate": value if mode == "open" else None,
            "arrival": cfg.arrival if mode == "open" else None,
        }
    )
    point["events"] = tally.snapshot() if driver.client == "tinker_actors" else None
    point["errors"]["http_429"] = point["events"]["http_429"] if point["events"] else None
    point["errors"]["retries"] = point["events"]["retries"] if point["events"] else None
    return point


def _sample_figures(
    cfg: SampleConfig, records: list[_Record], t0: float, t_end: float, max_in_flight: int
) -> dict[str, Any]:
    ok = [r for r in records if r.error is None and r.outcome is not None]
    bad = [r for r in records if r.error is not None]
    duration = max(t_end - t0, 1e-9)
    total_in = sum(r.input_len for r in ok)
    total_out = sum(sum(r.outcome.output_lens) for r in ok if r.outcome)
    e2el = [(r.end - r.start) * 1e3 for r in ok]
    ttft: list[float] = []
    tpot: list[float] = []
    itl: list[float] = []
    for r in ok:
        o = r.outcome
        assert o is not None
        if o.ttft is None:
            continue
        ttft.append(o.ttft * 1e3)
        itl.extend(g * 1e3 for g in o.itls)
        longest = max(o.output_lens, default=0)
        if longest > 1:
            tpot.append(((r.end - r.start) - o.ttft) * 1e3 / (longest - 1))
    by_type = Counter(type(r.error).__name__ for r in bad)
    examples: list[str] = []
    for r in bad:
        text = f"{type(r.error).__name__}: {r.error}"[:300]
        if text not in examples and len(examples) < MAX_ERROR_EXAMPLES:
            examples.append(text)
    lags = [(r.start - t0 - r.scheduled) * 1e3 for r in records if r.scheduled is not None]
    point: dict[str, Any] = {
        "duration": duration,
        "num_requests": len(records),
        "completed": len(ok),
        "failed": len(bad),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration,
        "output_throughput": total_out / duration,
        "total_token_throughput": (total_in + total_out) / duration,
        "max_concurrent_requests": max_in_flight,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        point.update(summarize(name, values, cfg.percentiles))
    point["mean_send_lag_ms"] = float(np.mean(lags)) if lags else None
    point["errors"] = {"by_type": dict(by_type), "examples": examples}
    point["input_lens"] = [r.input_len for r in records]
    point["output_lens"] = [sum(r.outcome.output_lens) if r.outcome else 0 for r in records]
    point["start_times"] = [r.start - t0 for r in records]
    point["scheduled_times"] = [r.scheduled for r in records] if lags else None
    point["e2els"] = [r.end - r.start if r.error is None else None for r in records]
    point["ttfts"] = (
        [r.outcome.ttft if r.outcome else None for r in records] if cfg.stream else None
    )
    point["itls"] = [r.outcome.itls if r.outcome else [] for r in records] if cfg.stream else None
    point["errors_list"] = ["" if r.error is None else type(r.error).__name__ for r in records]
    return point


# ------------------------------------------------------------------------------ training
async def run_train(
    target: Target, cfg: TrainConfig, progress: Progress | None = None
) -> dict[str, Any]:
    """forward_backward + optim_step steps, ``depth`` of them in flight, per sweep point."""
    progress = progress or NoProgress()
    with endpoint(target) as ep:
        driver = Driver(target.client, ep["base_url"], ep["api_key"])
        await driver.open()
        try:
            model = cfg.model or await driver.default_model()
            await driver.open_trainer(model, cfg.rank)
            rng = np.random.default_rng([cfg.seed, 5])
            batch = [
                driver.datum(rng.integers(0, cfg.vocab_size, size=cfg.seq_len + 1).tolist())
                for _ in range(cfg.batch_size)
            ]
            warm_failed = 0
            for _ in range(cfg.warmup):
                fb, opt = driver.step(batch, cfg.learning_rate)
                try:
                    await fb
                    await opt
                except Exception:
                    warm_failed += 1
            results = []
            for depth in cfg.depth:
                before = _server_counts(ep)
                point = await _train_point(driver, cfg, batch, depth, progress)
                point["server_requests"] = _delta(before, _server_counts(ep))
                results.append(point)
        finally:
            progress.stop()  # idempotent: a point cut short leaves no live display behind
            await driver.close()
    ep.pop("server", None)
    ep.pop("api_key", None)
    warm = {"steps": cfg.warmup, "failed": warm_failed}
    return {"endpoint": ep, "model": model, "warmup": warm, "results": results}


async def _train_point(
    driver: Driver, cfg: TrainConfig, batch: list[Any], depth: int, progress: Progress
) -> dict[str, Any]:
    progress.start(f"depth {depth}", cfg.steps, cfg.duration)
    inflight: list[tuple[float, Any, Any]] = []
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    examples: list[str] = []
    done = failed = 0

    async def finish_oldest() -> None:
        nonlocal done, failed
        t_sub, fb, opt = inflight.pop(0)
        try:
            await fb
            await opt
            latencies.append((time.perf_counter() - t_sub) * 1e3)
            done += 1
        except Exception as exc:
            failed += 1
            errors[type(exc).__name__] += 1
            text = f"{type(exc).__name__}: {exc}"[:300]
            if text not in examples and len(examples) < MAX_ERROR_EXAMPLES:
                examples.append(text)
        progress.update(done, failed, len(inflight))

    with EventTally() as tally:
        t0 = time.perf_counter()
        sent = 0
        while True:
            if cfg.steps is not None and sent >= cfg.steps:
                break
            if cfg.duration is not None and time.perf_counter() - t0 >= cfg.duration:
                break
            while len(inflight) >= depth:
                await finish_oldest()
            fb, opt = driver.step(batch, cfg.learning_rate)
            inflight.append((time.perf_counter(), fb, opt))
            sent += 1
        while inflight:
            await finish_oldest()
        duration = max(time.perf_counter() - t0, 1e-9)
    progress.stop()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    snap = tally.snapshot() if driver.client == "tinker_actors" else None
    point: dict[str, Any] = {
        "depth": depth,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "duration": duration,
        "num_steps": sent,
        "completed": done,
        "failed": failed,
        "total_tokens": done * tokens_per_step,
        "steps_per_s": done / duration,
        "tokens_per_s": done * tokens_per_step / duration,
    }
    point.update(summarize("step", latencies, cfg.percentiles))
    point["queue_wait_s"] = snap["queue_wait_s"] if snap else None
    point["errors"] = {
        "by_type": dict(errors),
        "examples": examples,
        "http_429": snap["http_429"] if snap else None,
        "retries": snap["retries"] if snap else None,
    }
    point["events"] = snap
    point["step_latencies_ms"] = latencies
    return point
