"""A supervisor per ServiceClient: restarts crashed actors under an OTP-style policy.

The restart intensity is a sliding window of restart times read from an injectable clock.
Past it, the supervisor gives up: every child is stopped (reverse start order), each child's
``on_give_up`` fails its outstanding futures with ``RestartLimitExceeded``, and one log line
says so. It never raises ``SystemExit`` and never hangs a caller.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..config import Restart, RestartPolicy
from ..errors import RestartLimitExceeded
from ..telemetry import get_logger
from .actor import Actor

__all__ = ["ChildSpec", "RestartLimitExceeded", "RestartWindow", "Supervisor"]

log = get_logger(__name__)



@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to (re)start one child.

    ``start(previous)`` builds and starts a new actor; ``previous`` is the crashed instance
    (None the first time) so state can be carried over. ``on_give_up(exc)`` fails whatever
    the child still owes its callers.
    """

    name: str
    start: Callable[[Actor | None], Awaitable[Actor]]
    restart: Restart = Restart.TRANSIENT
    shutdown_timeout: float = 10.0
    on_give_up: Callable[[BaseException], None] | None = None


class RestartWindow:
    """At most ``intensity`` restarts within any ``period`` seconds (OTP semantics)."""

    def __init__(self, intensity: int, period: float, clock: Callable[[], float] = time.monotonic):
        self.intensity = intensity
        self.period = period
        self.clock = clock
        self._times: collections.deque[float] = collections.deque()

    def allow(self) -> bool:
        """Records a restart now; False when that exceeds the intensity."""
        now = self.clock()
        while self._times and now - self._times[0] > self.period:
            self._times.popleft()
        self._times.append(now)
        return len(self._times) <= self.intensity


class _Child:
    __slots__ = ("actor", "spec")

    def __init__(self, spec: ChildSpec, actor: Actor):
        self.spec = spec
        self.actor = actor


class Supervisor:
    """Supervises actors on one event loop; ``one_for_one`` restarts only the crashed child."""

    def __init__(
        self,
        policy: RestartPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "supervisor",
    ):
        self.policy = policy or RestartPolicy()
        self.name = name
        self.window = RestartWindow(self.policy.intensity, self.policy.period, clock)
        self._children: dict[str, _Child] = {}
        self._order: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed: RestartLimitExceeded | None = None
        self.restarts = 0
        self._stopping = False
        self._restarted: asyncio.Condition | None = None

    # ------------------------------------------------------------------ children
    async def start_child(self, spec: ChildSpec) -> Actor:
        if self.failed is not None:
            raise self.failed
        if spec.name in self._children:
            raise ValueError(f"child {spec.name!r} already supervised")
        actor = await spec.start(None)
        self._adopt(spec, actor)
        self._order.append(spec.name)
        return actor

    def child(self, name: str) -> Actor | None:
        c = self._children.get(name)
        return c.actor if c else None

    def children(self) -> list[Actor]:
        return [self._children[n].actor for n in self._order if n in self._children]

    async def stop_child(self, name: str) -> None:
        c = self._children.pop(name, None)
        if name in self._order:
            self._order.remove(name)
        if c is not None:
            await c.actor.stop(c.spec.shutdown_timeout)

    def _adopt(self, spec: ChildSpec, actor: Actor) -> None:
        self._children[spec.name] = _Child(spec, actor)
        actor.link(lambda a, reason: self._on_exit(spec.name, a, reason))

    # ------------------------------------------------------------------ exits
    def _on_exit(self, name: str, actor: Actor, reason: BaseException | None) -> None:
        c = self._children.get(name)
        if c is None or c.actor is not actor or self._stopping or actor.cancelled_externally:
            return
        restart = c.spec.restart
        if restart is Restart.TEMPORARY or (reason is None and restart is Restart.TRANSIENT):
            self._children.pop(name, None)
            if name in self._order:
                self._order.remove(name)
            return
        if self.failed is not None:
            return
        if not self.window.allow():
            self._give_up(name, reason)
            return
        self.restarts += 1
        log.warning("restarting actor", supervisor=self.name, child=name, reason=repr(reason))
        task = asyncio.get_running_loop().create_task(self._restart(c.spec, actor))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restart(self, spec: ChildSpec, previous: Actor) -> None:
        try:
            actor = await spec.start(previous)
        except Exception as exc:
            log.warning("restart failed", supervisor=self.name, child=spec.name, error=repr(exc))
            # a failed restart counts as another crash of the same child
            self._on_exit(spec.name, previous, exc)
            return
        if self._stopping or self.failed is not None:
            await actor.stop()
            return
        self._adopt(spec, actor)

    def _give_up(self, name: str, reason: BaseException | None) -> None:
        exc = RestartLimitExceeded(
            f"{name} crashed more than {self.policy.intensity} times in "
            f"{self.policy.period:g} s (last reason: {reason!r}); its outstanding requests "
            "were failed and it will not be restarted"
        )
        if reason is not None:
            exc.__cause__ = reason
        self.failed = exc
        log.error(
            "restart intensity exceeded", supervisor=self.name, child=name, reason=repr(reason)
        )
        for cname in reversed(self._order):
            c = self._children.get(cname)
            if c is None:
                continue
            if c.spec.on_give_up is not None:
                try:
                    c.spec.on_give_up(exc)
                except Exception as e:
                    log.warning("on_give_up failed", child=cname, error=repr(e))
        task = asyncio.get_running_loop().create_task(self.stop())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ shutdown
    async def stop(self) -> None:
        """Stops every child in reverse start order (each bounded by its timeout)."""
        self._stopping = True
        for name in reversed(list(self._order)):
            c = self._children.pop(name, None)
            if c is not None:
                try:
                    await c.actor.stop(c.spec.shutdown_timeout)
                except Exception as exc:
                    log.warning("child stop failed", child=name, error=repr(exc))
        self._order.clear()
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
