"""Credentials: resolution order, key-shape check, the stored-key file and JWT claims.

Resolution (protocol.md 4.1): the ``api_key`` argument, then ``$TINKER_API_KEY``, then
``$TINKER_CREDENTIAL_CMD`` (a shell command printing a credential, run on every token fetch),
then the default key of ``~/.tinker/credentials.json`` (written by ``tinker auth login``).
A credential must look like an API key (``tml-``) or a JWT (``eyJ``). No I/O happens at
import; nothing here logs a credential. ``settings_from_env`` is where a client's settings
get their credential (``config`` itself only reads the environment).

This is also the official ``tinker.auth`` module: ``get_tinker_token`` and
``tinker_has_credentials`` are here; ``raise_if_tinker_not_accessible`` needs a ServiceClient,
so it lives in ``clients/access.py`` and ``_layout`` adds it to this module (``_layout.ADDED``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import TinkerError

__all__ = [
    "MISSING_API_KEY_MESSAGE",
    "Credential",
    "CredentialStore",
    "check_key_shape",
    "decode_jwt_claims",
    "default_credentials_path",
    "get_tinker_token",
    "resolve_credential",
    "settings_from_env",
    "tinker_has_credentials",
]

MISSING_API_KEY_MESSAGE = (
    "No Tinker credential found: pass api_key= to the client, set TINKER_API_KEY, set "
    "TINKER_CREDENTIAL_CMD, or store a key with `tinker auth login`"
)


def check_key_shape(key: str) -> str:
    """``key`` if it is an API key (``tml-``) or a JWT (``eyJ``); TinkerError otherwise."""
    if not key.startswith(("tml-", "eyJ")):
        raise TinkerError(
            "The api_key must start with the 'tml-' prefix (or be a JWT starting with 'eyJ'); "
            "check TINKER_API_KEY or the api_key argument"
        )
    return key


# ------------------------------------------------------------------------------ JWT claims
def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, without checking its signature (the server does that)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (IndexError, ValueError) as exc:
        raise TinkerError("the credential is not a well-formed JWT") from exc
    if not isinstance(claims, dict):
        raise TinkerError("the credential is not a well-formed JWT")
    return claims


def _jwt_expired(token: str, now: float | None = None) -> bool:
    exp = decode_jwt_claims(token).get("exp")
    return exp is not None and float(exp) <= (time.time() if now is None else now)


# ------------------------------------------------------------------------------ the store
def default_credentials_path() -> Path:
    return Path("~/.tinker/credentials.json").expanduser()


class CredentialStore:
    """The JSON key file ``tinker auth login`` writes: named keys plus a default.

    Format: ``{"version": 1, "default": id, "keys": {id: {"type", "key", "name", ...}}}``.
    Writes are atomic (temp file + rename) and the file is private to the user.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_credentials_path()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": 1, "default": None, "keys": {}}
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError(f"{self.path}: unsupported credentials file")
        data.setdefault("keys", {})
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def add_key(self, key_id: str, record: dict[str, Any], *, make_default: bool = True) -> None:
        if "key" not in record:
            raise ValueError("a key record needs 'key'")
        check_key_shape(record["key"])
        data = self._load()
        data["keys"][key_id] = {"type": "manual", "name": key_id, **record}
        if make_default or data.get("default") is None:
            data["default"] = key_id
        self._save(data)

    def delete_key(self, key_id: str) -> None:
        data = self._load()
        if key_id not in data["keys"]:
            raise KeyError(key_id)
        del data["keys"][key_id]
        if data.get("default") == key_id:
            data["default"] = None
        self._save(data)

    def set_default(self, key_id: str | None) -> None:
        data = self._load()
        if key_id is not None and key_id not in data["keys"]:
            raise KeyError(key_id)
        data["default"] = key_id
        self._save(data)

    def get_key(self, key_id: str) -> dict[str, Any] | None:
        key: dict[str, Any] | None = self._load()["keys"].get(key_id)
        return key

    def get_default_key_id(self) -> str | None:
        return self._load().get("default")

    def get_default_key(self) -> dict[str, Any] | None:
        data = self._load()
        default = data.get("default")
        return data["keys"].get(default) if default else None

    def list_keys(self) -> dict[str, dict[str, Any]]:
        return dict(self._load()["keys"])


