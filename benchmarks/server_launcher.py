"""Runs the tinker_actors local server in its own process for the benchmarks.

``python -m benchmarks.server_launcher --engine null`` prints one JSON line
``{"base_url", "api_key", "pid"}`` once the server accepts connections, then serves until
SIGTERM/SIGINT. The server runs with its request statistics route on
(``GET /api/v1/_local/stats``, see docs/server.md), so the benchmarks can report HTTP requests
per step and server CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile


async def _main(args: argparse.Namespace) -> None:
    from tinker_actors.server import LocalServer

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="tinker-bench-server-")
    kwargs = {}
    if args.long_poll is not None:
        kwargs["long_poll_s"] = args.long_poll
    server = LocalServer(
        port=0,
        data_dir=data_dir,
        engine=args.engine,
        api_key=args.api_key,
        access_log=False,
        stats_route=True,
        **kwargs,
    )
    await server.start()
    print(
        json.dumps({"base_url": server.base_url, "api_key": server.api_key, "pid": os.getpid()}),
        flush=True,
    )
    await server.serve_until_signalled()

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="null", choices=("null", "torch"))
    ap.add_argument("--api-key", default="tml-bench-local-key")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--long-poll", type=float, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
