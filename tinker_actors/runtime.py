"""One async core for every client: the event loop the actors live on, and the sync bridge.

If a client is created inside a running event loop, its actors live on that loop (no thread
hop on the hot path). Otherwise one daemon thread runs a private loop for the whole process and
sync callers reach it through ``submit``. A *blocking* call made on the runtime's own loop
raises instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

__all__ = ["BlockingOnLoopError", "Runtime", "embedded_endpoint", "get_runtime"]


class BlockingOnLoopError(RuntimeError):
    """A blocking call was made on the loop that would have to produce its result."""


class Runtime:
    """An event loop plus the resources bound to it (the shared aiohttp session)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, thread: threading.Thread | None = None):
        self.loop = loop
        self._thread = thread
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._users = 0
        self._guard: Any = None

    # ----------------------------------------------------------------------- identity
    def on_loop(self) -> bool:
        """True when the caller runs on this runtime's loop right now."""
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def check_can_block(self, what: str = "a blocking call") -> None:
        if self.on_loop():
            raise BlockingOnLoopError(
                f"{what} was made on the event loop that must produce its result; "
                "await it (or use the *_async method) instead of blocking"
            )

    # ----------------------------------------------------------------------- bridge
    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedules ``coro`` on the runtime loop from any thread; never blocks."""
        if self.on_loop():
            cf: concurrent.futures.Future[T] = concurrent.futures.Future()
            task = self.loop.create_task(coro)
            self._own(task)
            _chain_task(task, cf)
            return cf
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the event loop this client was created on is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Blocks the calling thread until ``coro`` finishes on the runtime loop."""
        if self.on_loop():
            coro.close()
            self.check_can_block()
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Thread-safe ``call_soon``."""
        if self.on_loop():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Creates a runtime-owned task; must be called on the runtime loop."""
        task = self.loop.create_task(coro)
        self._own(task)
        return task

    def _own(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----------------------------------------------------------------------- resources
    def http(self, *, limit: int = 1000, limit_per_host: int = 0) -> aiohttp.ClientSession:
        """The one aiohttp session of this runtime (created lazily, on the loop)."""
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                limit=limit, limit_per_host=limit_per_host, enable_cleanup_closed=True
            )
            self._http = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, trust_env=False
            )
            if self._thread is None and self._guard is None:
                self._arm_close_at_loop_end()
        return self._http

    def _arm_close_at_loop_end(self) -> None:
        """A caller's loop gives no close hook, but ``asyncio.run`` (and pytest-asyncio) call
        ``shutdown_asyncgens`` before closing it: an async generator parked on the loop is
        closed there, and its ``finally`` closes the HTTP session a client forgot to close.
        """

        async def guard() -> Any:
            try:
                yield
            finally:
                await self.aclose_http()

        gen = guard()
        self._guard = gen  # the loop keeps only a weak reference

        async def arm() -> None:
            await gen.__anext__()

        self._own(self.loop.create_task(arm()))

    def acquire(self) -> None:
        """A client starts using the shared HTTP session."""
        self._users += 1

    async def release(self) -> None:
        """A client is done; the last one out closes the HTTP session (reopened on demand)."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.aclose_http()

    async def aclose_http(self) -> None:
        http, self._http = self._http, None
        if http is not None and not http.closed:
            await http.close()


def _chain_task(task: asyncio.Future[T], cf: concurrent.futures.Future[T]) -> None:
    def done(t: asyncio.Future[T]) -> None:
        if cf.done():
            return
        if t.cancelled():
            cf.cancel()
            return
        exc = t.exception()
        if exc is not None:
            cf.set_exception(exc)
        else:
            cf.set_result(t.result())

    task.add_done_callback(done)


_lock = threading.Lock()
_daemon: Runtime | None = None
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
    weakref.WeakKeyDictionary()
)


def _start_daemon() -> Runtime:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=main, name="tinker-actors-runtime", daemon=True)
    thread.start()
    ready.wait()
    rt = Runtime(loop, thread=thread)
    atexit.register(_shutdown_daemon, rt)
    return rt


def _shutdown_daemon(rt: Runtime, timeout: float = 5.0) -> None:
    """At interpreter exit: close the daemon runtime's HTTP session, then stop its loop.

    Daemon threads are frozen at exit, so without this the aiohttp session is reported as
    unclosed. Bounded, and silent if the loop is already gone.
    """
    loop = rt.loop
    if loop.is_closed() or not loop.is_running():
        return
    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(rt.aclose_http(), loop).result(timeout)
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(loop.stop)


def get_runtime() -> Runtime:
    """The runtime for the caller: its running loop if any, else the process daemon loop."""
    global _daemon
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    with _lock:
        if loop is not None:
            if _daemon is not None and loop is _daemon.loop:
                return _daemon
            rt = _by_loop.get(loop)
            if rt is None:
                rt = _by_loop[loop] = Runtime(loop)
            return rt
        if _daemon is None or _daemon.loop.is_closed():
            _daemon = _start_daemon()
        return _daemon


# ------------------------------------------------------------------------ embedded server
_embedded_lock = threading.Lock()
_embedded: Any = None


def embedded_endpoint() -> tuple[str, str]:
    """Base URL and API key of this process's embedded local server, starting it once.

    Used only when no base URL was given and ``TINKER_BASE_URL`` is unset. Blocking: call it
    off the event loop (``asyncio.to_thread``).
    """
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            from .server import LocalServer
            from .telemetry import get_logger

            server = LocalServer(engine="torch").start_in_thread()
            _embedded = server
            # A warning, so it shows with no logging configured: a user who forgot
            # TINKER_BASE_URL must not think they are training on the Tinker service.
            get_logger(__name__).warning(
                "no TINKER_BASE_URL set: started the embedded local Tinker server "
                "(set TINKER_BASE_URL to use a Tinker service)",
                base_url=server.base_url,
            )
        return _embedded.base_url, _embedded.api_key
