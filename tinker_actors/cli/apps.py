"""``serve``, ``openapi``, ``demo`` and ``exec``: the apps, under the same lazy root.

``serve``, ``openapi`` and ``demo`` keep their argparse definitions in the modules that own
them (``server/cli.py``, ``openapi.py``, ``demo.py``); each is bridged here as a click
command that hands its arguments, ``--help`` included, to that module's parser.
"""

from __future__ import annotations

import argparse
import importlib

import click

_PASS_THROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


def _bridge(name: str, module_name: str, help_text: str) -> click.Command:
    @click.command(name=name, context_settings=_PASS_THROUGH, add_help_option=False, help=help_text)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> int:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"tinker-actors {name}", description=help_text)
        module.add_arguments(parser)
        return int(module.run(parser.parse_args(list(args))) or 0)

    return command


serve = _bridge(
    "serve", "tinker_actors.server.cli", "Run the embedded Tinker-compatible local server."
)
openapi = _bridge(
    "openapi", "tinker_actors.openapi", "Print the OpenAPI 3.1 document derived from the manifest."
)
demo = _bridge(
    "demo", "tinker_actors.demo", "Fine-tune a built-in model on a small task, then sample it."
)


@click.command(
    name="exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(argv: tuple[str, ...]) -> int:
    """Run unedited `tinker` code on tinker_actors: tinker-actors exec -- python -m pkg ...

    The program, and every Python process it starts, imports tinker_actors as `tinker`.
    Exits with the program's status (2: no command, 127: command not found).
    """
    from tinker_actors import launcher

    return int(launcher.main(["--", *argv]) or 0)
