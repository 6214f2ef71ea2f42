"""The actor base: a mailbox, one run loop, a task group and an explicit lifecycle.

``NEW -> RUNNING -> STOPPING -> STOPPED`` or ``CRASHED``. A stopped or crashed actor never
restarts in place; its supervisor builds a new instance.

Structured concurrency: ``main`` runs inside the actor's ``asyncio.TaskGroup``, and every task
the actor starts (``spawn``) belongs to that group. A task that fails crashes the actor (the
group cancels the rest); stopping or killing the actor cancels the group, and ``main``
returning cancels what it spawned. Cancellation is
never swallowed: a cancelled actor's task ends cancelled, and the exit reason says whether
that was a stop (None), a kill (its reason) or the loop shutting down (``cancelled_externally``).

The mailbox (``Mailbox``) is the actor's address, not part of one instance: callers put
messages from any thread, and a restarted actor reads on where its predecessor stopped (as a
restarted Akka actor keeps its mailbox).
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from ..errors import ActorDeadError, ActorKilled, MailboxFullError
from ..telemetry import get_logger
from ..transport import context_without_sdk_method

__all__ = [
    "Actor",
    "ActorDeadError",
    "ActorKilled",
    "ActorState",
    "Mailbox",
    "MailboxFullError",
    "shielded_cleanup",
]

log = get_logger(__name__)
_ids = itertools.count(1)

M = TypeVar("M")


class ActorState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


class Mailbox(Generic[M]):
    """A thread-safe FIFO of messages for the actors of one address, read on one loop.

    ``put`` is safe from any thread and never blocks: the order of ``put`` calls is the order
    the actor reads them (callers that need an order, like training seq ids, rely on it).
    A burst of puts costs one wake-up of the reader (``post`` is the loop's thread-safe
    ``call_soon``). ``take`` returns everything queued at once, so the reader can batch.
    A closed mailbox refuses new messages with ``ActorDeadError``.
    """

    __slots__ = ("_capacity", "_closed", "_items", "_lock", "_post", "_waiter", "_waking", "name")

    def __init__(
        self, post: Callable[..., object], *, name: str = "mailbox", capacity: int | None = None
    ) -> None:
        self.name = name
        self._post = post
        self._capacity = capacity
        self._items: deque[M] = deque()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._waking = False
        self._closed: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def put(self, msg: M) -> None:
        """Appends ``msg``; from any thread."""
        with self._lock:
            if self._closed is not None:
                raise ActorDeadError(f"{self.name} is closed: {self._closed}")
            if self._capacity is not None and len(self._items) >= self._capacity:
                raise MailboxFullError(f"{self.name} holds {self._capacity} messages")
            self._items.append(msg)
            wake = self._waiter is not None and not self._waking
            if wake:
                self._waking = True
        if wake:
            self._post(self._wake)

    def _wake(self) -> None:
        with self._lock:
            waiter, self._waiter, self._waking = self._waiter, None, False
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[M]:
        """Everything queued now, in order (possibly nothing); on the reader's loop."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    async def get(self) -> list[M]:
        """Waits for at least one message, then returns everything queued, in order."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    return items
                if self._closed is not None:
                    raise ActorDeadError(f"{self.name} is closed")
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter

    def close(self, reason: BaseException | None = None) -> list[M]:
        """Refuses further messages; returns those never read (for the owner to answer)."""
        with self._lock:
            self._closed = reason or ActorDeadError(f"{self.name} closed")
            items = list(self._items)
            self._items.clear()
            waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            self._post(_cancel_if_pending, waiter)
        return items


def _cancel_if_pending(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.cancel()


async def shielded_cleanup(coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Runs cleanup to completion even while being cancelled, but never longer than timeout."""
    task = asyncio.ensure_future(coro)
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        log.warning("cleanup timed out", timeout=timeout)


