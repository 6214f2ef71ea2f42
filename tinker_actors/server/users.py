"""Users of one local server: API keys -> user names, the caller of the current request, and
the ownership rule every part applies.

Runs, checkpoints, sessions, samplers and futures belong to the user who created them.
Another user's resource is answered exactly like a missing one (404, or for a future the
unknown-future answer), so ids cannot be probed; published checkpoints are the one thing
others may read (load, sample, weights_info, archive), never change.

The caller is a context variable set by the auth middleware for the request's task; code
outside a request (tests driving the service directly, background sweeps) acts as
:data:`DEFAULT_USER`, the user of the single ``--api-key``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path

from tinker_actors.server.errors import not_found

DEFAULT_USER = "local-user"
CALLER: ContextVar[str] = ContextVar("tinker_actors_server_caller", default=DEFAULT_USER)


def caller() -> str:
    return CALLER.get()


def require(owner: str | None, what: str) -> None:
    """404 ``{what} not found`` unless the caller owns it (missing and foreign look alike)."""
    if owner is None or owner != CALLER.get():
        raise not_found(f"{what} not found")


def load_keys_file(path: str | Path) -> dict[str, str]:
    """``key -> user`` from a keys file: a JSON object ``{"<key>": "<user>", ...}``, or text
    with one ``<key> <user>`` pair per line (blank lines and ``#`` comments ignored)."""
    text = Path(path).read_text(encoding="utf-8")
    keys: dict[str, str] = {}
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of key -> user")
        pairs = list(data.items())
    else:
        pairs = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected '<key> <user>'")
            pairs.append((parts[0], parts[1]))
    for key, user in pairs:
        if not isinstance(key, str) or not isinstance(user, str) or not key or not user:
            raise ValueError(f"{path}: keys and users must be non-empty strings")
        if key in keys and keys[key] != user:
            raise ValueError(f"{path}: a key is listed for two users")
        keys[key] = user
    if not keys:
        raise ValueError(f"{path}: no API keys")
    return keys


class KeyTable:
    """Looks a presented key up by its SHA-256 (no early-exit string compare on secrets)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._by_digest = {self._digest(k.encode()): u for k, u in keys.items()}
        self.users = frozenset(keys.values())
        # JWTs this server issues are signed with a key derived from all API keys.
        material = b"\n".join(sorted(k.encode() for k in keys))
        self.secret = hashlib.sha256(b"tinker-actors-jwt:" + material).digest()

    @staticmethod
    def _digest(raw: bytes) -> bytes:
        return hashlib.sha256(raw).digest()

    def user_of(self, key: bytes) -> str | None:
        return self._by_digest.get(self._digest(key))

    def jwt_user(self, token: str) -> str | None:
        """The user a JWT from ``/auth/token`` was issued to, if its signature and expiry
        hold and that user still has a key."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        mac = hmac.new(self.secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(_b64url(mac), parts[2]):
            return None
        try:
            claims = json.loads(_b64url_decode(parts[1]))
        except ValueError:
            return None
        if not isinstance(claims, dict) or not float(claims.get("exp", 0)) > time.time():
            return None
        user = claims.get("sub")
        return user if isinstance(user, str) and user in self.users else None

    def issue_jwt(self, user: str, ttl_s: int = 3600) -> str:
        now = int(time.time())
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {
            "sub": user,
            "org_id": "local",
            "email": f"{user}@localhost",
            "iss": "tinker-actors-local",
            "iat": now,
            "exp": now + ttl_s,
        }
        body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        mac = hmac.new(self.secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64url(mac)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
