"""``tinker-actors serve``: run the local server in the foreground until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

from tinker_actors.server.config import default_data_dir, generate_api_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"runs, checkpoints and the database (default: {default_data_dir()})",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="the key clients must send (default: $TINKER_API_KEY or a new one)",
    )
    parser.add_argument(
        "--api-keys",
        type=Path,
        default=None,
        metavar="FILE",
        help="several users: a file of '<key> <user>' lines (or a JSON object key -> user); "
        "each user sees only their own runs, checkpoints, sessions and samplers",
    )
    parser.add_argument(
        "--public-url",
        default=None,
        help="base URL clients reach this server at, for the URLs it hands out "
        "(default: the address it listens on)",
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "null"),
        default="torch",
        help="torch: real training/sampling; null: BENCHMARK engine, no compute",
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument(
        "--long-poll",
        type=float,
        default=30.0,
        help="seconds retrieve_future holds before answering try_again",
    )
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=600.0,
        help="seconds without a heartbeat before a session expires and its models and "
        "samplers leave memory (0: never)",
    )
    parser.add_argument(
        "--stats",
        action="store_true",
        help="serve per-route request counts at GET /api/v1/_local/stats (authenticated)",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-request log lines")


def _configure_logging(verbose: bool) -> None:
    """The serve command is an app, so it (and only it) sets up logging: stdlib, to stderr."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def _serve(args: argparse.Namespace) -> int:
    from tinker_actors.server.local import LocalServer
    from tinker_actors.server.users import load_keys_file

    keys_file = getattr(args, "api_keys", None)
    api_keys = load_keys_file(keys_file) if keys_file else None
    key = args.api_key or ("" if api_keys else None)
    if key is None:
        key = os.environ.get("TINKER_API_KEY", "").strip() or generate_api_key()
    for k in [key, *(api_keys or {})]:
        if k and not k.startswith(("tml-", "eyJ")):
            print("warning: the official SDK only accepts API keys starting with 'tml-'")
            break
    server = LocalServer(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        api_key=key,
        api_keys=api_keys,
        public_base_url=getattr(args, "public_url", None),
        engine=args.engine,
        device=args.device,
        access_log=not args.quiet,
        long_poll_s=args.long_poll,
        session_timeout_s=args.session_timeout,
        stats_route=args.stats,
    )
    await server.start()
    engine_note = " (null BENCHMARK engine: results are not real)" if args.engine == "null" else ""
    print(f"tinker-actors local server{engine_note}", flush=True)
    print(f"  TINKER_BASE_URL={server.base_url}", flush=True)
    if api_keys:
        users = sorted(set(api_keys.values()) | ({"local-user"} if key else set()))
        print(f"  users: {', '.join(users)} (keys from {keys_file})", flush=True)
    if key:
        print(f"  TINKER_API_KEY={server.api_key}", flush=True)
    print(f"  data dir: {server.data_dir}", flush=True)
    if args.stats:
        print(f"  request stats: GET {server.base_url}/api/v1/_local/stats", flush=True)
    try:
        await server.serve_until_signalled()
    finally:
        print("stopped (live models saved)", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    _configure_logging(verbose=not getattr(args, "quiet", False))
    from tinker_actors.server.local import DataDirInUse

    try:
        return asyncio.run(_serve(args))
    except (OSError, ValueError, DataDirInUse) as exc:
        print(f"error: {exc}")
        return 1
