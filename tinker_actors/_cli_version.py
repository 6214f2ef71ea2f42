"""``tinker-actors version``."""

from __future__ import annotations

import argparse
from importlib.metadata import version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    del args
    print(f"tinker-actors {version('tinker-actors')}")
    return 0
