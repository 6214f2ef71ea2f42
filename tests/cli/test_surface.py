"""The command surface of the official ``tinker`` CLI is a subset of ours: every command path,
argument and option (flags, defaults, arity, required-ness) exists here the same way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click
import pytest


def _walk(cmd: click.Command, ctx: click.Context, path: tuple[str, ...] = ()) -> Iterator[Any]:
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, (path, name)
            yield from _walk(sub, ctx, (*path, name))
    yield path, cmd


def _params(cmd: click.Command) -> dict[Any, tuple[Any, ...]]:
    """User-visible parameters: options keyed by their flags, arguments by position."""
    out: dict[Any, tuple[Any, ...]] = {}
    args = 0
    for p in cmd.params:
        if p.name == "help":
            continue
        key: Any = tuple(sorted(p.opts)) if isinstance(p, click.Option) else ("arg", args)
        if not isinstance(p, click.Option):
            args += 1
        default = None if callable(p.default) else p.default
        flag = getattr(p, "is_flag", False)
        out[key] = (default, flag, p.nargs, p.multiple, p.required, p.type.name)
    return out


def test_every_official_command_and_parameter_exists_here() -> None:
    official = pytest.importorskip("tinker.cli.__main__").main_cli
    from tinker_actors.cli import cli

    ours = dict(_walk(cli, click.Context(cli)))
    seen = 0
    for path, cmd in _walk(official, click.Context(official)):
        assert path in ours, f"missing command: {' '.join(path)}"
        mine = _params(ours[path])
        for key, spec in _params(cmd).items():
            assert key in mine, f"{' '.join(path) or 'root'}: missing {key}"
            assert mine[key] == spec, f"{' '.join(path) or 'root'} {key}: {mine[key]} != {spec}"
        seen += 1
    assert seen >= 20  # auth x4, billing x2, checkpoint x8, model, run x2, session, version
