"""``python -m tinker_actors.server``: the same as ``tinker-actors serve``."""

from __future__ import annotations

import argparse
import sys

from tinker_actors.server import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinker_actors.server",
        description="run the embedded Tinker-compatible local server",
    )
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
