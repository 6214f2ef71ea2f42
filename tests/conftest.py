"""Shared fixtures: ``local_server`` starts the real local server on port 0 in a temp dir.

It runs on its own thread and loop, so sync code (the official SDK) and async tests (aiohttp
clients on the test loop) can both talk to it. Parametrise the engine indirectly:
``@pytest.mark.parametrize("local_server", ["torch"], indirect=True)`` or with a dict of
LocalServer arguments. The default is the null benchmark engine with a 2 s long poll.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("TINKER_TELEMETRY", "0")

# --------------------------------------------------------------- the official SDK's one leak
# Warnings are errors (pyproject.toml), ResourceWarnings included. tinker 0.38's
# InternalClientHolder._fetch_client_config opens a one-off connection pool for
# /api/v1/client/config and never closes it: every official client construction leaves a
# keep-alive socket that the garbage collector reports later, in whichever test runs then.
# Rather than ignore ResourceWarnings (ours would hide behind it), close that pool: the
# wrapped method returns the same config, only the discarded pool is closed.
_HOLDER = "tinker.lib.internal_client_holder"


def _close_config_pool(module: ModuleType) -> None:
    holder_cls = module.InternalClientHolder
    fetch = holder_cls._fetch_client_config
    if getattr(fetch, "_closes_its_pool", False):
        return

    async def _fetch_client_config(self: Any, auth: Any) -> Any:
        pools: list[Any] = []
        create = holder_cls._create_client_connection_pool

        def tracked(*args: Any, **kwargs: Any) -> Any:
            pool = create(self, *args, **kwargs)
            pools.append(pool)
            return pool

        self._create_client_connection_pool = tracked
        try:
            return await fetch(self, auth)
        finally:
            del self._create_client_connection_pool
            for pool in pools:
                await pool.close()

    _fetch_client_config._closes_its_pool = True  # type: ignore[attr-defined]
    holder_cls._fetch_client_config = _fetch_client_config


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies ``_close_config_pool`` when the official SDK's holder module is first imported
    (importing it here would cost every pytest run ~2 s)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _HOLDER:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _close_config_pool(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


if _HOLDER in sys.modules:
    _close_config_pool(sys.modules[_HOLDER])
elif importlib.util.find_spec("tinker") is not None:
    sys.meta_path.insert(0, _PatchOnImport())

TEST_API_KEY = "tml-test-key-0000"


@pytest.fixture
def local_server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    from tinker_actors.server import LocalServer

    opts = getattr(request, "param", None) or {}
    if isinstance(opts, str):
        opts = {"engine": opts}
    opts = {"engine": "null", "long_poll_s": 2.0, "api_key": TEST_API_KEY, **opts}
    server = LocalServer(port=0, data_dir=tmp_path / "server", **opts).start_in_thread()
    try:
        yield server
    finally:
        server.stop_in_thread()
