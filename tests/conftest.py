"""Shared fixtures: ``local_server`` starts the real local server on port 0 in a temp dir.

It runs on its own thread and loop, so sync code (the official SDK) and async tests (aiohttp
clients on the test loop) can both talk to it. Parametrise the engine indirectly:
``@pytest.mark.parametrize("local_server", ["torch"], indirect=True)`` or with a dict of
LocalServer arguments. The default is the null benchmark engine with a 2 s long poll.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("TINKER_TELEMETRY", "0")

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
