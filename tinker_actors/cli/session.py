"""``session export-trace`` (official), and ``session list`` / ``session info`` (generated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .core import CliError, cli_context, handle_errors, rest_client
from .download import fetch_url
from .generated import RestSpec, build
from .render import Output, format_size


@click.group()
def cli() -> None:
    """Manage sessions."""


cli.add_command(
    build(
        RestSpec("list", "list_sessions", "List session ids.", defaults={"access_scope": "owned"})
    )
)
cli.add_command(
    build(
        RestSpec(
            "info",
            "get_session",
            "Show a session's training runs and samplers.",
            defaults={"access_scope": "owned"},
        )
    )
)


def _output(session_id: str, **fields: Any) -> Output:
    data = {"session_id": session_id, **{k: v for k, v in fields.items() if v is not None}}
    labels = {"url": "Download URL", "destination": "Saved to", "file_size_bytes": "Size"}
    rows = [["Session ID", session_id]] + [
        [labels[k], format_size(v) if k == "file_size_bytes" else str(v)]
        for k, v in data.items()
        if k in labels
    ]
    return Output(data, ["Property", "Value"], rows, f"Trace Export: {session_id}")


@cli.command(name="export-trace")
@click.argument("session_id")
@click.option("--output", "-o", type=click.Path(), help="Output file (default: ./<id>.pftrace)")
@click.option("--url-only", is_flag=True, help="Print the signed download URL only")
@handle_errors
def export_trace(session_id: str, output: str | None, url_only: bool) -> None:
    """Export a session's timeline as a Perfetto trace (.pftrace)."""
    fmt = cli_context().format
    if fmt != "json":
        click.echo(f"Exporting trace for session {session_id} (this may take a while)...", err=True)
    try:
        url = rest_client().export_session_trace(session_id).result()
    except RuntimeError as exc:
        why = str(exc).removeprefix("trace export failed: ")
        raise CliError(f"Trace export failed: {why}", "Nothing was exported.") from exc
    if url_only:
        if fmt == "json":
            _output(session_id, url=url).print(fmt)
        else:
            click.echo(url)
        return
    dest = Path(output) if output else Path.cwd() / f"{session_id}.pftrace"
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = fetch_url(url, dest, label="Downloading trace", show=fmt != "json")
    _output(session_id, destination=str(dest), file_size_bytes=size or None).print(fmt)
