"""The ``tinker-actors`` command line: every command of the official ``tinker`` CLI, plus more.

Only ``click`` is imported here. Each command group lives in its own module, imported when
that command runs, and the root help lists commands from the table below without importing
any of them, so ``tinker-actors --help`` stays instant (the package's own ``__init__`` aside).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> ("module:attribute", one-line help). The help text is here so that the root
# ``--help`` can list commands without importing their modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "auth": ("tinker_actors.cli.auth:cli", "Manage authentication credentials."),
    "billing": ("tinker_actors.cli.billing:cli", "View billing usage."),
    "checkpoint": ("tinker_actors.cli.checkpoint:cli", "Manage checkpoints."),
    "model": ("tinker_actors.cli.model:cli", "List available models."),
    "run": ("tinker_actors.cli.run:cli", "Manage training runs."),
    "session": ("tinker_actors.cli.session:cli", "Manage sessions."),
    "sample": ("tinker_actors.cli.sample:cli", "Sample from a base model or a checkpoint."),
    "version": ("tinker_actors._cli_version:cli", "Show version information."),
    "serve": ("tinker_actors.cli.apps:serve", "Run the embedded Tinker-compatible local server."),
    "openapi": ("tinker_actors.cli.apps:openapi", "Print the OpenAPI document of the manifest."),
    "demo": ("tinker_actors.cli.apps:demo", "Fine-tune a built-in model on a task, then sample."),
    "exec": ("tinker_actors.cli.apps:exec_", "Run unedited `tinker` code on tinker_actors."),
    "bench": ("tinker_actors.bench.cli:cli", "Load-test a Tinker endpoint: sampling and training."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one of them is used."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, attr = self.lazy[cmd_name][0].split(":")
        cmd = getattr(importlib.import_module(module_name), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{module_name}:{attr} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx) if name in self.lazy]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class RootGroup(LazyGroup):
    """The root: a CliError becomes ``Error: ...`` on stderr and its exit code; Ctrl-C 130."""

    def invoke(self, ctx: click.Context) -> Any:
        from tinker_actors.cli.core import CliError, show_error

        try:
            rv = super().invoke(ctx)
        except CliError as exc:
            show_error(exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.exit(130)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv:
            ctx.exit(rv)  # a command's non-zero status, also under click's standalone mode
        return rv


@click.group(
    cls=RootGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--format",
    "-f",
    "format_",
    type=click.Choice(["table", "json"]),
    default="table",
    help="Output format (default: table)",
)
@click.pass_context
def cli(ctx: click.Context, format_: str) -> None:
    """tinker-actors: the Tinker management CLI, plus a local server and tools."""
    from tinker_actors.cli.core import CliContext

    ctx.obj = CliContext(format="json" if format_ == "json" else "table")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (``--help`` and usage errors raise SystemExit)."""
    from click.exceptions import Exit

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with cli.make_context("tinker-actors", args) as ctx:
            rv = cli.invoke(ctx)
    except Exit as exc:
        if exc.exit_code == 0 and any(a in ("-h", "--help") for a in args):
            raise SystemExit(0) from None  # help printed: stop, as argparse did
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return int(rv or 0)
