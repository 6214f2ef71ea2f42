"""What every part of the service shares: settings, engine, store, futures, background tasks.

Also the small helpers the parts have in common (JSON results, ISO times, checkpoint names
and TTLs, atomic directory writes), so each exists once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from tinker_actors.server.config import ServerConfig
from tinker_actors.server.engine.base import Engine, EngineUserError
from tinker_actors.server.errors import HttpError, bad_request, not_found
from tinker_actors.server.futures import FutureRegistry, Outcome
from tinker_actors.server.store import ModelRow, Store
from tinker_actors.server.users import DEFAULT_USER, caller, require
from tinker_actors.types._bounds import TTL_MAX_S, TTL_MIN_S

OWNER = DEFAULT_USER  # the single --api-key's user; rows from before several users
IMPLICIT_SESSION = "implicit"  # DEFAULT_USER's session for samplers made without one
T = TypeVar("T")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def string_metadata(meta: dict[str, Any] | None) -> dict[str, str] | None:
    """``user_metadata`` as the responses type it (str -> str): strings as they are, other
    values as JSON. Requests may carry any JSON values (CreateSessionRequest, create_model)."""
    if not meta:
        return None
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in meta.items()
    }


def json_outcome(obj: dict[str, Any]) -> Outcome:
    return Outcome("json", dumps(obj))


def required(value: T | None, name: str) -> T:
    """A field the wire type leaves optional (the client fills it in) but this call needs."""
    if value is None:
        raise HttpError(422, f"field {name!r} is required")
    return value


def check_name(name: str) -> str:
    if not name or len(name) > 200 or "/" in name or "\\" in name:
        raise bad_request(f"invalid checkpoint name {name!r}: 1-200 characters, no '/'")
    if name.startswith(".") or "\x00" in name:
        raise bad_request(f"invalid checkpoint name {name!r}")
    return name


def check_ttl(ttl: int | None) -> float | None:
    if ttl is None:
        return None
    if not TTL_MIN_S <= ttl <= TTL_MAX_S:
        raise bad_request(f"ttl_seconds must be between {TTL_MIN_S} and {TTL_MAX_S}, got {ttl}")
    return float(ttl)


def safe(component: str) -> str:
    """One path component for an id that may hold ``/`` or ``:``."""
    return quote(component, safe="")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_atomically(directory: Path, write: Callable[[Path], int], *, overwrite: bool) -> int:
    """Writes into a temp dir then renames, so a crash never leaves a half checkpoint."""
    if directory.exists() and not overwrite:
        raise EngineUserError(
            f"checkpoint {directory.name!r} already exists; pass overwrite=True or use another name"
        )
    tmp = directory.with_name(directory.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        size = write(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return size or dir_size(directory)


def implicit_session(user: str) -> str:
    """The session that holds a user's samplers made without a sampling session."""
    if user == DEFAULT_USER:
        return IMPLICIT_SESSION
    return f"{IMPLICIT_SESSION}-" + hashlib.blake2b(user.encode(), digest_size=8).hexdigest()


def session_of(resource_id: str) -> str:
    """``{session}:train:{n}`` / ``{session}:sample:{n}`` -> the session id."""
    for marker in (":train:", ":sample:"):
        if marker in resource_id:
            return resource_id.rpartition(marker)[0]
    return resource_id


class Context:
    """The state shared by sessions, training, sampling and checkpoints."""

    def __init__(
        self, config: ServerConfig, engine: Engine, store: Store, secret: bytes = b""
    ) -> None:
        self.config = config
        self.secret = secret  # server secret (derived from the API keys): signs download URLs
        self.engine = engine
        self.store = store
        self.data_dir = Path(config.data_dir)
        self.registry = FutureRegistry(store, config.future_ttl_s)
        self._bg: set[asyncio.Task[Any]] = set()
        # owners never change: cached so the per-request check is a dict lookup
        self._session_owner: dict[str, str] = {}
        self._model_owner: dict[str, str] = {}

    @property
    def benchmark(self) -> bool:
        return bool(getattr(self.engine, "benchmark", False))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task the service owns (cancelled at close)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    def cancel_background(self) -> None:
        for task in list(self._bg):
            task.cancel()

    def model(self, model_id: str, *, check: bool = True) -> ModelRow:
        """The model's row; 404 when missing or (``check``) not the caller's."""
        row = self.store.get_model(model_id)
        if row is None or (check and row.owner != caller()):
            raise not_found(f"model {model_id!r} not found")
        self._model_owner[model_id] = row.owner
        return row

    # ownership (server/users.py) ------------------------------------------------------------
    def session_owner(self, session_id: str) -> str | None:
        owner = self._session_owner.get(session_id)
        if owner is None:
            row = self.store.get_session(session_id)
            if row is None:
                return None
            owner = self._session_owner[session_id] = row.owner
        return owner

    def model_owner(self, model_id: str) -> str | None:
        owner = self._model_owner.get(model_id)
        if owner is None:
            row = self.store.get_model(model_id)
            if row is None:
                return None
            owner = self._model_owner[model_id] = row.owner
        return owner

    def own_session(self, session_id: str) -> None:
        require(self.session_owner(session_id), f"session {session_id!r}")

    def own_model(self, model_id: str) -> None:
        require(self.model_owner(model_id), f"model {model_id!r}")

    def own_sampler(self, sampler_id: str) -> None:
        """A sampler belongs to the owner of its session."""
        owner = self._session_owner.get(session_of(sampler_id))
        if owner is None:
            row = self.store.get_sampler(sampler_id)
            owner = self.session_owner(row.session_id) if row is not None else None
        require(owner, f"sampler {sampler_id!r}")

    def checkpoint_dir(self, model_id: str, segment: str, name: str) -> Path:
        return self.data_dir / "checkpoints" / safe(model_id) / segment / safe(name)

    def sampler_dir(self, sampler_id: str) -> Path:
        return self.data_dir / "samplers" / safe(sampler_id)
