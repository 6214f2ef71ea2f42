"""A local server with the ledger engine, run as a child process by the SIGKILL test.

``python serve_ledger.py PORT DATA_DIR LEDGER_DIR API_KEY`` prints ``READY <port>`` once it
serves, then runs until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ledger import LedgerEngine  # run as a script: this directory is on sys.path

from tinker_actors.server import LocalServer


async def main(port: int, data_dir: str, ledger_dir: str, api_key: str) -> None:
    engine = LedgerEngine(ledger_dir=Path(ledger_dir))
    server = LocalServer(
        port=port,
        data_dir=data_dir,
        engine=engine,
        api_key=api_key,
        long_poll_s=1.0,
        stats_route=True,
    )
    async with server:
        print(f"READY {server.port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    port, data_dir, ledger_dir, api_key = sys.argv[1:5]
    asyncio.run(main(int(port), data_dir, ledger_dir, api_key))
