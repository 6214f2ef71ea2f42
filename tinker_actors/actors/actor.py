"""The actor base: a mailbox, one run loop, owned tasks and an explicit lifecycle.

``NEW -> RUNNING -> STOPPING -> STOPPED`` or ``CRASHED``. A stopped or crashed actor never
restarts in place; its supervisor builds a new instance. Every task an actor starts is owned
by it (``spawn``): an exception in one crashes the actor, and stopping cancels them all.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import ActorDeadError, ActorKilled, MailboxFullError
from ..telemetry import get_logger
from ..transport import context_without_sdk_method

__all__ = [
    "Actor",
    "ActorDeadError",
    "ActorKilled",
    "ActorState",
    "MailboxFullError",
    "shielded_cleanup",
]

log = get_logger(__name__)
_ids = itertools.count(1)


class ActorState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"



_STOP = object()


class _Envelope:
    __slots__ = ("msg", "reply")

    def __init__(self, msg: Any, reply: asyncio.Future[Any] | None):
        self.msg = msg
        self.reply = reply


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
    """Subclass and override ``handle`` (and the ``on_*`` hooks)."""

    mailbox_size: int = 10_000
    #: False for actors whose ``main`` does not read the mailbox: ``stop`` cancels them.
    uses_mailbox: bool = True

    def __init__(self, *, name: str | None = None, loop: asyncio.AbstractEventLoop | None = None):
        self.name = name or f"{type(self).__name__}-{next(_ids)}"
        self.state = ActorState.NEW
        self._loop = loop
        self._mailbox: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._children: set[asyncio.Task[Any]] = set()
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
        self._mailbox = asyncio.Queue(self.mailbox_size)
        await self.on_start()
        self.state = ActorState.RUNNING
        # An actor outlives the call that started it: its requests are not that call's.
        self._task = self._loop.create_task(
            self._run(), name=self.name, context=context_without_sdk_method()
        )
        self._task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # a task cancelled before its first step never ran _run's handlers
        if self.state in (ActorState.RUNNING, ActorState.STOPPING):
            if self._kill_reason is None and self.state is ActorState.RUNNING:
                self.cancelled_externally = True
            self._finish_with(self._kill_reason)

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Asks the actor to finish its mailbox and stop; waits at most ``timeout``."""
        if self.state in (ActorState.STOPPED, ActorState.CRASHED):
            return
        if self.state is ActorState.NEW:
            self._finish(None)
            return
        self.state = ActorState.STOPPING
        assert self._mailbox is not None and self._task is not None
        if self.uses_mailbox and not self._mailbox.full():
            self._mailbox.put_nowait(_STOP)
        else:
            self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})
        if self.state is ActorState.STOPPING:  # cancelled before its first step
            self._finish_with(None)

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

    # ------------------------------------------------------------------ messaging
    def tell_nowait(self, msg: Any) -> None:
        """Enqueues without a reply; safe from any thread."""
        self._put(_Envelope(msg, None))

    async def ask(self, msg: Any) -> Any:
        """Enqueues and awaits the handler's return value (on the actor's loop)."""
        reply: asyncio.Future[Any] = self.loop.create_future()
        self._put(_Envelope(msg, reply))
        return await reply

    def _put(self, env: Any) -> None:
        if self.state not in (ActorState.RUNNING, ActorState.NEW) or self._mailbox is None:
            raise ActorDeadError(f"{self.name} is {self.state.value}")
        mailbox = self._mailbox
        if self._caller_on_loop():
            try:
                mailbox.put_nowait(env)
            except asyncio.QueueFull:
                raise MailboxFullError(self.name) from None
        else:
            if mailbox.full():
                raise MailboxFullError(self.name)
            self.loop.call_soon_threadsafe(mailbox.put_nowait, env)

    # ------------------------------------------------------------------ owned tasks
    def spawn(
        self, coro: Coroutine[Any, Any, Any], *, name: str | None = None
    ) -> asyncio.Task[Any]:
        """Starts a task owned by this actor; its failure crashes the actor."""
        task = self.loop.create_task(coro, name=name)
        self._children.add(task)
        task.add_done_callback(self._child_done)
        return task

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._children.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.state is ActorState.RUNNING:
            self.kill(exc)

    # ------------------------------------------------------------------ run loop
    async def _run(self) -> None:
        reason: BaseException | None = None
        try:
            await self.main()
        except asyncio.CancelledError:
            if self._kill_reason is None and self.state is ActorState.STOPPING:
                self._finish_with(None)
                return
            if self._kill_reason is None:
                # cancelled by its owner (e.g. the event loop shutting down): not a crash,
                # and not something a supervisor should restart
                self.cancelled_externally = True
                self._finish_with(None)
                raise
            reason = self._kill_reason
        except BaseException as exc:
            reason = exc
        self._finish_with(reason)

    def _finish_with(self, reason: BaseException | None) -> None:
        if self.state in (ActorState.STOPPED, ActorState.CRASHED):
            return
        for t in list(self._children):
            t.cancel()
        if reason is not None:
            log.warning("actor crashed", actor=self.name, reason=repr(reason))
        self._finish(reason)

    def _finish(self, reason: BaseException | None) -> None:
        self.state = ActorState.CRASHED if reason is not None else ActorState.STOPPED
        self._exit_reason = reason
        # drain: pending asks fail loudly instead of hanging
        if self._mailbox is not None:
            while not self._mailbox.empty():
                env = self._mailbox.get_nowait()
                if env is not _STOP and env.reply is not None and not env.reply.done():
                    env.reply.set_exception(ActorDeadError(f"{self.name} stopped"))
                elif env is not _STOP:
                    self.on_undelivered(env.msg)
        try:
            self.on_exit(reason)
        except Exception as exc:
            log.warning("on_exit failed", actor=self.name, error=repr(exc))
        for listener in self._exit_listeners:
            try:
                listener(self, reason)
            except Exception as exc:
                log.warning("exit listener failed", actor=self.name, error=repr(exc))

    async def main(self) -> None:
        """The actor's body: by default, handle mailbox messages one at a time until stopped."""
        assert self._mailbox is not None
        while True:
            env = await self._mailbox.get()
            if env is _STOP:
                return
            try:
                result = await self.handle(env.msg)
            except Exception as exc:
                if env.reply is not None and not env.reply.done():
                    env.reply.set_exception(exc)
                    continue
                raise
            if env.reply is not None and not env.reply.done():
                env.reply.set_result(result)

    # ------------------------------------------------------------------ hooks
    async def on_start(self) -> None:
        """Runs before the first message (awaited by ``start``)."""

    async def handle(self, msg: Any) -> Any:
        raise NotImplementedError

    def on_exit(self, reason: BaseException | None) -> None:
        """Runs once, synchronously, when the actor stops or crashes."""

    def on_undelivered(self, msg: Any) -> None:
        """A told message that never ran (the actor died first)."""
