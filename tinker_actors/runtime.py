"""One async core for every client: the event loop the actors live on, and the bridge to it.

By default one daemon thread runs a private loop for the whole process, as the official SDK
does, so blocking calls (``.result()``, the sync methods, ``with ServiceClient()``) work
anywhere, inside ``async def`` included (with the official SDK's warning). Crossing threads is
made cheap by batching: every loop has an :class:`Inbox`, and a burst of hand-offs to one loop
costs one wake-up (``call_soon_threadsafe``), not one per item; results come back to the
caller's loop the same way, completed in bulk.

``TINKER_ACTORS_LOOP=caller`` (opt-in) binds the actors to the loop of the code that creates
a client instead: no thread at all, but then a blocking call on that loop has to raise
(:class:`BlockingOnLoopError`) since the loop that must produce the result is the one blocked.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import selectors
import threading
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from .errors import BlockingOnLoopError

T = TypeVar("T")

__all__ = [
    "BlockingOnLoopError",
    "Inbox",
    "Runtime",
    "await_concurrent",
    "get_runtime",
    "loop_runtime",
    "warn_if_blocking_async",
]

LOOP_MODE_ENV = "TINKER_ACTORS_LOOP"


class _TurnSelector(selectors.DefaultSelector):
    """The runtime loop's selector: knows when the loop sleeps, and drains its inbox.

    Posting to the runtime from another thread then needs a wake-up (a self-pipe write,
    which also hands the GIL over) only while the loop sleeps in ``select``; while it is busy,
    the next turn picks the items up here. Race-free: ``idle`` is set *before* the inbox is
    checked, and a poster appends *before* it reads ``idle``, so either the loop sees the
    item (and does not sleep) or the poster sees the loop asleep (and wakes it).
    """

    inbox: Inbox | None = None
    idle = False

    def select(self, timeout: float | None = None) -> list[Any]:
        box = self.inbox
        self.idle = True
        if box is not None and box._items:
            timeout = 0
        try:
            return super().select(timeout)
        finally:
            self.idle = False
            if box is not None and box._items and not box._scheduled:
                box._scheduled = True
                box._loop.call_soon(box._drain)


class Inbox:
    """Batched hand-off of callbacks to one event loop from any thread.

    ``post`` appends and schedules a drain only when none is pending, so N posts between two
    loop turns cost one ``call_soon_threadsafe`` (one self-pipe write). The drain clears the
    flag *before* it empties the queue: an item appended after that either is drained in this
    pass or schedules the next one, so nothing is ever stranded (deque appends are atomic).
    """

    __slots__ = ("__weakref__", "_items", "_loop", "_scheduled", "_selector")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, selector: _TurnSelector | None = None
    ) -> None:
        self._loop = loop
        self._items: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._scheduled = False
        # Set for the runtime's own loop: wake it only while it sleeps (see _TurnSelector).
        self._selector = selector

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self._items.append((fn, args))
        if self._scheduled:
            return
        self._scheduled = True
        source = asyncio._get_running_loop()
        if source is self._loop:  # same loop: no wake-up needed
            self._loop.call_soon(self._drain)
        elif _daemon is not None and source is _daemon.loop:
            # From the runtime's own loop (results going back to callers): wake the target
            # once at the end of this loop turn, so every result the turn produced goes in
            # one hand-off instead of ping-ponging the GIL per result. The runtime loop never
            # stops with work queued, so the deferred wake-up always runs.
            source.call_soon(self._wake)
        elif self._selector is not None and not self._selector.idle:
            # The runtime loop is busy: its next turn drains this (_TurnSelector.select sets
            # idle before it looks at the items, so the item is seen before any sleep).
            self._scheduled = False
        else:
            self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing will run there any more
            self._scheduled = False
            self._items.clear()

    def _drain(self) -> None:
        self._scheduled = False
        items = self._items
        pop = items.popleft
        while items:
            fn, args = pop()
            try:
                fn(*args)
            except Exception as exc:  # one bad callback must not strand the rest
                self._loop.call_exception_handler(
                    {"message": "tinker_actors inbox callback failed", "exception": exc}
                )


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Inbox] = weakref.WeakKeyDictionary()


def inbox_for(loop: asyncio.AbstractEventLoop) -> Inbox:
    box = _inboxes.get(loop)
    if box is None:
        box = _inboxes.setdefault(loop, Inbox(loop))
    return box


def _copy_outcome(
    src: concurrent.futures.Future[Any] | asyncio.Future[Any],
    dst: concurrent.futures.Future[Any] | asyncio.Future[Any],
) -> None:
    """Gives ``dst`` the outcome of the finished ``src`` (either kind of future, either way),
    unless ``dst`` is already done (its side gave up: cancelled, timed out)."""
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


def await_concurrent(cf: concurrent.futures.Future[T]) -> asyncio.Future[T]:
    """An asyncio future on the running loop that completes with ``cf``.

    Like ``asyncio.wrap_future`` but completions reach the loop through its batched
    :class:`Inbox`. Cancelling the returned future does not cancel ``cf``: the operation
    behind it belongs to the runtime, not to the awaiting task.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    if cf.done():
        _copy_outcome(cf, fut)
        return fut
    box = inbox_for(loop)
    cf.add_done_callback(lambda c: box.post(_copy_outcome, c, fut))
    return fut


