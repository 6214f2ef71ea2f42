"""``tinker-actors version``: the package version (no other import)."""

from __future__ import annotations

import click


@click.command()
def cli() -> None:
    """Show version information."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        click.echo(f"tinker-actors {version('tinker-actors')}")
    except PackageNotFoundError:
        click.echo("tinker-actors (version unavailable)")
