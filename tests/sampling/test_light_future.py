"""LightFuture (a sample's future): an APIFuture with no concurrent.futures.Future unless asked.

Settled on the runtime loop, awaited from another loop (the default: the runtime has its own
thread), blocked on from a plain thread, cancelled from anywhere; a real
``concurrent.futures.Future`` appears only for ``future()``, ``add_done_callback`` and
blocking waits, chained both ways.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

import pytest

from tinker_actors.futures import LightFuture
from tinker_actors.runtime import get_runtime


def _settle_later(f: LightFuture[Any], how: str, value: Any, delay: float = 0.02) -> None:
    rt = get_runtime()

    def go() -> None:
        if how == "resolve":
            f._resolve(value)
        elif how == "reject":
            f._reject(value)
        else:
            f._abandon()

    threading.Timer(delay, lambda: rt.call_soon(go)).start()


async def test_await_from_another_loop_gets_the_outcome() -> None:
    rt = get_runtime()
    f: LightFuture[int] = LightFuture(rt)
    _settle_later(f, "resolve", 5)
    assert await f == 5
    assert f.done() and not f.cancelled() and f.exception() is None
    assert f._lazy_cf is None  # nobody asked for a concurrent future
    g: LightFuture[int] = LightFuture(rt)
    _settle_later(g, "reject", ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        await g
    h: LightFuture[int] = LightFuture(rt)
    _settle_later(h, "resolve", 3)
    assert await asyncio.gather(h, h.result_async(), h.coroutine()) == [3, 3, 3]


async def test_result_async_timeout_only_ends_the_wait() -> None:
    f: LightFuture[int] = LightFuture(get_runtime())
    with pytest.raises(TimeoutError):
        await f.result_async(0.01)
    assert not f.done() and f._waiter is None  # the abandoned waiter was dropped
    f._resolve(1)
    assert await f.result_async(0.01) == 1


async def test_cancel_from_another_thread_ends_a_wait_in_progress() -> None:
    f: LightFuture[int] = LightFuture(get_runtime())
    threading.Timer(0.02, f.cancel).start()
    with pytest.raises(asyncio.CancelledError):
        await f
    assert f.cancelled() and f.cancel() and not f._resolve(2)
    with pytest.raises(concurrent.futures.CancelledError):
        f.result()
    with pytest.raises(concurrent.futures.CancelledError):
        f.exception()


def test_blocking_result_and_the_lazy_concurrent_future() -> None:
    f: LightFuture[int] = LightFuture(get_runtime())
    with pytest.raises(TimeoutError):
        f.result(0.01)
    seen: list[int] = []
    f.add_done_callback(lambda cf: seen.append(cf.result()))
    _settle_later(f, "resolve", 9)
    assert f.result(5) == 9
    assert f.future().result() == 9 and seen == [9]
    # a concurrent future asked for after the outcome has it at once
    g: LightFuture[int] = LightFuture()
    g._reject(KeyError("k"))
    assert isinstance(g.future().exception(), KeyError)
    # cancelling the concurrent future cancels the LightFuture
    h: LightFuture[int] = LightFuture()
    assert h.future().cancel() and h.cancelled()
    # a finished future cannot be cancelled
    k: LightFuture[int] = LightFuture()
    k._resolve(1)
    assert not k.cancel() and k.result() == 1 and repr(k) == "<APIFuture done>"


def test_settled_once_under_races() -> None:
    """Many threads race to settle and cancel: exactly one outcome wins, every waiter sees it."""
    rt = get_runtime()
    for _ in range(200):
        f: LightFuture[int] = LightFuture(rt)
        barrier = threading.Barrier(3)

        def resolve(f: LightFuture[int] = f, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            f._resolve(7)

        def cancel(f: LightFuture[int] = f, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            f.cancel()

        threads = [threading.Thread(target=resolve), threading.Thread(target=cancel)]
        for t in threads:
            t.start()
        cf = f.future()
        barrier.wait()
        for t in threads:
            t.join()
        assert f.done() and cf.done()
        assert cf.cancelled() == f.cancelled()
        if not f.cancelled():
            assert f.result() == 7 == cf.result()