class Actor:
    """Subclass and override ``main`` (and the ``on_*`` hooks)."""

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or f"{type(self).__name__}-{next(_ids)}"
        self.state = ActorState.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._spawned: set[asyncio.Task[Any]] = set()
        self._exit_reason: BaseException | None = None
        self._exit_listeners: list[Callable[[Actor, BaseException | None], None]] = []
        self._kill_reason: BaseException | None = None
        self.cancelled_externally = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "actor not started"
        return self._loop

    @property
    def exit_reason(self) -> BaseException | None:
        return self._exit_reason

    def link(self, listener: Callable[[Actor, BaseException | None], None]) -> None:
        """``listener(actor, reason)`` runs once on exit; reason None means a normal stop."""
        self._exit_listeners.append(listener)

    async def start(self) -> None:
        if self.state is not ActorState.NEW:
            raise RuntimeError(f"{self.name} cannot start from state {self.state.value}")
        self._loop = asyncio.get_running_loop()
        await self.on_start()
        self.state = ActorState.RUNNING
        # An actor outlives the call that started it: its requests are not that call's.
        self._task = self._loop.create_task(
            self._run(), name=self.name, context=context_without_sdk_method()
        )
        self._task.add_done_callback(self._task_done)

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            await self.main()
            for task in self._spawned:  # main is done, so is the work it started
                task.cancel()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        reason: BaseException | None
        if task.cancelled():
            reason = self._kill_reason
            if reason is None and self.state is ActorState.RUNNING:
                # cancelled by its owner (the event loop shutting down): not a crash, and
                # nothing a supervisor should restart
                self.cancelled_externally = True
        else:
            reason = _first_error(task.exception())
        self._finish(reason)

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Cancels the actor's work and waits for it, at most ``timeout`` seconds."""
        if self.state in (ActorState.STOPPED, ActorState.CRASHED):
            return
        if self.state is ActorState.NEW or self._task is None:
            self._finish(None)
            return
        self.state = ActorState.STOPPING
        task = self._task
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            log.warning("actor did not stop in time", actor=self.name, timeout=timeout)

    def kill(self, reason: BaseException | None = None) -> None:
        """Crashes the actor from outside (thread-safe); its supervisor sees ``reason``."""
        reason = reason or ActorKilled(f"{self.name} killed")

        def do() -> None:
            if self._task is not None and not self._task.done():
                self._kill_reason = reason
                self._task.cancel()

        if self._loop is None:
            return
        if self._caller_on_loop():
            do()
        else:
            self._loop.call_soon_threadsafe(do)

    def _caller_on_loop(self) -> bool:
        """True when the caller runs on the actor's (started) loop right now."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    # ------------------------------------------------------------------ owned tasks
    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Starts a task in the actor's group: its failure crashes the actor."""
        if self._group is None:
            coro.close()
            raise ActorDeadError(f"{self.name} is not running")
        task = self._group.create_task(coro, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def _finish(self, reason: BaseException | None) -> None:
        if self.state in (ActorState.STOPPED, ActorState.CRASHED):
            return
        self.state = ActorState.CRASHED if reason is not None else ActorState.STOPPED
        self._exit_reason = reason
        self._group = None
        if reason is not None:
            log.warning("actor crashed", actor=self.name, reason=repr(reason))
        try:
            self.on_exit(reason)
        except Exception as exc:
            log.warning("on_exit failed", actor=self.name, error=repr(exc))
        for listener in self._exit_listeners:
            try:
                listener(self, reason)
            except Exception as exc:
                log.warning("exit listener failed", actor=self.name, error=repr(exc))

    # ------------------------------------------------------------------ hooks
    async def on_start(self) -> None:
        """Runs before ``main`` (awaited by ``start``): keep it short, it holds up the caller."""

    async def main(self) -> None:
        """The actor's body, inside its task group; returning stops the actor normally."""
        raise NotImplementedError

    def on_exit(self, reason: BaseException | None) -> None:
        """Runs once, synchronously, when the actor stops or crashes."""


def _first_error(exc: BaseException | None) -> BaseException | None:
    """The exception a crash is reported with: a task group's first failure, unwrapped."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        rest = exc.exceptions[1:]
        if rest:
            log.warning("actor had more failures", errors=[repr(e) for e in rest])
        exc = exc.exceptions[0]
    return exc
