"""Commands that are one REST call each, built from the manifest's route records.

A :class:`RestSpec` names a route and says only what the route cannot: the command name,
its help, and (optionally) how to present the response. Everything else is read from the
route: path parameters become arguments (``run_id`` + ``checkpoint_id`` become one
``CHECKPOINT_PATH``), query parameters become options (``--limit 0`` pages through all of a
paginated route), the request type gives the body, the response type gives the output.
"""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from .core import cli_context, handle_errors, parse_path, rest_client
from .render import Output, format_bool, format_size, format_time, progress, property_rows

PATH_PAIR = ("run_id", "checkpoint_id")
_CHOICES = {"access_scope": ("owned", "accessible")}
_INTS = frozenset({"limit", "offset"})


@dataclass(frozen=True)
class Paging:
    """How a limit/offset route is paged: batch size, the CLI default, a noun for progress."""

    batch: int = 100
    default_limit: int = 20
    noun: str = "items"


@dataclass(frozen=True)
class RestSpec:
    name: str
    route: str
    help: str
    client: str = "rest"  # or "admin"
    positional: tuple[str, ...] = ()  # query parameters taken as arguments, not options
    hidden: tuple[str, ...] = ()  # query parameters not offered
    defaults: dict[str, Any] = field(default_factory=dict)
    body: Callable[[dict[str, Any]], Any] | None = None
    params: tuple[click.Parameter, ...] = ()  # extra options the presenter or body reads
    paging: Paging | None = None
    present: Callable[[Any, dict[str, Any]], Output | None] | None = None
    done: Callable[[dict[str, Any]], str] | None = None  # stderr line after a bodiless reply


# ------------------------------------------------------------------------------ the call
def call_route(
    route_name: str, params: dict[str, Any], body: Any = None, client: str = "rest"
) -> Any:
    """Calls one manifest route with arguments named as in the route; returns its response."""
    from tinker_actors.manifest import route as get_route

    from .core import admin_client

    r = get_route(route_name)
    c = admin_client() if client == "admin" else rest_client()
    path = {k: params[k] for k in r.path_params}
    query = {k: params.get(k) for k in r.query_params if params.get(k) is not None}

    async def go() -> Any:
        t = await c._transport()
        return await t.call(
            r.name,
            body,
            path_params=path or None,
            query=query or None,
            retry=cli_retry(),
            sdk_method=f"{c._sdk_class}.{r.name}",
        )

    return c._run(go()).result()


def cli_retry() -> Any:
    """Interactive commands fail fast: one retry for transport errors, 429 and 5xx, none for
    409 (a conflict such as "already public" does not clear by waiting)."""
    from tinker_actors.transport import RetryPolicy

    return RetryPolicy(max_attempts=2, max_total=10.0, retry_statuses=frozenset({408, 429}))


def fetch_pages(
    route_name: str, params: dict[str, Any], limit: int, paging: Paging
) -> tuple[list[Any], int]:
    """Items of a paginated route (``limit`` 0 = all) and the server's total, progress on stderr.

    The first request asks for ``min(limit, batch)``; later ones page on until the target
    (``limit`` capped by the cursor's total) is reached or a short page ends the list.
    """
    from tinker_actors.manifest import route as get_route

    if limit < 0:
        raise click.BadParameter("must be 0 (all) or more", param_hint="'--limit'")
    r = get_route(route_name)
    key = _list_field(r.response_type)
    offset0 = int(params.get("offset") or 0)
    first_n = min(limit, paging.batch) if limit > 0 else paging.batch
    first = call_route(route_name, {**params, "limit": first_n, "offset": offset0})
    items = list(getattr(first, key))
    cursor = getattr(first, "cursor", None)
    total = cursor.total_count if cursor is not None else offset0 + len(items)
    target = max(0, total - offset0)
    if limit > 0:
        target = min(limit, target)
    if len(items) < target and len(items) == first_n:
        with progress(f"Fetching {paging.noun}", target) as advance:
            advance(len(items))
            while len(items) < target:
                n = min(paging.batch, target - len(items))
                page = call_route(
                    route_name, {**params, "limit": n, "offset": offset0 + len(items)}
                )
                got = list(getattr(page, key))
                items.extend(got)
                advance(len(got))
                if len(got) < n:
                    break
    return items[: target if limit > 0 else None], total


