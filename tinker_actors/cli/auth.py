"""``auth login/logout/status/whoami``: the key file ``~/.tinker/credentials.json``.

``login`` checks a pasted key with ``GET /auth/apikey/me`` before storing it; the key is
never echoed or logged.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import click

from .core import CliError, cli_context, endpoint, handle_errors, rest_client
from .render import Output


def _store() -> Any:
    from tinker_actors.auth import CredentialStore

    return CredentialStore()


def _apikey_me(method: str, key: str) -> dict[str, Any]:
    """``/auth/apikey/me`` with the key itself as credential (no stored key is needed)."""
    from tinker_actors.manifest import format_path

    base, _ = endpoint()
    path = format_path("get_api_key_me")
    req = urllib.request.Request(base + path, method=method, headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        detail = "Tinker API request failed"
        try:
            detail = json.loads(exc.read()).get("detail") or detail
        except (ValueError, AttributeError):
            pass
        raise CliError("Could not validate the API key", f"{detail} (HTTP {exc.code})") from exc
    except OSError as exc:
        raise CliError(
            f"Could not reach the Tinker server at {base}: {exc}",
            "Is it running? `tinker-actors serve` starts a local one.",
        ) from exc
    return json.loads(body) if body.strip() else {}


@click.group()
def cli() -> None:
    """Manage authentication credentials."""


@cli.command()
def login() -> None:
    """Check an API key with the server and store it as the default credential."""
    store = _store()
    if store.get_default_key() is not None:
        raise CliError(
            "Already logged in", "Run 'tinker-actors auth logout' before logging in again."
        )
    host = socket.gethostname().split(".", 1)[0].strip() or "unknown"
    base, _ = endpoint()
    click.echo(f"Create an API key for this machine (name: tinker-cli-{host}) at {base},")
    click.echo("or paste the key a local server printed when it started.")
    click.echo()
    key = click.prompt("Paste your API key", hide_input=True).strip()
    if not key:
        raise CliError("The API key must not be empty")
    info = _apikey_me("GET", key)
    try:
        store.add_key(
            str(info["key_id"]),
            {
                "key": key,
                "name": info["name"],
                "note": info.get("note", ""),
                "details": info.get("details"),
            },
        )
    except ValueError as exc:
        raise CliError(f"Invalid API key: {exc}") from exc
    details = info.get("details") or {}
    email = (details.get("user_details") or {}).get("email", "?")
    org = (details.get("org_details") or {}).get("name", "?")
    click.echo(
        f"Logged in as {email} ({org}). Stored API key '{info['name']}' as the default credential."
    )


@cli.command()
def logout() -> None:
    """Remove the default stored credential (the key itself stays valid on the server)."""
    store = _store()
    key_id, record = store.get_default_key_id(), store.get_default_key()
    if key_id is None or record is None:
        raise CliError(
            "No default credential is stored",
            "There is nothing to log out from. Run 'tinker-actors auth login' to log in.",
        )
    if record.get("type") == "generated":
        try:
            _apikey_me("DELETE", record["key"])
        except CliError as exc:
            store.delete_key(key_id)
            raise CliError(
                "Could not delete the API key on the server",
                f"Removed the local credential.\nAPI key name: {record.get('name')}\n{exc.details}",
            ) from exc
        store.delete_key(key_id)
        click.echo(
            f"Removed credential '{record.get('name')}' and deleted its API key on the server."
        )
        return
    store.delete_key(key_id)
    click.echo(f"Removed credential '{record.get('name')}'. The API key is still active.")


@cli.command()
@handle_errors
def status() -> None:
    """Check local credential availability and live access to the server."""
    from tinker_actors.auth import tinker_has_credentials

    has = tinker_has_credentials()
    click.echo(f"Credentials available: {'yes' if has else 'no'}")
    if not has:
        raise CliError(
            "No Tinker credentials are available",
            "Set TINKER_API_KEY or run 'tinker-actors auth login'.",
        )
    try:
        rest_client().get_server_capabilities().result()
    except BaseException:
        click.echo("Tinker accessible: no")
        raise
    click.echo("Tinker accessible: yes")


@cli.command()
@handle_errors
def whoami() -> None:
    """Show the user and organization of the active credential."""
    try:
        me = rest_client().whoami().result()
    except RuntimeError as exc:
        raise CliError(f"whoami is not available: {exc}") from exc
    rows = [
        ["Email", me.email or "N/A"],
        ["User", me.user_urn],
        ["Organization", me.org_urn],
    ]
    Output(me, ["Property", "Value"], rows).print(cli_context().format)
