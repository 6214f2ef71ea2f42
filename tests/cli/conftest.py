"""CLI fixtures: one real local server per module, seeded with runs and checkpoints, and
runners that invoke the official ``tinker`` CLI and ``tinker-actors`` in-process.

Both CLIs read TINKER_BASE_URL / TINKER_API_KEY at call time; the runners set them for the
duration of one invocation (click's ``CliRunner(env=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import TEST_API_KEY

MODEL = "tinker-actors/byte-1m"


@dataclass
class Seeded:
    server: Any
    runs: list[str]  # training run ids, oldest first
    state_paths: list[str]  # tinker://.../weights/... (training state)
    sampler_paths: list[str]  # tinker://.../sampler_weights/...

    @property
    def env(self) -> dict[str, str]:
        return {
            "TINKER_BASE_URL": self.server.base_url,
            "TINKER_API_KEY": self.server.api_key,
            "COLUMNS": "250",  # rich tables of the official CLI: no wrapped headers
            "NO_COLOR": "1",
            "TINKER_TELEMETRY": "0",
        }


def start_server(data_dir: Any, engine: str = "null") -> Any:
    from tinker_actors.server import LocalServer

    return LocalServer(
        port=0, data_dir=data_dir, engine=engine, long_poll_s=2.0, api_key=TEST_API_KEY
    ).start_in_thread()


def seed(server: Any, runs: int = 2, states: int = 2, samplers: int = 1) -> Seeded:
    """``runs`` LoRA runs, each with ``states`` save_state and ``samplers`` sampler checkpoints."""
    import tinker_actors as tinker

    out = Seeded(server, [], [], [])
    sc = tinker.ServiceClient(base_url=server.base_url, api_key=server.api_key)
    try:
        for r in range(runs):
            tc = sc.create_lora_training_client(MODEL, rank=4 + r).result()
            out.runs.append(tc.model_id)
            for i in range(states):
                out.state_paths.append(tc.save_state(f"state-{i}").result().path)
            for i in range(samplers):
                out.sampler_paths.append(tc.save_weights_for_sampler(f"sampler-{i}").result().path)
    finally:
        sc.close().result()
    return out


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    server = start_server(tmp_path_factory.mktemp("cli-server"))
    try:
        yield seed(server)
    finally:
        server.stop_in_thread()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_ours(args: list[str], env: dict[str, str], input: str | None = None) -> Result:
    from tinker_actors.cli import cli

    r = CliRunner().invoke(cli, args, env=env, input=input, catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


def run_official(args: list[str], env: dict[str, str], input: str | None = None) -> Result:
    from tinker.cli.__main__ import main_cli

    # The official entry point turns TinkerCliError into "Error: ..." + exit 1 outside click;
    # do the same here so both CLIs are compared on what a shell sees.
    from tinker.cli.exceptions import TinkerCliError

    # A real CLI run is a fresh process. In-process, the official SDK keeps one session-less
    # holder per (base_url, api_key) argument pair for the life of the process, and RestClient()
    # passes (None, None): a holder made for an earlier test server would serve every later
    # one. Close and forget them, as a new process would (closed, so their pooled connections
    # do not leak as ResourceWarnings).
    from tinker.lib.internal_client_holder import sessionless_holder_cache

    with sessionless_holder_cache._lock:
        holders = list(sessionless_holder_cache._holders.values())
        sessionless_holder_cache._holders.clear()
    for holder in holders:
        holder.run_coroutine_threadsafe(holder.aclose()).result(timeout=30)
    runner = CliRunner()
    try:
        r = runner.invoke(main_cli, args, env=env, input=input, catch_exceptions=True)
    except TinkerCliError as exc:  # pragma: no cover - CliRunner catches it
        return Result(exc.exit_code, "", f"Error: {exc.message}\n")
    if isinstance(r.exception, TinkerCliError):
        e = r.exception
        err = f"Error: {e.message}\n" + (f"{e.details}\n" if e.details else "")
        return Result(e.exit_code, r.stdout, r.stderr + err)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


_BOX = re.compile(r"[┃│|]")


def table_columns(text: str) -> list[str]:
    """Column headers of a table: a rich table (official) or a tab-separated one (ours)."""
    for line in text.splitlines():
        if "\t" in line:
            return [c.strip() for c in line.split("\t")]
        if line.startswith(("┃", "│")) and _BOX.search(line[1:]):
            return [c.strip() for c in _BOX.split(line)[1:-1]]
    return []
