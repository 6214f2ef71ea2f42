"""``run list`` and ``run info``: generated from the training-run routes, shown as the
official CLI shows them."""

from __future__ import annotations

from typing import Any

import click

from .generated import Paging, RestSpec, build
from .render import Output, format_time

# column key -> (header, cell)
COLUMNS: dict[str, tuple[str, Any, str]] = {
    "id": ("Run ID", lambda r: r.training_run_id, "Training run ID"),
    "model": ("Base Model", lambda r: r.base_model, "Base model name"),
    "owner": ("Owner", lambda r: r.model_owner, "Model owner"),
    "lora": ("LoRA", lambda r: _lora(r, "Rank {}", "Yes"), "LoRA status and rank"),
    "updated": ("Last Update", lambda r: format_time(r.last_request_time), "Last request time"),
    "status": ("Status", lambda r: "Failed" if r.corrupted else "OK", "OK or Failed"),
    "checkpoint": (
        "Last Checkpoint",
        lambda r: r.last_checkpoint.checkpoint_id if r.last_checkpoint else "None",
        "Most recent training checkpoint ID",
    ),
    "checkpoint_time": (
        "Checkpoint Time",
        lambda r: format_time(r.last_checkpoint.time) if r.last_checkpoint else "N/A",
        "Time of the last checkpoint",
    ),
}
DEFAULT_COLUMNS = ("id", "model", "lora", "updated", "status")


def _lora(run: Any, with_rank: str, plain: str) -> str:
    if not run.is_lora:
        return "No"
    return with_rank.format(run.lora_rank) if run.lora_rank else plain


def _more(title: str, total: int | None, shown: int) -> str:
    if total is not None and total > shown:
        n = total - shown
        title += f" ({n} more not shown, use --limit to see more)"
    return title


def _columns(value: str | None) -> list[str]:
    if not value:
        return list(DEFAULT_COLUMNS)
    cols = [c.strip() for c in value.split(",")]
    bad = [c for c in cols if c not in COLUMNS]
    if bad:
        raise click.BadParameter(
            f"Unknown column(s): {', '.join(bad)}. Available: {', '.join(COLUMNS)}",
            param_hint="'--columns'",
        )
    return cols


def present_list(result: tuple[list[Any], int], params: dict[str, Any]) -> Output:
    runs, total = result
    cols = _columns(params.get("columns"))
    n = len(runs)
    title = "No training runs found" if n == 0 else f"{n} training run{'s' if n != 1 else ''}"
    if n:
        title = _more(title, total, n)
    return Output(
        {"runs": runs},
        [COLUMNS[c][0] for c in cols],
        [[COLUMNS[c][1](r) for c in cols] for r in runs],
        title,
    )


def present_info(run: Any, params: dict[str, Any]) -> Output:
    rows = [
        ["Run ID", run.training_run_id],
        ["Base Model", run.base_model],
        ["Owner", run.model_owner],
        ["LoRA", _lora(run, "Yes (Rank {})", "Yes")],
        ["Last Update", format_time(run.last_request_time)],
        ["Status", "Failed" if run.corrupted else "OK"],
    ]
    for label, ck in (
        ("Last Training Checkpoint", run.last_checkpoint),
        ("Last Sampler Checkpoint", run.last_sampler_checkpoint),
    ):
        if ck:
            rows += [
                [label, ck.checkpoint_id],
                ["  - Time", format_time(ck.time)],
                ["  - Path", ck.tinker_path],
            ]
    if run.user_metadata:
        rows.append(["Metadata", ""])
        rows += [[f"  - {k}", str(v)] for k, v in run.user_metadata.items()]
    return Output(run, ["Property", "Value"], rows, f"Training Run: {run.training_run_id}")


def _columns_help() -> str:
    lines = ["Columns to display (comma-separated). Available columns:"]
    lines += [f"  {k}: {d}" for k, (_, _, d) in COLUMNS.items()]
    return "\n".join([*lines, f"Default: {','.join(DEFAULT_COLUMNS)}"])


@click.group()
def cli() -> None:
    """Manage training runs."""


cli.add_command(
    build(
        RestSpec(
            "list",
            "list_training_runs",
            "List all training runs.",
            hidden=("project_id",),
            defaults={"access_scope": "owned"},
            paging=Paging(batch=100, default_limit=20, noun="training runs"),
            params=(click.Option(["--columns", "-c"], default=None, help=_columns_help()),),
            present=present_list,
        )
    )
)
cli.add_command(
    build(
        RestSpec(
            "info",
            "get_training_run",
            "Show details of a specific run.",
            defaults={"access_scope": "owned"},
            present=present_info,
        )
    )
)