def warn_if_blocking_async(runtime: Runtime | None, what: str) -> None:
    """Called before a blocking wait: refuses on the runtime's own loop, warns on any other.

    The official SDK lets sync methods block inside ``async def`` code (its loop runs on its
    own thread) and logs a warning; so do we. On the runtime's own loop the wait could never
    end, so that raises instead.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if runtime is not None and loop is runtime.loop:
        runtime.check_can_block(what)
    if _daemon is not None and loop is _daemon.loop:
        _daemon.check_can_block(what)
    from .telemetry import get_logger

    logger = get_logger("tinker_actors.runtime")
    logger.warning(
        f"Synchronous method '{what}' called from async context. It blocks the event loop "
        "until the result arrives; await the future instead (`await future`, or "
        "`await future.result_async()`)."
    )
    # and where it was called from, as 0.38 logs it
    stack = "".join(traceback.format_stack()[:-2])
    logger.warning(f"===== Stack for calling sync from async =====\n{stack}\n===========")


class Runtime:
    """An event loop plus the resources bound to it (the shared aiohttp session)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, thread: threading.Thread | None = None):
        self.loop = loop
        self._thread = thread
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._users = 0
        self._guard: Any = None
        self._inbox = inbox_for(loop)

    @property
    def threaded(self) -> bool:
        """True for the process runtime on its own thread (the default mode)."""
        return self._thread is not None

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
        cf = concurrent.futures.Future()
        self._inbox.post(self._start, coro, cf)
        return cf

    def _start(self, coro: Coroutine[Any, Any, T], cf: concurrent.futures.Future[T]) -> None:
        if cf.cancelled():  # cancelled before it was started: never run it
            coro.close()
            return
        task = self.loop.create_task(coro)
        self._own(task)
        _chain_task(task, cf)
        cf.add_done_callback(lambda c: self.call_soon(task.cancel) if c.cancelled() else None)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Blocks the calling thread until ``coro`` finishes on the runtime loop."""
        if self.on_loop():
            coro.close()
            self.check_can_block()
        warn_if_blocking_async(self, "Runtime.run()")
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Any, *args: Any) -> None:
        """Thread-safe ``call_soon``."""
        if self.on_loop():
            self.loop.call_soon(fn, *args)
        else:
            self._inbox.post(fn, *args)

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
    task.add_done_callback(lambda t: _copy_outcome(t, cf))


_lock = threading.Lock()
_daemon: Runtime | None = None
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
    weakref.WeakKeyDictionary()
)


def _start_daemon() -> Runtime:
    selector = _TurnSelector()
    loop = asyncio.SelectorEventLoop(selector)
    selector.inbox = _inboxes[loop] = Inbox(loop, selector)
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


def loop_mode() -> str:
    """``thread`` (default: the process runtime on its own thread) or ``caller``."""
    mode = os.environ.get(LOOP_MODE_ENV, "thread").strip().lower() or "thread"
    if mode not in ("thread", "caller"):
        raise ValueError(f"{LOOP_MODE_ENV} must be 'thread' or 'caller', got {mode!r}")
    return mode


def loop_runtime() -> Runtime:
    """The runtime bound to the running loop (``caller`` mode's runtime, whatever the mode).

    For components driven directly on one loop: tests of the transport and actors, and
    embedders that own their loop.
    """
    loop = asyncio.get_running_loop()
    with _lock:
        if _daemon is not None and loop is _daemon.loop:
            return _daemon
        rt = _by_loop.get(loop)
        if rt is None:
            rt = _by_loop[loop] = Runtime(loop)
        return rt


def get_runtime() -> Runtime:
    """The process runtime on its daemon thread; in ``caller`` mode, the caller's loop's."""
    global _daemon
    loop: asyncio.AbstractEventLoop | None = None
    if loop_mode() == "caller":
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
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