# ------------------------------------------------------------------------------ building
def _list_field(type_: Any) -> str:
    hints = typing.get_type_hints(type_)
    name: str
    for name in type_.__struct_fields__:
        if typing.get_origin(hints[name]) is list:
            return name
    raise TypeError(f"{type_.__name__} has no list field to page over")


def _arg_name(param: str) -> str:
    return param.replace("_", "-")


def build(spec: RestSpec) -> click.Command:
    """The click command for ``spec``: its parameters come from the route."""
    from tinker_actors.manifest import route as get_route

    r = get_route(spec.route)
    params: list[click.Parameter] = []
    path_params = r.path_params
    if all(p in path_params for p in PATH_PAIR):
        params.append(click.Argument(["checkpoint_path"]))
    for p in path_params:
        if p not in PATH_PAIR or not all(q in path_params for q in PATH_PAIR):
            params.append(click.Argument([p]))
    for q in spec.positional:
        params.append(click.Argument([q]))
    for q in r.query_params:
        if q in spec.positional or q in spec.hidden:
            continue
        default = spec.defaults.get(q)
        if q == "limit" and spec.paging is not None:
            default = spec.paging.default_limit
        help_text = f"{q.replace('_', ' ')} query parameter"
        if q == "limit" and spec.paging is not None:
            help_text = (
                f"Maximum number to fetch (default: {spec.paging.default_limit}, "
                "use --limit=0 to fetch all)"
            )
        params.append(
            click.Option(
                [f"--{_arg_name(q)}", q],
                type=click.Choice(_CHOICES[q]) if q in _CHOICES else (int if q in _INTS else str),
                default=default,
                show_default=default is not None and q != "limit",
                help=help_text,
            )
        )
    params.extend(spec.params)

    @handle_errors
    def callback(**kwargs: Any) -> None:
        values = dict(kwargs)
        cpath = values.get("checkpoint_path")
        if cpath is not None:
            parsed = parse_path(cpath)
            values["run_id"], values["checkpoint_id"] = (
                parsed.training_run_id,
                parsed.checkpoint_id,
            )
        fmt = cli_context().format
        body = spec.body(values) if spec.body is not None else None
        if spec.paging is not None:
            response: Any = fetch_pages(
                spec.route, values, int(values.get("limit") or 0), spec.paging
            )
        else:
            response = call_route(spec.route, values, body, spec.client)
        present = spec.present or (lambda resp, _v: generic_output(resp))
        out = present(response, values) if (response is not None or spec.present) else None
        if out is not None:
            out.print(fmt)
        elif spec.done is not None and fmt != "json":
            click.echo(spec.done(values), err=True)

    doc = spec.help + f"\n\n\b\nAPI: {r.method} {r.path}"
    return click.Command(spec.name, params=params, callback=callback, help=doc)


# ------------------------------------------------------------------------------ generic output
def cell(name: str, value: Any) -> str:
    """One value as a table cell, by its type and field name."""
    if value is None:
        return "N/A"
    if isinstance(value, bool):
        return format_bool(value)
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, int) and name.endswith("bytes"):
        return format_size(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if hasattr(value, "__struct_fields__"):
        for f in ("checkpoint_id", "tinker_path", "training_run_id", "session_id"):
            if hasattr(value, f):
                return str(getattr(value, f))
    return str(value)


def _title(name: str) -> str:
    return name.replace("_", " ").title().replace("Id", "ID").replace("Url", "URL")


def generic_output(response: Any) -> Output:
    """A response shown by its type: its list of records as rows, or its fields as properties."""
    fields = list(getattr(response, "__struct_fields__", ()))
    lists = [f for f in fields if isinstance(getattr(response, f), list)]
    if len(lists) == 1:
        items = getattr(response, lists[0])
        if items and hasattr(items[0], "__struct_fields__"):
            cols = list(items[0].__struct_fields__)
            rows = [[cell(c, getattr(it, c)) for c in cols] for it in items]
            return Output(response, [_title(c) for c in cols], rows, f"{len(items)} {lists[0]}")
        return Output(response, [_title(lists[0])], [[str(i)] for i in items])
    cols, rows = property_rows([(_title(f), cell(f, getattr(response, f))) for f in fields])
    return Output(response, cols, rows)
