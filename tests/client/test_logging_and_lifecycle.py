"""Library logging (no configuration, warnings only by default, no secrets) and actor stop."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from tinker_actors.actors.actor import Actor, ActorState
from tinker_actors.telemetry import get_logger

SCRIPT = """
import structlog
from tinker_actors.telemetry import get_logger
log = get_logger("tinker_actors.demo")
log.debug("debug line", n=1)
log.info("info line", n=2)
log.warning("warning line", api_key="tml-supersecret123", note="jwt eyJhbGc.eyJzdWIi.c2ln here")
assert not structlog.is_configured()
"""


def run_clean(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TINKER_LOG"} | env_extra
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )


def test_structlog_is_imported_by_the_first_log_call_not_by_the_client() -> None:
    """structlog brings rich and pygments when installed (~40 ms, ~6,000 objects every full
    garbage collection walks): a client that logs nothing does not import it."""
    script = (
        "import sys\n"
        "import tinker_actors, tinker_actors.clients.service, tinker_actors.actors.sampling\n"
        "from tinker_actors.telemetry import get_logger\n"
        "log = get_logger('tinker_actors.x')\n"
        "assert 'structlog' not in sys.modules\n"
        "log.warning('first line')\n"
        "assert 'structlog' in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TINKER_LOG"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "first line" in out.stderr


def test_unconfigured_user_sees_only_warnings_on_stderr_and_no_secrets() -> None:
    out = run_clean({})
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert "warning line" in out.stderr
    assert "info line" not in out.stderr and "debug line" not in out.stderr
    assert "tml-supersecret123" not in out.stderr and "eyJzdWIi" not in out.stderr
    assert "[redacted]" in out.stderr


def test_tinker_log_debug_shows_debug_lines() -> None:
    out = run_clean({"TINKER_LOG": "debug"})
    assert out.returncode == 0, out.stderr
    assert "debug line" in out.stderr and "info line" in out.stderr


def test_redaction_processor_on_caplog(caplog: Any) -> None:
    log = get_logger("tinker_actors.test")
    with caplog.at_level(logging.INFO, logger="tinker_actors"):
        log.info(
            "request failed",
            headers={"X-API-Key": "tml-abcdef12345", "Accept": "application/json"},
            error="401 for key tml-abcdef12345",
            jwt="eyJ0eXAi.eyJleHAi.sig",
        )
    msg = caplog.records[-1].getMessage()
    assert "tml-abcdef12345" not in msg and "eyJ0eXAi" not in msg
    assert "application/json" in msg and "request failed" in msg


# ---------------------------------------------------------------------------- actor stop
class Sleeper(Actor):

    def __init__(self) -> None:
        super().__init__()
        self.exits: list[BaseException | None] = []
        self.ran = False

    async def main(self) -> None:
        self.ran = True
        await asyncio.Event().wait()

    def on_exit(self, reason: BaseException | None) -> None:
        self.exits.append(reason)


async def test_actor_stopped_before_its_first_step() -> None:
    a = Sleeper()
    exits: list[Any] = []
    a.link(lambda actor, reason: exits.append(reason))
    await a.start()
    await a.stop()  # its task never ran a step: no CancelledError may escape
    assert not a.ran
    assert a.state is ActorState.STOPPED
    assert a.exits == [None] and exits == [None]
    await a.stop()  # idempotent
    assert a.exits == [None]


async def test_actor_stopped_from_another_task_in_the_same_tick() -> None:
    a = Sleeper()
    await a.start()
    stopper = asyncio.get_running_loop().create_task(a.stop())
    await asyncio.wait_for(stopper, 5)
    assert a.state is ActorState.STOPPED and a.exits == [None]


async def test_killed_before_its_first_step_is_a_crash_with_on_exit() -> None:
    a = Sleeper()
    await a.start()
    a.kill(RuntimeError("boom"))
    await asyncio.wait({a._task}, timeout=5)
    assert a.state is ActorState.CRASHED
    assert len(a.exits) == 1 and isinstance(a.exits[0], RuntimeError)


@pytest.mark.parametrize("stop_twice", [False, True])
async def test_sampling_actor_stop_before_first_step(stop_twice: bool) -> None:
    from tinker_actors.actors.sampling import SamplingActor
    from tinker_actors.actors.session import Session
    from tinker_actors.config import Settings
    from tinker_actors.runtime import loop_runtime

    s = Session(Settings(base_url="http://127.0.0.1:9", api_key="tml-x"), runtime=loop_runtime())
    a = SamplingActor(s, sampling_session_id="x")
    await a.start()
    if stop_twice:
        await asyncio.gather(a.stop(), a.stop())
    else:
        await a.stop()
    assert a.state is ActorState.STOPPED
