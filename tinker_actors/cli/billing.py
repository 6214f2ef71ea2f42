"""``billing usage`` and ``billing checkpoint-storage``: generated from the billing routes.

Tables and CSV flatten each event's ``event_info`` into its row; JSON keeps the response's
nested shape. An applicable but unknown cost shows as ``null`` in tables, blank in CSV.
"""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click

from .generated import RestSpec, build
from .render import Output, jsonable

_TOKEN_TYPES = frozenset({"training", "sampling_prefill", "sampling_sample"})
_NULLABLE = {
    **dict.fromkeys(_TOKEN_TYPES, ("estimated_cost_usd", "effective_rate_usd_per_million_tokens")),
    "storage": ("estimated_cost_usd", "effective_rate_usd_per_gigabyte_month"),
}


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        info = row.get("event_info")
        if isinstance(info, dict):
            row = {**{k: v for k, v in row.items() if k != "event_info"}, **info}
        out.append(row)
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    cols = _columns(rows)
    return cols, [["" if r.get(c) is None else str(r.get(c)) for c in cols] for r in rows]


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    def write(out: Any) -> None:
        w = csv.DictWriter(out, fieldnames=_columns(rows), restval="")
        w.writeheader()
        w.writerows(rows)

    if path == "-":
        write(sys.stdout)
    else:
        with open(path, "w", newline="") as f:
            write(f)
        click.echo(f"Wrote {len(rows)} row(s) to {path}", err=True)


def present_usage(resp: Any, params: dict[str, Any]) -> Output | None:
    data = jsonable(resp.data)
    sessions = jsonable(resp.sessions)
    if params.get("sessions_csv") is not None:
        rows = [
            {
                "session_id": sid,
                "user_metadata": None
                if s.get("user_metadata") is None
                else json.dumps(s["user_metadata"]),
            }
            for sid, s in sessions.items()
        ]
        write_csv(rows, params["sessions_csv"])
    if params.get("csv") is not None:
        write_csv(_flat(data), params["csv"])
    if params.get("csv") is not None or params.get("sessions_csv") is not None:
        return None
    through = resp.cost_data_through
    display = []
    for row in _flat(data):
        row = dict(row)
        for key in _NULLABLE.get(str(row.get("type")), ()):
            if row.get(key) is None:
                row[key] = "null"
        display.append(row)
    cols, cells = _table(display)
    n = len(data)
    return Output(
        {
            "data": data,
            "sessions": sessions,
            "cost_data_through": None
            if through is None
            else through.isoformat().replace("+00:00", "Z"),
        },
        cols,
        cells,
        "No billing usage in this window" if n == 0 else f"{n} hourly usage row(s)",
    )


def present_storage(resp: Any, params: dict[str, Any]) -> Output | None:
    rate = resp.effective_rate_usd_per_gigabyte_month
    data = jsonable(resp.data)
    table = [{"effective_rate_usd_per_gigabyte_month": rate, **row} for row in data]
    if params.get("csv") is not None:
        write_csv(table, params["csv"])
        return None
    cols, rows = _table(table)
    title = "Current checkpoint storage" if data else "No active checkpoint storage"
    return Output({"effective_rate_usd_per_gigabyte_month": rate, "data": data}, cols, rows, title)


def _csv_option(what: str) -> click.Option:
    return click.Option(
        ["--csv", "csv"],
        default=None,
        metavar="PATH",
        help=f"Write {what} rows as CSV to PATH instead of table/JSON output ('-' for stdout)",
    )


@click.group()
def cli() -> None:
    """View billing usage."""


cli.add_command(
    build(
        RestSpec(
            "usage",
            "get_billing_usage",
            "Show hourly billing usage.\n\nSTARTING_ON and ENDING_BEFORE are RFC 3339 times "
            "aligned to UTC hours (e.g. 2026-07-13T00:00:00Z), at most 14 days apart.",
            client="admin",
            positional=("starting_on", "ending_before"),
            params=(
                _csv_option("usage"),
                click.Option(
                    ["--sessions-csv", "sessions_csv"],
                    default=None,
                    metavar="PATH",
                    help="Also write the per-session table (session_id, user_metadata) as "
                    "CSV to PATH ('-' for stdout)",
                ),
            ),
            present=present_usage,
        )
    )
)
cli.add_command(
    build(
        RestSpec(
            "checkpoint-storage",
            "get_current_checkpoint_storage_usage",
            "Show current checkpoint storage and its projected monthly cost.",
            client="admin",
            params=(_csv_option("storage"),),
            present=present_storage,
        )
    )
)
