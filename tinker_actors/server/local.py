"""``LocalServer``: the embedded server in-process, for tests, examples and the client default.

Async use: ``async with LocalServer(port=0, data_dir=tmp) as srv: ... srv.base_url``.
Sync use: ``srv = LocalServer(...).start_in_thread()`` runs it on its own daemon loop thread
and returns once it accepts connections; ``srv.stop_in_thread()`` (or ``with``) stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from tinker_actors.server.app import STATS_KEY, build_app
from tinker_actors.server.config import ServerConfig, api_key_from_env, default_data_dir
from tinker_actors.server.engine.base import Engine
from tinker_actors.server.service import Service
from tinker_actors.server.users import load_keys_file
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server")


class DataDirInUse(RuntimeError):
    """Another running local server holds this data directory."""


def _lock_data_dir(path: Path) -> Any:
    """An exclusive, process-lifetime lock on ``path`` (POSIX flock; a no-op elsewhere).

    Two servers on one data dir would each fail the other's pending futures at start-up.
    """
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    handle = open(path / "server.lock", "a+")  # held until stop()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DataDirInUse(f"{path} is in use by another running local server") from None
    return handle


def make_engine(name: str, *, device: str = "cpu", data_dir: Path | None = None) -> Engine:
    """``torch`` (real training and sampling) or ``null`` (the benchmark engine)."""
    if name == "null":
        from tinker_actors.server.engine.null import NullEngine

        return NullEngine()
    if name == "torch":
        try:
            from tinker_actors.server.engine.torch_engine import TorchEngine
        except ImportError as exc:
            raise RuntimeError(
                "the torch engine needs the [local] extra: pip install 'tinker-actors[local]'"
                f" ({exc})"
            ) from exc
        cache = data_dir / "engine" if data_dir is not None else None
        return TorchEngine(device=device, cache_dir=cache)
    raise ValueError(f"unknown engine {name!r}: expected 'torch' or 'null'")


class LocalServer:
    """The Tinker-compatible local server, started and stopped in-process."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: str | Path | None = None,
        api_key: str | None = None,
        api_keys: Mapping[str, str] | str | Path | None = None,
        engine: str | Engine = "torch",
        device: str = "cpu",
        access_log: bool = False,
        **settings: Any,
    ) -> None:
        """``settings`` are further :class:`ServerConfig` fields (e.g. ``long_poll_s``).

        ``api_keys`` (key -> user, or the path of a keys file, see ``users.load_keys_file``)
        serves several users, each seeing only their own resources; with it and no
        ``api_key``, only the listed keys are accepted.
        """
        if isinstance(api_keys, str | Path):
            api_keys = load_keys_file(api_keys)
        if api_key is None:
            api_key = "" if api_keys else api_key_from_env()
        self._engine_arg = engine
        self._explicit_dir = data_dir is not None
        self._lock: Any = None
        self.config = ServerConfig(
            host=host,
            port=port,
            data_dir=Path(data_dir) if data_dir is not None else default_data_dir(),
            api_key=api_key,
            api_keys=dict(api_keys) if api_keys else None,
            engine=engine if isinstance(engine, str) else getattr(engine, "name", "custom"),
            device=device,
            **settings,
        )
        self._access_log = access_log
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self.service: Service | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # properties --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LocalServer is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The single key, or (keys file only) the first listed key."""
        return self.config.api_key or next(iter(self.config.api_keys or {}), "")

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def engine(self) -> Engine:
        if self.service is None:
            raise RuntimeError("LocalServer is not started")
        return self.service.engine

    def stats(self) -> dict[str, Any]:
        """Request counts per manifest route name since start (see ``stats.RequestStats``).

        A snapshot of plain dicts, safe to call from any thread.
        """
        if self._app is None:
            raise RuntimeError("LocalServer is not started")
        return self._app[STATS_KEY].snapshot()

    def model_counters(self) -> dict[str, dict[str, int]]:
        """Per loaded model, the engine's ``optimizer_steps`` (applied with gradients) and
        ``pending_gradients``: the server's ground truth of what training did."""
        if self.service is None:
            raise RuntimeError("LocalServer is not started")
        return self.service.training.counters()

    # async lifecycle ---------------------------------------------------------------------
    async def start(self) -> Self:
        if self._runner is not None:
            return self
        loop = asyncio.get_running_loop()
        self._claim_data_dir()
        engine = self._engine_arg
        if isinstance(engine, str):
            # importing torch and building models takes a while: keep the loop free
            name = engine
            engine = await loop.run_in_executor(
                None,
                lambda: make_engine(name, device=self.config.device, data_dir=self.config.data_dir),
            )
        self.service = Service(self.config, engine)
        self.service.start()
        app = self._app = build_app(self.service, access_log=self._access_log)
        # Long polls must not hold a stop for their full hold time.
        runner = web.AppRunner(app, shutdown_timeout=1.0, auto_decompress=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self.service.close()
            self._release_data_dir()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        if not self.service.public_base_url:
            self.service.public_base_url = self.base_url
        log.info(
            "local_server_started",
            base_url=self.base_url,
            engine=engine.name,
            benchmark_engine=bool(getattr(engine, "benchmark", False)),
            data_dir=str(self.config.data_dir),
        )
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        if self.service is not None:
            await self.service.close()
        self._release_data_dir()

    async def serve_until_signalled(self) -> None:
        """Serves until SIGINT or SIGTERM, then stops (saving live models): for server apps."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await self.stop()

    def _claim_data_dir(self) -> None:
        """Locks the data dir; the default one falls back to ``server-2``, ``server-3``, ..."""
        base = self.config.data_dir
        candidates = (
            [base]
            if self._explicit_dir
            else [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 17)]
        )
        for path in candidates:
            try:
                self._lock = _lock_data_dir(path)
            except DataDirInUse:
                if path is candidates[-1]:
                    raise
                continue
            if path != base:
                self.config = dataclasses.replace(self.config, data_dir=path)
                log.info("default_data_dir_in_use", using=str(path))
            return

    def _release_data_dir(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # background thread -------------------------------------------------------------------
    def start_in_thread(self, timeout: float = 120.0) -> Self:
        """Runs the server on a daemon thread with its own event loop; returns when ready."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.stop())
                loop.close()

        self._thread = threading.Thread(target=main, name="tinker-actors-local-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"LocalServer did not start within {timeout} s")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop_in_thread(self, timeout: float = 30.0) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop_in_thread()
