"""Retry budgets by time: what the transport does for ordered training requests.

A scripted server on port 0 plays the statuses; sleeps run on a virtual clock, so a 10-minute
budget costs milliseconds and every wait is checked exactly.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest
from client.scripted import ScriptedServer, VirtualTime

from tinker_actors import errors
from tinker_actors.config import Settings
from tinker_actors.runtime import get_runtime
from tinker_actors.transport import (
    STANDARD,
    TRAINING,
    TRAINING_RETRY_BUDGET,
    RetryPolicy,
    Transport,
)

KEY = "tml-retry-budget-key-1234"
OPTIM = "/api/v1/optim_step"


def transport(base: str, vt: VirtualTime) -> Transport:
    return Transport(
        get_runtime(), Settings(base_url=base, api_key=KEY), sleep=vt.sleep, clock=vt.clock
    )


async def test_training_budget_is_at_least_the_official_sdks() -> None:
    # the official SDK retries a training submit for 300 s (plus one inner retry series)
    assert TRAINING_RETRY_BUDGET >= 360
    assert TRAINING.max_attempts is None and TRAINING.max_total == TRAINING_RETRY_BUDGET
    assert {408, 409, 429} <= TRAINING.retry_statuses and TRAINING.retry_5xx


async def test_ten_429s_at_once_wait_them_out_where_a_count_budget_gives_up() -> None:
    vt = VirtualTime()
    async with ScriptedServer() as m:
        for _ in range(10):
            m.post(OPTIM, status=429, headers={"Retry-After": "1"})
        m.post(OPTIM, payload={"request_id": "r1"})
        r = await transport(m.base, vt).request("POST", OPTIM, json={}, retry=TRAINING)
    assert r.json() == {"request_id": "r1"}
    assert vt.sleeps == [1.0] * 10  # Retry-After honoured each time

    vt = VirtualTime()
    async with ScriptedServer() as m:
        for _ in range(10):
            m.post(OPTIM, status=429, headers={"Retry-After": "1"})
        with pytest.raises(errors.RateLimitError) as ei:
            await transport(m.base, vt).request("POST", OPTIM, json={}, retry=STANDARD)
        assert len(m.seen(OPTIM)) == 6
    assert ei.value.retry_attempts == 6  # type: ignore[attr-defined]
    assert "gave up after 6 attempts over 5.0 s" in "".join(ei.value.__notes__)


async def test_a_503_outage_is_retried_for_the_whole_budget_then_says_how_long() -> None:
    vt = VirtualTime()
    async with ScriptedServer() as m:
        m.default("POST", OPTIM, status=503, payload={"detail": "down"})
        with pytest.raises(errors.InternalServerError) as ei:
            await transport(m.base, vt).request("POST", OPTIM, json={}, retry=TRAINING)
        attempts = len(m.seen(OPTIM))
    err = ei.value
    # the last wait is cut so the last attempt starts exactly when the budget ends
    assert sum(vt.sleeps) == pytest.approx(TRAINING_RETRY_BUDGET)
    assert max(vt.sleeps) <= TRAINING.max_delay
    assert err.retry_attempts == attempts > 20  # type: ignore[attr-defined]
    assert err.retry_elapsed == pytest.approx(TRAINING_RETRY_BUDGET)  # type: ignore[attr-defined]
    assert f"over {TRAINING_RETRY_BUDGET:.1f} s" in "".join(err.__notes__)


async def test_a_long_retry_after_is_cut_to_the_budget() -> None:
    vt = VirtualTime()
    policy = TRAINING.with_budget(2.0)
    async with ScriptedServer() as m:
        m.default("POST", OPTIM, status=429, headers={"Retry-After": "1.5"})
        with pytest.raises(errors.RateLimitError):
            await transport(m.base, vt).request("POST", OPTIM, json={}, retry=policy)
        assert len(m.seen(OPTIM)) == 3
    assert vt.sleeps == [1.5, 0.5]


async def test_connection_errors_are_retried_for_the_budget() -> None:
    vt = VirtualTime()
    t = transport("http://127.0.0.1:9", vt)  # discard port: nothing listens
    with pytest.raises(errors.APIConnectionError) as ei:
        await t.request("POST", OPTIM, json={}, retry=TRAINING.with_budget(30.0))
    assert sum(vt.sleeps) == pytest.approx(30.0)
    assert ei.value.retry_attempts > 5  # type: ignore[attr-defined]


async def test_progress_is_logged_after_a_grace_then_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vt = VirtualTime()
    logged_at: list[float] = []

    class At(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "still failing" in record.getMessage():
                logged_at.append(vt.now)

    handler = At()
    logging.getLogger("tinker_actors.transport").addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, logger="tinker_actors.transport"):
            async with ScriptedServer() as m:
                m.default("POST", OPTIM, status=503)
                with pytest.raises(errors.InternalServerError):
                    await transport(m.base, vt).call(
                        "optim_step",
                        b"{}",
                        retry=TRAINING.with_budget(300.0),
                        sdk_method="TrainingClient.optim_step",
                        log_context={"model_id": "m-1"},
                    )
    finally:
        logging.getLogger("tinker_actors.transport").removeHandler(handler)
    assert TRAINING.progress_after is not None
    assert TRAINING.progress_after <= logged_at[0] < TRAINING.progress_after + TRAINING.max_delay
    gaps = [b - a for a, b in itertools.pairwise(logged_at)]
    assert all(g >= TRAINING.progress_interval for g in gaps)
    assert 4 <= len(logged_at) <= 5  # 300 s: about one a minute
    text = caplog.text
    assert "POST" in text and OPTIM in text and "m-1" in text and "503" in text
    assert KEY not in text


async def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2.0)
    assert RetryPolicy(max_attempts=None).with_budget(5.0).max_total == 5.0


@pytest.fixture(autouse=True)
async def _close_loop_http() -> Any:
    yield
    await get_runtime().aclose_http()
