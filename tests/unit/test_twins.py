"""The clients' ``_async`` twins: one mechanism, the sync method's signature, 0.38's warnings."""

from __future__ import annotations

import asyncio
import inspect
import warnings
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors.clients.twins import async_twin, awaited_twin
from tinker_actors.futures import APIFuture

CLIENTS = ["ServiceClient", "RestClient", "SamplingClient", "TrainingClient"]


def _twins(cls: type) -> list[str]:
    return sorted(
        n
        for n in dir(cls)
        if n.endswith("_async") and not n.startswith("_") and callable(getattr(cls, n))
    )


@pytest.mark.parametrize("name", CLIENTS)
def test_every_twin_is_a_coroutine_function_with_the_methods_parameters(name: str) -> None:
    cls = getattr(tinker, name)
    for twin in _twins(cls):
        fn = getattr(cls, twin)
        assert inspect.iscoroutinefunction(fn), twin
        sync = getattr(cls, twin.removesuffix("_async"))
        assert list(inspect.signature(fn).parameters) == list(inspect.signature(sync).parameters), (
            twin
        )


@pytest.mark.parametrize("name", CLIENTS)
def test_the_official_twins_all_exist_here(name: str) -> None:
    import tinker as official

    assert set(_twins(getattr(official, name))) <= set(_twins(getattr(tinker, name)))


class _Thing:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def get(self, a: int, b: int = 2, *, c: str = "x") -> APIFuture[tuple[int, int, str]]:
        self.calls.append((a, b, c))
        return APIFuture.completed((a, b, c))

    get_async = awaited_twin(get)
    get_future_async = async_twin(get, deprecated=False)


def test_awaited_twin_awaits_warns_and_forwards_arguments() -> None:
    thing = _Thing()
    with pytest.warns(
        FutureWarning, match=r"_Thing\.get_async\(\) is deprecated.*await _Thing\.get"
    ):
        assert asyncio.run(thing.get_async(1, c="z")) == (1, 2, "z")
    assert thing.calls == [(1, 2, "z")]
    assert thing.get_async.__name__ == "get_async"
    assert list(inspect.signature(thing.get_async).parameters) == ["a", "b", "c"]


def test_async_twin_returns_the_future_itself_and_can_be_quiet() -> None:
    thing = _Thing()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fut = asyncio.run(thing.get_future_async(3))
    assert isinstance(fut, APIFuture) and fut.result() == (3, 2, "x")
