"""Server settings as one frozen value, so tests can shrink the long poll and queue limits."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """The per-user data directory (platformdirs), so runs survive across invocations."""
    import platformdirs

    return Path(platformdirs.user_data_dir("tinker-actors", appauthor=False)) / "server"


def generate_api_key() -> str:
    """A fresh ``tml-`` key: the official SDK refuses keys of any other shape."""
    return "tml-local-" + secrets.token_urlsafe(24)


def api_key_from_env() -> str:
    key = os.environ.get("TINKER_API_KEY", "").strip()
    return key or generate_api_key()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=default_data_dir)
    # The single key (its user is "local-user"); "" for none (then api_keys must name some).
    api_key: str = field(default_factory=api_key_from_env)
    # More keys, key -> user name (``serve --api-keys FILE``): each user sees only their own
    # sessions, runs, checkpoints, samplers and futures (server/users.py).
    api_keys: Mapping[str, str] | None = None
    # The base URL clients reach this server at, for the URLs it hands out (archive
    # redirects, signed downloads); None: the address it listens on.
    public_base_url: str | None = None
    engine: str = "torch"  # "torch" or "null" (benchmark engine)
    device: str = "cpu"
    # retrieve_future holds this long before answering try_again (SDK read timeout is 45 s).
    long_poll_s: float = 30.0
    # Largest accepted request body (forward_backward chunks are ~5 MB by default).
    max_body_bytes: int = 64 * 1024 * 1024
    # asample answers 429 once this many sample jobs of one sampler wait or run.
    sample_queue_depth: int = 2048
    # Most jobs handed to one engine.sample call.
    sample_batch_size: int = 64
    # A job arriving into an idle sampler lane waits for the rest of its burst: the batch
    # starts once no job arrived for ``sample_batch_gap_s`` (or ``sample_batch_window_s``
    # after the first, or when full). Without it, the first of N concurrent requests runs
    # alone and the other N-1 wait a whole decode behind it. 0 disables the wait; the null
    # benchmark engine never waits (it has nothing to batch).
    sample_batch_gap_s: float = 0.002
    sample_batch_window_s: float = 0.02
    # Finished results stay retrievable this long.
    future_ttl_s: float = 3600.0
    # Results larger than this answer ``complete_metadata`` first when the client allows it.
    metadata_only_threshold_bytes: int = 8 * 1024 * 1024
    # Signed download URLs (external weights, archives) expire after this long.
    signed_url_ttl_s: float = 3600.0
    # On a clean stop, save each live model's state so it resumes exactly after a restart.
    save_live_state_on_stop: bool = True
    # A session with no heartbeat (nor any request on its models/samplers) for this long is
    # expired: its models and samplers leave memory, records and checkpoints stay, later
    # calls answer 410. 0 disables expiry.
    session_timeout_s: float = 600.0
    # Serve GET /api/v1/_local/stats (per-route request counts; authenticated). The counts
    # are always kept and available in-process as LocalServer.stats().
    stats_route: bool = False
    # Ask 0.38 clients to zstd-compress forward_backward bodies (costs CPU on loopback).
    proto_compress_fwdbwd: bool = False
    # A sample request with no seed gets one derived from its seq_id and prompt instead of a
    # random one, so a rerun of the same client code samples the same tokens (the cookbook's
    # RL loop never passes a seed; comparing two SDKs needs the same rollouts). Logprobs are
    # bitwise repeatable only with sample_batch_size=1 too: batch composition, which depends on
    # timing, changes the padding and so the last bits.
    deterministic_sampling: bool = False
