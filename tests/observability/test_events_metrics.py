"""The event catalogue and the metrics fed by it (issue 11).

The HTTP sequences run against the scripted server (retries and failures a real server does
not produce on demand); the same events come from every request the clients make.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from client.scripted import ScriptedServer

from tinker_actors import errors, events, metrics, telemetry
from tinker_actors.config import Settings
from tinker_actors.futures import poll_future
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import NO_RETRY, Transport


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def __call__(self, name: str, m: Any, md: Any) -> None:
        self.seen.append((name, dict(m), dict(md)))

    def names(self) -> list[str]:
        return [n for n, _, _ in self.seen]


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    hid = events.attach(r)
    yield r
    events.detach(hid)


@pytest.fixture
def fresh_metrics() -> Iterator[None]:
    metrics.enable()
    metrics.reset()
    yield
    metrics.reset()


def make_transport(base: str) -> Transport:
    async def sleep(_: float) -> None:
        return None

    return Transport(loop_runtime(), Settings(base_url=base, api_key="tml-x"), sleep=sleep)


# ---------------------------------------------------------------------------- catalogue
def test_on_flag_follows_listeners_and_the_kill_switch() -> None:
    metrics.disable()  # the module attaches at import; this test needs an empty table
    try:
        others = events.attached()
        assert events.ON is bool(others)
        seen: list[str] = []
        hid = events.attach(lambda n, m, md: seen.append(n), events=["http.request", "queue.*"])
        assert events.ON
        events.emit(events.HTTP_STOP, {}, {})
        events.emit(events.QUEUE_STATE_CHANGE, {}, {})
        events.emit(events.FUTURE_RESOLVED, {}, {})  # not selected
        assert seen == [events.HTTP_STOP, events.QUEUE_STATE_CHANGE]
        events.disable()
        assert not events.ON
        events.emit(events.HTTP_STOP, {}, {})
        assert len(seen) == 2
        events.enable()
        assert events.detach(hid) and not events.detach(hid)
        assert events.ON is bool(others)
    finally:
        events.enable()
        metrics.enable()


def test_attach_rejects_bad_input_and_duplicate_ids() -> None:
    with pytest.raises(TypeError):
        events.attach("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        events.attach(lambda *a: None, events=[""])
    hid = events.attach(lambda *a: None, handler_id="dup")
    try:
        with pytest.raises(ValueError, match="already attached"):
            events.attach(lambda *a: None, handler_id="dup")
    finally:
        events.detach(hid)


def test_a_failing_handler_is_detached_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad(*_: Any) -> None:
        raise RuntimeError("handler bug")

    good: list[str] = []
    bad_id = events.attach(bad, events="recovery")
    good_id = events.attach(lambda n, m, md: good.append(n), events="recovery")
    try:
        with caplog.at_level(logging.WARNING, "tinker_actors.events"):
            events.emit(events.RECOVERY_DETECTED, {}, {"run_id": "r"})
            events.emit(events.RECOVERY_STARTED, {}, {"run_id": "r"})
        assert bad_id not in events.attached()
        assert good == [events.RECOVERY_DETECTED, events.RECOVERY_STARTED]
        assert any("handler bug" in r.getMessage() for r in caplog.records)
    finally:
        events.detach(good_id)


def test_the_catalogue_names_every_family() -> None:
    families = {n.split(".")[0] for n in events.CATALOGUE}
    assert families == {
        "http",
        "retry",
        "queue",
        "future",
        "sampling",
        "custom_loss",
        "regularizer",
        "recovery",
    }


# ---------------------------------------------------------------------------- http + metrics
async def test_metrics_after_a_known_sequence_with_failures_and_retries(
    rec: Recorder, fresh_metrics: None
) -> None:
    async with ScriptedServer() as m:
        t = make_transport(m.base)
        m.post("/api/v1/a", status=200, payload={})
        m.post("/api/v1/a", status=200, payload={})
        m.post("/api/v1/a", status=400, payload={"detail": "bad"})  # a failure, not retried
        m.post("/api/v1/b", status=503)
        m.post("/api/v1/b", status=500)
        m.post("/api/v1/b", status=200, payload={})  # 2 retries, then ok
        m.post("/api/v1/b", status=429, headers={"retry-after-ms": "1"})
        m.post("/api/v1/b", status=200, payload={})  # 1 retry (a 429)
        m.post("/api/v1/c", status=404, payload={"detail": "gone"})
        await t.request("POST", "/api/v1/a", json={}, route="a")
        await t.request("POST", "/api/v1/a", json={}, route="a")
        with pytest.raises(errors.BadRequestError):
            await t.request("POST", "/api/v1/a", json={}, route="a")
        await t.request("POST", "/api/v1/b", json={}, route="b")
        await t.request("POST", "/api/v1/b", json={}, route="b")
        with pytest.raises(errors.NotFoundError):
            await t.request("POST", "/api/v1/c", json={}, route="c", retry=NO_RETRY)
    snap = metrics.snapshot()
    c = snap["counters"]
    assert c["requests_total"] == 6
    assert c["requests_success"] == 4 and c["requests_failure"] == 2
    assert c["requests_total{route=a}"] == 3 and c["requests_failure{route=a}"] == 1
    assert c["requests_success{route=b}"] == 2 and "requests_failure{route=b}" not in c
    assert c["requests_failure{route=c}"] == 1
    assert c["retries_total"] == 3 and c["retries_total{route=b}"] == 3
    assert c["requests_429"] == 1
    h = snap["histograms"]["request_duration_ms"]
    assert h["count"] == 6 and 0 <= h["min"] <= h["p50"] <= h["p95"] <= h["p99"] <= h["max"]
    assert snap["histograms"]["request_duration_ms{route=b}"]["count"] == 2

    stops = [(m, md) for n, m, md in rec.seen if n == events.HTTP_STOP]
    assert [(md["route"], m["status"], m["retry_count"], m["result"]) for m, md in stops] == [
        ("a", 200, 0, "ok"),
        ("a", 200, 0, "ok"),
        ("a", 400, 0, "error"),
        ("b", 200, 2, "ok"),
        ("b", 200, 1, "ok"),
        ("c", 404, 0, "error"),
    ]
    retry_names = [n for n in rec.names() if n.startswith("retry.")]
    assert retry_names == [
        events.RETRY_RETRY,  # 503
        events.RETRY_START,
        events.RETRY_RETRY,  # 500
        events.RETRY_START,
        events.RETRY_STOP,  # 200
        events.RETRY_RETRY,  # 429
        events.RETRY_START,
        events.RETRY_STOP,
    ]
    assert rec.names().count(events.HTTP_START) == 6


async def test_a_connection_error_is_an_exception_event(rec: Recorder) -> None:
    t = make_transport("http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(errors.APIConnectionError):
        await t.request("POST", "/api/v1/x", json={}, route="x", retry=NO_RETRY)
    ((name, m, md),) = [e for e in rec.seen if e[0].startswith("http.request.e")]
    assert name == events.HTTP_EXCEPTION and md["kind"] == "APIConnectionError"
    assert m["retry_count"] == 0 and m["duration"] >= 0


def test_metric_api_validates_and_histograms_summarise() -> None:
    r = metrics.Registry(max_samples=4)
    for v in (1.0, 2.0, 3.0, 4.0, 100.0):
        r.record("lat", v)
    s = r.snapshot()["histograms"]["lat"]
    # count/min/max/mean over all samples; percentiles over the 4 most recent
    assert (s["count"], s["min"], s["max"], s["mean"]) == (5, 1.0, 100.0, 22.0)
    assert (s["p50"], s["p95"], s["p99"]) == (3.5, 100.0, 100.0)
    r.increment("n", 2, route="x")
    r.set_gauge("g", 7)
    snap = r.snapshot()
    assert snap["counters"] == {"n{route=x}": 2} and snap["gauges"] == {"g": 7}
    with pytest.raises(TypeError):
        r.increment("n", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        r.record("lat", float("nan"))
    with pytest.raises(TypeError):
        r.increment("")
    with pytest.raises(ValueError):
        metrics.Registry(max_samples=0)
    r.reset()
    assert r.snapshot() == {"counters": {}, "gauges": {}, "histograms": {}}
    assert metrics._Histogram(3).summary()["p50"] is None


# ---------------------------------------------------------------------------- futures
async def test_poll_outcomes_and_queue_state_changes(rec: Recorder, fresh_metrics: None) -> None:
    paused = {"type": "try_again", "request_id": "r1", "queue_state": "paused_capacity"}
    async with ScriptedServer() as m:
        t = make_transport(m.base)
        m.post("/api/v1/retrieve_future", payload=paused)
        m.post("/api/v1/retrieve_future", payload=paused)  # same pair: no second event
        m.post("/api/v1/retrieve_future", payload={**paused, "queue_state": "active"})
        m.post("/api/v1/retrieve_future", payload={"metrics": {"x:sum": 1.0}})
        m.post(
            "/api/v1/retrieve_future",
            payload={"error": "bad input", "category": "user", "request_id": "r2"},
        )
        out = await poll_future(t, "r1", "OptimStep", allow_metadata_only=False)
        assert out.metrics == {"x:sum": 1.0}
        with pytest.raises(errors.RequestFailedError):
            await poll_future(t, "r2", "OptimStep", allow_metadata_only=False)
    qs = [md["queue_state"] for n, _, md in rec.seen if n == events.QUEUE_STATE_CHANGE]
    assert qs == ["paused_capacity", "active"]
    (resolved,) = [(m, md) for n, m, md in rec.seen if n == events.FUTURE_RESOLVED]
    assert resolved[1] == {"request_id": "r1", "request_type": "OptimStep", "iteration": 4}
    (failed,) = [md for n, _, md in rec.seen if n == events.FUTURE_REQUEST_FAILED]
    assert failed["category"] == "user" and failed["error_type"] == "RequestFailedError"
    snap = metrics.snapshot()
    assert snap["counters"]["queue_pauses_total"] == 1
    assert snap["counters"]["queue_pauses_total{state=paused_capacity}"] == 1
    assert snap["counters"]["futures_failed_total{outcome=request_failed}"] == 1
    assert snap["histograms"]["training_step_ms{request_type=OptimStep}"]["count"] == 1


# ---------------------------------------------------------------------------- logger
async def test_attach_logger_writes_tinkex_lines(caplog: pytest.LogCaptureFixture) -> None:
    hid = telemetry.attach_logger(level="info")
    try:
        async with ScriptedServer() as m:
            t = make_transport(m.base)
            m.post("/api/v1/a", status=200, payload={})
            with caplog.at_level(logging.INFO, "tinker_actors.events"):
                await t.request("POST", "/api/v1/a", json={}, route="a")
                events.emit(
                    events.QUEUE_STATE_CHANGE,
                    {},
                    {"queue_state": "paused_rate_limit", "request_id": "r9"},
                )
        lines = [r.getMessage() for r in caplog.records if r.name == "tinker_actors.events"]
    finally:
        assert telemetry.detach(hid)
    assert lines[0] == f"HTTP POST /api/v1/a start (pool=default base={m.base})"
    assert lines[1].startswith("HTTP POST /api/v1/a ok in ")
    assert lines[1].endswith(f"ms retries=0 base={m.base}")
    assert lines[2] == "Queue state changed to paused_rate_limit (request_id=r9)"
    with pytest.raises(ValueError):
        telemetry.attach_logger(level="loud")


# ---------------------------------------------------------------------------- domain events
def test_regularizer_and_custom_loss_events(rec: Recorder, fresh_metrics: None) -> None:
    import torch

    from tinker_actors import types
    from tinker_actors.actors.training import make_custom_backward
    from tinker_actors.regularizers import Pipeline, RegularizerSpec

    lp = torch.tensor([-1.0, -2.0], requires_grad=True)

    def l2(data: Any, logprobs: Any) -> Any:
        return (logprobs**2).sum(), {}

    def broken(data: Any, logprobs: Any) -> Any:
        raise ArithmeticError("bad term")

    out = Pipeline.compute(
        None, lp, lambda d, x: (-x.sum(), {}), regularizers=[RegularizerSpec(l2, 0.5, "l2")]
    )
    assert out.loss_total == pytest.approx(3.0 + 0.5 * 5.0)
    with pytest.raises(Exception, match="bad term"):
        Pipeline.compute(
            None, lp, lambda d, x: (-x.sum(), {}), regularizers=[RegularizerSpec(broken, 1, "b")]
        )
    regs = [(n, md["name"]) for n, _, md in rec.seen if n.startswith("regularizer.")]
    assert regs == [
        (events.REGULARIZER_START, "l2"),
        (events.REGULARIZER_STOP, "l2"),
        (events.REGULARIZER_START, "b"),
        (events.REGULARIZER_EXCEPTION, "b"),
    ]
    (stop,) = [m for n, m, _ in rec.seen if n == events.REGULARIZER_STOP]
    assert stop["value"] == pytest.approx(5.0)

    datum = types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={"target_tokens": [2, 3], "weights": [1.0, 1.0]},
    )
    fwd = types.ForwardBackwardOutput(
        loss_fn_output_type="cross_entropy",
        loss_fn_outputs=[{"logprobs": types.TensorData(data=[-0.5, -1.5], dtype="float32")}],
        metrics={},
    )
    make_custom_backward([datum], lambda d, lps: (-lps[0].sum(), {}), fwd)
    with pytest.raises(ZeroDivisionError):
        make_custom_backward([datum], lambda d, lps: 1 / 0, fwd)
    cl = [(n, m) for n, m, _ in rec.seen if n.startswith("custom_loss.")]
    assert [n for n, _ in cl] == [
        events.CUSTOM_LOSS_START,
        events.CUSTOM_LOSS_STOP,
        events.CUSTOM_LOSS_START,
        events.CUSTOM_LOSS_EXCEPTION,
    ]
    assert cl[1][1]["loss"] == pytest.approx(2.0)
    snap = metrics.snapshot()["histograms"]
    assert (
        snap["custom_loss_ms"]["count"] == 1
        and snap["regularizer_ms{regularizer=l2}"]["count"] == 1
    )


# ---------------------------------------------------------------------------- end to end
def test_sampling_metrics_against_the_local_server(local_server: Any, fresh_metrics: None) -> None:
    import asyncio

    import tinker_actors as tinker
    from tests.conftest import TEST_API_KEY

    async def run() -> None:
        sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=TEST_API_KEY)
        sampler = await sc.create_sampling_client(base_model="tinker-actors/byte-1m")
        params = tinker.SamplingParams(max_tokens=4)
        prompt = tinker.ModelInput.from_ints([1, 2, 3])
        seen_in_flight: list[float] = []

        def peek(name: str, m: Any, md: Any) -> None:
            seen_in_flight.append(m["in_flight"])

        hid = events.attach(peek, events=events.SAMPLING_START)
        try:
            futs = [sampler.sample(prompt, 1, params) for _ in range(20)]
            await asyncio.gather(*(f.result_async() for f in futs))
        finally:
            events.detach(hid)
        assert max(seen_in_flight) > 1  # they really were in flight together
        await sc.aclose()

    asyncio.run(run())
    snap = metrics.snapshot()
    assert snap["gauges"]["sampling_in_flight"] == 0
    c = snap["counters"]
    assert c["requests_success{route=asample}"] == 20
    assert c["requests_total{route=asample}"] == 20
    assert "requests_failure" not in c


def test_prometheus_export_reads_the_snapshot(fresh_metrics: None) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    reg = prometheus_client.CollectorRegistry()
    metrics.export_prometheus(reg)
    metrics.increment("requests_total", 3, route="asample")
    metrics.set_gauge("sampling_in_flight", 2)
    for v in (1.0, 2.0, 3.0):
        metrics.record("request_duration_ms", v)
    assert reg.get_sample_value("tinker_actors_requests_total", {"route": "asample"}) == 3
    assert reg.get_sample_value("tinker_actors_sampling_in_flight") == 2
    assert reg.get_sample_value("tinker_actors_request_duration_ms_count") == 3
    assert reg.get_sample_value("tinker_actors_request_duration_ms_sum") == 6.0
    q = reg.get_sample_value("tinker_actors_request_duration_ms_quantile", {"quantile": "0.50"})
    assert q == 2.0
