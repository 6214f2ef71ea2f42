"""Credential resolution, the key-shape check, JWT mode (exchange, refresh, 401 replay), whoami."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors import errors
from tinker_actors.auth import Credential, CredentialStore, resolve_credential
from tinker_actors.config import Settings
from tinker_actors.futures import APIFuture
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import Transport

from .scripted import ScriptedServer

CAPS = "/api/v1/get_server_capabilities"
TOKEN = "/api/v1/auth/token"
CONFIG = "/api/v1/client/config"
DYN = "/api/v1/client/dynamic_config"


def make_jwt(**claims: Any) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none'})}.{b64(claims)}.sig"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("TINKER_API_KEY", "TINKER_CREDENTIAL_CMD", "TINKER_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# ---------------------------------------------------------------------------- resolution
def test_resolution_order(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CredentialStore()
    assert store.path == clean_env / ".tinker" / "credentials.json"
    assert not resolve_credential().available
    store.add_key("laptop", {"key": "tml-stored"})
    assert resolve_credential().static == "tml-stored"
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "echo tml-from-cmd")
    cred = resolve_credential()
    assert cred.cmd == "echo tml-from-cmd" and cred.static is None  # the stored key waits
    assert cred.fetch_sync() == "tml-from-cmd"
    monkeypatch.setenv("TINKER_API_KEY", "tml-env")
    assert resolve_credential().static == "tml-env"
    assert resolve_credential("tml-arg").static == "tml-arg"
    assert "tml-arg" not in repr(resolve_credential("tml-arg"))


def test_key_shape_check_gives_a_clear_error(clean_env: Path) -> None:
    with pytest.raises(tinker.TinkerError, match="must start with the 'tml-' prefix"):
        tinker.ServiceClient(base_url="http://127.0.0.1:9", api_key="sk-wrong-shape")
    assert resolve_credential(make_jwt(sub="u")).static is not None  # eyJ… is accepted


async def test_missing_credential_fails_before_any_request(clean_env: Path) -> None:
    # As in 0.38, construction starts the holder, so the missing key raises right there.
    with pytest.raises(tinker.TinkerError, match="TINKER_API_KEY"):
        tinker.RestClient(base_url="http://127.0.0.1:9")


def test_store_helpers_and_official_auth_module(clean_env: Path) -> None:
    assert tinker.auth.get_tinker_token() is None and not tinker.auth.tinker_has_credentials()
    store = CredentialStore()
    store.add_key("a", {"key": "tml-aaaa"})
    store.add_key("b", {"key": "tml-bbbb"}, make_default=False)
    assert store.get_default_key_id() == "a"
    store.set_default("b")
    assert tinker.auth.get_tinker_token() == "tml-bbbb" and tinker.auth.tinker_has_credentials()
    store.delete_key("b")
    assert store.get_default_key_id() is None and set(store.list_keys()) == {"a"}
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"


async def test_credential_cmd_output_is_the_api_key(clean_env: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "echo tml-cmd-key")
    async with ScriptedServer() as m:
        m.post(CONFIG, payload={})
        m.post(DYN, payload={})
        m.get(CAPS, payload={"supported_models": []})
        # construction blocks on start-up; the scripted server runs on this loop
        rc = await asyncio.to_thread(tinker.RestClient, base_url=m.base)
        await rc.get_server_capabilities()
        assert m.seen(CAPS)[0].headers["X-API-Key"] == "tml-cmd-key"
        await APIFuture.from_coro(rc._session.runtime, rc._session.close())


# ---------------------------------------------------------------------------- JWT mode
async def test_jwt_exchange_then_jwt_in_x_api_key_and_whoami(clean_env: Path) -> None:
    now = int(time.time())
    jwt = make_jwt(sub="tml:user:1", org_id="org-9", email="a@b.c", iat=now, exp=now + 3600)
    async with ScriptedServer() as m:
        m.post(CONFIG, payload={"pjwt_auth_enabled": True})
        m.post(TOKEN, payload={"jwt": jwt})
        m.post(DYN, status=404, payload={"detail": "nope"})
        m.get(CAPS, payload={"supported_models": []})
        rc = await asyncio.to_thread(tinker.RestClient, base_url=m.base, api_key="tml-raw-key")
        await rc.get_server_capabilities()
        who = await rc.whoami()
        order = [r.path for r in m.requests]
        assert order == [CONFIG, TOKEN, DYN, CAPS]  # protocol order
        assert m.seen(TOKEN)[0].headers["X-API-Key"] == "tml-raw-key"
        assert m.seen(TOKEN)[0].json() == {}
        assert m.seen(CAPS)[0].headers["X-API-Key"] == jwt
        assert m.seen(CAPS)[0].headers["x-sdk-method"] == "RestClient.get_server_capabilities"
        assert "x-sdk-method" not in m.seen(TOKEN)[0].headers
        await APIFuture.from_coro(rc._session.runtime, rc._session.close())
    assert who == tinker.types.WhoamiResponse(
        user_urn="tml:user:1", org_urn="tml:organization:org-9", email="a@b.c"
    )


async def test_whoami_without_jwt_raises(clean_env: Path) -> None:
    async with ScriptedServer() as m:
        m.post(CONFIG, payload={})
        m.post(DYN, payload={})
        rc = await asyncio.to_thread(tinker.RestClient, base_url=m.base, api_key="tml-plain")
        with pytest.raises(RuntimeError, match="requires JWT auth"):
            await rc.whoami()
        await APIFuture.from_coro(rc._session.runtime, rc._session.close())


async def test_401_invalid_token_exchanges_and_replays_once(clean_env: Path) -> None:
    now = int(time.time())
    jwt1 = make_jwt(sub="u", iat=now, exp=now + 3600, n=1)
    jwt2 = make_jwt(sub="u", iat=now, exp=now + 3600, n=2)
    unauthorized = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    async with ScriptedServer() as m:
        m.post(TOKEN, payload={"jwt": jwt1})
        m.post(TOKEN, payload={"jwt": jwt2})
        m.post(TOKEN, payload={"jwt": jwt1})
        m.get(CAPS, status=401, payload={"detail": "revoked"}, headers=unauthorized)
        m.get(CAPS, payload={"supported_models": []})
        m.get(CAPS, status=401, payload={"detail": "revoked"}, headers=unauthorized)
        m.get(CAPS, status=401, payload={"detail": "still"}, headers=unauthorized)
        t = Transport(loop_runtime(), Settings(base_url=m.base, api_key="tml-raw"))
        jwt = t.enable_jwt(Credential(static="tml-raw"))
        assert (await t.call("get_server_capabilities")).supported_models == []
        assert [r.headers["X-API-Key"] for r in m.seen(CAPS)] == [jwt1, jwt2]
        with pytest.raises(errors.AuthenticationError):  # replayed once only
            await t.call("get_server_capabilities")
        assert len(m.seen(CAPS)) == 4
        await t.aclose()
    assert jwt.exchanges == 3


async def test_jwt_refresh_timing(clean_env: Path) -> None:
    clock = [1000.0]
    sleeps: list[float] = []
    parked = asyncio.Event()

    async def sleep(d: float) -> None:
        sleeps.append(d)
        if len(sleeps) >= 3:
            parked.set()
            await asyncio.Event().wait()

    async with ScriptedServer() as m:
        m.post(TOKEN, payload={"jwt": make_jwt(iat=1000, exp=2000)})
        m.post(TOKEN, status=400, payload={"detail": "flaky"})  # background refresh fails
        m.post(TOKEN, payload={"jwt": make_jwt(iat=1100, exp=2100)})
        m.post(TOKEN, payload={"jwt": make_jwt(iat=1990, exp=2990)})
        t = Transport(loop_runtime(), Settings(base_url=m.base, api_key="tml-raw"))
        jwt = t.enable_jwt(
            Credential(static="tml-raw"), clock=lambda: clock[0], sleep=sleep, rand=lambda: 0.5
        )
        await jwt.token()
        await asyncio.wait_for(parked.wait(), 5)
        # 50 % of a 1000 s lifetime; 60 s after the failed refresh; then 50 % of the new one
        assert sleeps == [500.0, 60.0, 600.0]  # the clock stood still at 1000
        assert len(m.seen(TOKEN)) == 3
        clock[0] = 2050.0  # 50 s left: the next request refreshes first
        await jwt.token()
        assert len(m.seen(TOKEN)) == 4 and jwt.claims["iat"] == 1990
        await t.aclose()
