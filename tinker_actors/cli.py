"""The ``tinker-actors`` command line.

Each subcommand lives in the module that owns its job and is imported only when run, so
``tinker-actors version`` never imports torch. A subcommand module exposes
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "version": ("tinker_actors._cli_version", "print the package version"),
    "openapi": ("tinker_actors.openapi", "print the OpenAPI 3.1 document derived from the manifest"),
    "serve": ("tinker_actors.server.cli", "run the embedded Tinker-compatible local server"),
    "demo": ("tinker_actors.demo", "fine-tune a built-in model on a small task, then sample it"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinker-actors", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        # Arguments are added lazily below, once we know which subcommand runs.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # First pass finds the subcommand; then its module adds its own arguments.
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        module.add_arguments(sub_action.choices[command])
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
