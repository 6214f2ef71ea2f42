"""The actors' mailbox, and the training client's: calls from any thread, seq ids in mailbox order."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors import types
from tinker_actors.actors.actor import Mailbox
from tinker_actors.errors import ActorDeadError, MailboxFullError

from .conftest import Proxy

MODEL = "tinker-actors/byte-1m"


def _mailbox(loop: asyncio.AbstractEventLoop, **kw: Any) -> tuple[Mailbox[int], list[Any]]:
    posts: list[Any] = []

    def post(fn: Any, *args: Any) -> None:
        posts.append(fn)
        loop.call_soon_threadsafe(fn, *args)

    return Mailbox(post, **kw), posts


async def test_puts_from_many_threads_arrive_whole_and_in_put_order() -> None:
    box, _ = _mailbox(asyncio.get_running_loop())
    per_thread, threads = 500, 8
    start = threading.Barrier(threads)

    def producer(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            box.put(t * per_thread + i)

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    got: list[int] = []
    while len(got) < per_thread * threads:
        got += await box.get()
    for w in workers:
        w.join()
    assert sorted(got) == list(range(per_thread * threads))
    for t in range(threads):  # each thread's messages in the order it put them
        mine = [m for m in got if m // per_thread == t]
        assert mine == sorted(mine)


async def test_a_burst_of_puts_wakes_the_reader_once() -> None:
    box, posts = _mailbox(asyncio.get_running_loop())
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)  # the reader now waits
    for i in range(100):
        box.put(i)
    assert await reader == list(range(100))
    assert len(posts) == 1


async def test_close_returns_what_was_never_read_and_refuses_more() -> None:
    box, _ = _mailbox(asyncio.get_running_loop(), capacity=2)
    box.put(1)
    box.put(2)
    with pytest.raises(MailboxFullError):
        box.put(3)
    assert box.close(RuntimeError("gone")) == [1, 2]
    with pytest.raises(ActorDeadError):
        box.put(4)
    with pytest.raises(ActorDeadError):
        await box.get()


async def test_closing_wakes_a_waiting_reader() -> None:
    box, _ = _mailbox(asyncio.get_running_loop())
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    with pytest.raises((asyncio.CancelledError, ActorDeadError)):
        await reader


class _RecordingDeque(deque):  # type: ignore[type-arg]
    """The mailbox's queue, recording what is appended (under the mailbox's lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[float] = []

    def append(self, item: Any) -> None:
        self.order.append(item.msg.params.learning_rate)
        super().append(item)


@pytest.mark.e2e
def test_calls_from_many_threads_reach_the_server_in_mailbox_order(
    local_server: Any, proxy: Proxy
) -> None:
    with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        tc = sc.create_lora_training_client(MODEL, rank=4).result()
        recorded = _RecordingDeque()
        tc._handle._state.mailbox._items = recorded
        threads, calls = 6, 15
        start = threading.Barrier(threads)
        futures: list[Any] = []
        lock = threading.Lock()

        def caller(t: int) -> None:
            start.wait()
            for i in range(calls):
                lr = (t * calls + i + 1) * 1e-6  # a marker the server sees
                fut = tc.optim_step(types.AdamParams(learning_rate=lr))
                with lock:
                    futures.append(fut)

        workers = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for fut in futures:
            fut.result(timeout=120)
        seen = proxy.learning_rates[tc.model_id]
        assert sorted(seen) == list(range(1, threads * calls + 1))
        assert [seen[seq] for seq in sorted(seen)] == recorded.order


@pytest.mark.e2e
async def test_idle_sampling_actors_stop_and_wake_on_the_next_call(
    local_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop making a new SamplingClient per step leaves no actors behind (no GC hook)."""
    from tinker_actors.actors import sampling as sampling_actor

    monkeypatch.setattr(sampling_actor, "IDLE_AFTER", 0.0)
    prompt = types.ModelInput.from_ints([1, 2])
    params = types.SamplingParams(max_tokens=1)
    async with tinker.ServiceClient(
        base_url=local_server.base_url, api_key=local_server.api_key
    ) as sc:
        sup = sc.holder.supervisor
        before = {a.name for a in sup.children()}
        samplers = []
        for _ in range(4):
            sampler = await sc.create_sampling_client(base_model=MODEL)
            await sampler.sample(prompt, 1, params)
            samplers.append(sampler)

        def sampler_actors() -> set[str]:
            return {a.name for a in sup.children()} - before

        async def stopped() -> None:  # each actor's exit is an event on the runtime loop
            for s in samplers:
                actor = s._actor
                if actor.state.value in ("stopped", "crashed"):
                    continue
                done = asyncio.get_running_loop().create_future()
                actor.link(lambda a, r, f=done: f.done() or f.set_result(r))
                assert await done is None  # a normal stop, not a crash

        await asyncio.wait_for(asyncio.wrap_future(sc.holder.runtime.submit(stopped())), 30)
        assert sampler_actors() == set()
        # the same client wakes up: same seq-id counter, a new actor
        out = await samplers[0].sample(prompt, 1, params)
        assert len(out.sequences) == 1
        assert samplers[0]._actor.state.value in ("running", "stopped")
