"""The one table renderer, the one JSON renderer, progress, and the cell formatters.

Tables use rich only when stdout is a terminal; piped, they are plain tab-separated lines
(header first, title on stderr) that ``cut`` and ``awk`` read. ``NO_COLOR`` turns colour off.
JSON always carries ISO 8601 times; tables show them relative to now ("3 hours ago").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Output:
    """What a command shows: ``data`` for JSON, ``columns``/``rows`` (and a title) for tables."""

    data: Any
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    title: str | None = None

    def print(self, format: str = "table") -> None:
        if format == "json":
            print_json(self.data)
        else:
            print_table(self.columns, self.rows, self.title)


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def _color_system() -> Literal["auto"] | None:
    """No escape codes at all (colour or style) under NO_COLOR."""
    return None if _no_color() else "auto"


def _rich_ok(stream: Any) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


# ------------------------------------------------------------------------------ JSON
def jsonable(value: Any) -> Any:
    """Builtins for JSON: wire types dumped with all fields, times as ISO 8601."""
    import msgspec

    dump = getattr(value, "model_dump", None)
    if dump is not None and isinstance(value, msgspec.Struct):
        return dump(mode="json")
    if isinstance(value, msgspec.Struct):
        return jsonable(msgspec.structs.asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ tables
def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None) -> None:
    if _rich_ok(sys.stdout):
        from rich.console import Console
        from rich.table import Table

        console = Console(emoji=False, color_system=_color_system(), highlight=False)
        table = Table(title=title) if title else Table()
        for i, col in enumerate(columns):
            style = None if _no_color() or i else "bright_cyan"
            table.add_column(col, style=style, no_wrap=i == 0)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    if title:
        sys.stderr.write(title + "\n")
    out = sys.stdout
    out.write("\t".join(columns) + "\n")
    for row in rows:
        out.write("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row) + "\n")
    out.flush()


def property_rows(pairs: Sequence[tuple[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """A two-column Property / Value table."""
    return ["Property", "Value"], [[k, "N/A" if v is None else str(v)] for k, v in pairs]


# ------------------------------------------------------------------------------ progress
class _Plain:
    """Progress as ``label: done/total`` lines on stderr (not a terminal: no redraws)."""

    def __init__(self, label: str, total: int | None, unit: str) -> None:
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self._last = -1

    def update(self, n: int) -> None:
        self.done += n
        total = self.total
        if self.unit == "B":
            # bytes: one line per 10%, so a big file does not flood stderr
            pct = int(self.done * 10 / total) if total else 0
            if pct == self._last and self.done != total:
                return
            self._last = pct
            text = f"{format_size(self.done)}/{format_size(total) if total else '?'}"
        else:
            text = f"{self.done}/{total if total is not None else '?'}"
        sys.stderr.write(f"{self.label}: {text}\n")
        sys.stderr.flush()


@contextmanager
def progress(label: str, total: int | None, *, unit: str = "") -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a task: a rich bar on a terminal stderr, plain lines otherwise."""
    if not _rich_ok(sys.stderr):
        plain = _Plain(label, total, unit)
        yield plain.update
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    count = DownloadColumn() if unit == "B" else MofNCompleteColumn()
    console = Console(stderr=True, color_system=_color_system())
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        count,
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# ------------------------------------------------------------------------------ cells
def format_size(n: int | None) -> str:
    if n is None or n < 0:
        return "N/A"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if size < 1024.0:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0
    return f"{size:.1f} EB"


def format_bool(value: bool | None) -> str:
    return "N/A" if value is None else ("Yes" if value else "No")


def parse_time(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        t = value
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def format_time(value: Any, now: dt.datetime | None = None) -> str:
    """Relative to now ("2 hours ago", "in 3 days"); a date beyond 30 days; N/A for none."""
    t = parse_time(value)
    if t is None:
        return "N/A" if value in (None, "") else str(value)
    now = now or dt.datetime.now(dt.UTC)
    delta = now - t
    future = delta.total_seconds() < 0
    if future:
        delta = -delta
    days, secs = delta.days, int(delta.total_seconds())
    if days > 30:
        return t.strftime("%Y-%m-%d")
    for amount, unit in (
        (days // 7 if days > 7 else 0, "week"),
        (days, "day"),
        (secs // 3600 if secs > 3600 else 0, "hour"),
        (secs // 60 if secs > 60 else 0, "minute"),
    ):
        if amount > 0:
            text = f"{amount} {unit}{'s' if amount > 1 else ''}"
            return f"in {text}" if future else f"{text} ago"
    return "in less than a minute" if future else "just now"