# ------------------------------------------------------------------------------ resolution
@dataclass(frozen=True, slots=True)
class Credential:
    """A resolved credential: a static key, or a command run on every fetch."""

    static: str | None = None
    cmd: str | None = None
    source: str = "none"

    def __repr__(self) -> str:  # never show the key
        return f"Credential(source={self.source!r})"

    @property
    def available(self) -> bool:
        return self.static is not None or self.cmd is not None

    def fetch_sync(self) -> str:
        """The credential now (runs the command when there is one)."""
        if self.static is not None:
            return self.static
        if self.cmd is None:
            raise TinkerError(MISSING_API_KEY_MESSAGE)
        out = subprocess.run(self.cmd, shell=True, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise TinkerError(f"TINKER_CREDENTIAL_CMD failed with exit status {out.returncode}")
        value = out.stdout.strip()
        if not value:
            raise TinkerError("TINKER_CREDENTIAL_CMD returned an empty credential.")
        check_key_shape(value)
        if value.startswith("eyJ") and _jwt_expired(value):
            raise TinkerError("TINKER_CREDENTIAL_CMD printed an expired JWT.")
        return value

    async def fetch(self) -> str:
        if self.static is not None:
            return self.static
        return await asyncio.to_thread(self.fetch_sync)


def resolve_credential(
    api_key: str | None = None, *, store: CredentialStore | None = None
) -> Credential:
    """The credential in resolution order; ``Credential()`` (unavailable) when there is none.

    A key that is given but badly shaped raises TinkerError unless a credential command is
    configured, as the official SDK does.
    """
    cmd = os.environ.get("TINKER_CREDENTIAL_CMD") or None
    if api_key:
        source = "argument"
    elif os.environ.get("TINKER_API_KEY"):
        api_key, source = os.environ["TINKER_API_KEY"], "TINKER_API_KEY"
    else:
        source = ""
    if api_key:
        try:
            return Credential(static=check_key_shape(api_key), source=source)
        except TinkerError:
            if cmd is None:
                raise
    if cmd is not None:
        return Credential(cmd=cmd, source="TINKER_CREDENTIAL_CMD")
    try:
        record = (store or CredentialStore()).get_default_key()
    except (OSError, ValueError):
        record = None
    if record and record.get("key"):
        return Credential(static=check_key_shape(record["key"]), source="credentials.json")
    return Credential()


def settings_from_env(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    project_id: str | None = None,
    default_headers: dict[str, str] | None = None,
) -> Settings:
    """``Settings.from_env`` (the environment, no I/O) with the credential resolved.

    A remote server needs a credential, looked up in the resolution order above (which may
    read the stored key file); the embedded server brings its own key, so with no base URL
    nothing is looked up.
    """
    settings = Settings.from_env(
        base_url=base_url, api_key=api_key, project_id=project_id, default_headers=default_headers
    )
    if settings.base_url is None:
        return settings
    cred = resolve_credential(api_key)
    return dataclasses.replace(
        settings, api_key=cred.static, credential_cmd=cred.cmd, credential_source=cred.source
    )


# ------------------------------------------------------------------------------ official helpers
def get_tinker_token() -> str | None:
    """The configured static token (argument-free: env, then stored key), or None.

    Local only: never runs ``TINKER_CREDENTIAL_CMD``.
    """
    try:
        cred = resolve_credential()
    except (OSError, TinkerError, ValueError):
        return None
    return cred.static


def tinker_has_credentials() -> bool:
    """Whether a credential can be resolved (a configured command counts, without running it)."""
    try:
        return resolve_credential().available
    except (OSError, TinkerError, ValueError):
        return False


if TYPE_CHECKING:
    # The official ``tinker.auth`` has a third helper, which opens a ServiceClient: it lives
    # in ``clients/access.py`` (layer 5) and ``_layout`` adds it to this module as it loads,
    # the same object. Declared here for type checkers only.
    def raise_if_tinker_not_accessible() -> None: ...
