"""Pure retry decisions of the sampling retry handler (no loop, no sleeps)."""

from __future__ import annotations

import pytest

from tinker_actors import errors, types
from tinker_actors.actors.sampling import (
    effective_retry_config,
    is_retryable,
    no_progress_error,
    progress_expired,
    retry_delay,
)
from tinker_actors.config import RetryConfig

CFG = RetryConfig()


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError(),
        errors.APIConnectionError("reset"),
        errors.APITimeoutError(),
        errors.PromiseExpiredError("410"),
        errors.status_error_for(408),
        errors.status_error_for(409),
        errors.status_error_for(429),
        errors.status_error_for(500),
        errors.status_error_for(503),
    ],
)
def test_retryable(exc):
    assert is_retryable(exc, CFG)


@pytest.mark.parametrize(
    "exc",
    [
        errors.RequestFailedError("bad prompt", "req-1", "user"),
        errors.status_error_for(400),
        errors.status_error_for(401),
        errors.status_error_for(404),
        errors.status_error_for(422),
        ValueError("fatal 4xx from the poll loop"),
        RuntimeError("server predates prompt_alt_tokens"),
    ],
)
def test_not_retryable(exc):
    assert not is_retryable(exc, CFG)


def test_request_failed_is_never_retried_even_if_configured():
    cfg = RetryConfig(retryable_exceptions=(Exception,))
    assert not is_retryable(errors.RequestFailedError("x", "r", "server"), cfg)
    assert is_retryable(ValueError("now configured"), cfg)


def test_retry_delay_doubles_and_caps_without_jitter():
    mid = 0.5  # rand=0.5 -> zero jitter
    assert [retry_delay(n, CFG, mid) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry_delay(10_000, CFG, mid) == 10.0  # no overflow


def test_retry_delay_jitter_is_symmetric_25_percent_and_clamped():
    assert retry_delay(2, CFG, 0.0) == pytest.approx(2.0 * 0.75)
    assert retry_delay(2, CFG, 0.999999) == pytest.approx(2.0 * 1.25, rel=1e-5)
    assert retry_delay(6, CFG, 0.999999) == 10.0  # jitter never exceeds the max


def test_progress_timeout_decision():
    assert not progress_expired(now=100.0, last_progress=0.0, timeout=200.0, in_flight=5)
    assert progress_expired(now=201.0, last_progress=0.0, timeout=200.0, in_flight=5)
    assert not progress_expired(now=10_000.0, last_progress=0.0, timeout=200.0, in_flight=0)
    err = no_progress_error(7200)
    assert isinstance(err, errors.APIConnectionError)
    assert "No progress made in 7200s. Requests appear to be stuck." in str(err)


def test_server_limits_override_the_callers_config():
    server = types.ClientConfigResponse(
        sample_max_concurrent_requests=77, sample_enable_stuck_detection=False
    )
    cfg = effective_retry_config(RetryConfig(max_connections=5, progress_timeout=3.0), server)
    assert cfg.max_connections == 77
    assert not cfg.enable_stuck_detection
    assert cfg.progress_timeout == 3.0
    assert effective_retry_config(None, types.ClientConfigResponse()).max_connections == 2000
