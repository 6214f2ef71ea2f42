"""``checkpoint`` commands. ``publish``, ``unpublish`` and ``set-ttl`` are generated from
their routes; ``list``, ``info``, ``delete``, ``download``, ``save`` and ``push-hf`` compose
calls and are written here."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

import click

from .core import CliError, cli_context, handle_errors, parse_path, rest_client, service_client
from .generated import Paging, RestSpec, build, call_route, fetch_pages
from .render import Output, format_bool, format_size, format_time

LIST_COLUMNS = ["Checkpoint ID", "Type", "Size", "Public", "Created", "Expires", "Path"]
USER_PAGE = Paging(batch=1000, default_limit=20, noun="checkpoints")


@click.group()
def cli() -> None:
    """Manage checkpoints."""


def _row(c: Any) -> list[str]:
    return [
        c.checkpoint_id,
        c.checkpoint_type,
        format_size(c.size_bytes),
        format_bool(c.public),
        format_time(c.time),
        format_time(c.expires_at) if c.expires_at else "Never",
        c.tinker_path,
    ]


def _count(n: int, suffix: str = "") -> str:
    if n == 0:
        return f"No checkpoints found{suffix}"
    return f"{n} checkpoint{'s' if n != 1 else ''}{suffix}"


# ------------------------------------------------------------------------------ list
@cli.command(name="list")
@click.option("--run-id", help="Training run ID")
@click.option(
    "--limit",
    type=int,
    default=USER_PAGE.default_limit,
    help="Maximum number of checkpoints to display when listing from all runs "
    "(default: 20, use --limit=0 to show all)",
)
@click.option("--offset", type=int, default=0, help="Skip this many checkpoints first")
@handle_errors
def list_checkpoints(run_id: str | None, limit: int, offset: int) -> None:
    """List checkpoints, of one training run (--run-id) or of all runs (newest first)."""
    if limit < 0:
        raise click.BadParameter("must be 0 (all) or more", param_hint="'--limit'")
    if run_id:
        ckpts = call_route("list_checkpoints", {"run_id": run_id}).checkpoints
        title = _count(len(ckpts), f" for run {run_id}")
        data: dict[str, Any] = {"run_id": run_id, "checkpoints": ckpts}
    else:
        ckpts, total = fetch_pages("list_user_checkpoints", {"offset": offset}, limit, USER_PAGE)
        title = _count(len(ckpts))
        if ckpts and total - offset > len(ckpts):
            title += f" ({total - offset - len(ckpts)} more not shown, use --limit to see more)"
        data = {"checkpoints": ckpts}
    Output(data, LIST_COLUMNS, [_row(c) for c in ckpts], title).print(cli_context().format)


# ------------------------------------------------------------------------------ info
def find_checkpoint(rest: Any, path: str) -> Any:
    parsed = parse_path(path)
    for c in rest.list_checkpoints(parsed.training_run_id).result().checkpoints:
        if c.tinker_path == path:
            return c
    raise CliError(
        f"Checkpoint not found: {path}",
        f"List the run's checkpoints with `tinker-actors checkpoint list --run-id "
        f"{parsed.training_run_id}`.",
    )


@cli.command()
@click.argument("checkpoint_path")
@handle_errors
def info(checkpoint_path: str) -> None:
    """Show details of a checkpoint (CHECKPOINT_PATH: tinker://run-id/weights/0001)."""
    parse_path(checkpoint_path)
    rest = rest_client()
    c = find_checkpoint(rest, checkpoint_path)
    run = rest.get_training_run(parse_path(checkpoint_path).training_run_id).result()
    rows = [
        ["Checkpoint ID", c.checkpoint_id],
        ["Type", c.checkpoint_type],
        ["Tinker Path", c.tinker_path],
    ]
    if c.size_bytes is not None:
        rows.append(["Size", format_size(c.size_bytes)])
    rows += [
        ["Public", format_bool(c.public)],
        ["Created", format_time(c.time)],
        ["Expires", format_time(c.expires_at) if c.expires_at else "Never"],
        ["Training Run ID", run.training_run_id],
        [
            "LoRA",
            (f"Yes (Rank {run.lora_rank})" if run.lora_rank else "Yes") if run.is_lora else "No",
        ],
    ]
    data = {**c.model_dump(mode="json"), "is_lora": run.is_lora, "lora_rank": run.lora_rank}
    Output(data, ["Property", "Value"], rows, f"Checkpoint: {c.checkpoint_id}").print(
        cli_context().format
    )


# ------------------------------------------------------------------------------ generated
def _ttl_body(values: dict[str, Any]) -> Any:
    from tinker_actors.types import SetCheckpointTtlRequest

    ttl, remove = values.get("ttl"), values.get("remove")
    hint = "Use --ttl to set an expiration or --remove to clear it"
    if ttl is None and not remove:
        raise CliError("Must specify either --ttl <seconds> or --remove", hint)
    if ttl is not None and remove:
        raise CliError("Cannot specify both --ttl and --remove", hint)
    return SetCheckpointTtlRequest(ttl_seconds=None if remove else ttl)


for _spec in (
    RestSpec(
        "publish",
        "publish_checkpoint",
        "Publish a checkpoint (make it publicly accessible).",
        done=lambda v: f"Published {v['checkpoint_path']}",
    ),
    RestSpec(
        "unpublish",
        "unpublish_checkpoint",
        "Unpublish a checkpoint (make it private again).",
        done=lambda v: f"Unpublished {v['checkpoint_path']}",
    ),
    RestSpec(
        "set-ttl",
        "set_checkpoint_ttl",
        "Set (--ttl SECONDS) or remove (--remove) a checkpoint's expiry.",
        params=(
            click.Option(
                ["--ttl"], type=int, default=None, help="TTL in seconds (1 hour to 10 years)"
            ),
            click.Option(["--remove"], is_flag=True, help="Remove the expiration"),
        ),
        body=_ttl_body,
        done=lambda v: (
            f"Removed expiration for {v['checkpoint_path']}"
            if v.get("remove")
            else f"Updated TTL for {v['checkpoint_path']} to {v['ttl']} seconds"
        ),
    ),
):
    cli.add_command(build(_spec))


# ------------------------------------------------------------------------------ delete
_TYPES = {
    "weights": "training",
    "sampler_weights": "sampler",
    "external_weights": "external",
    "training": "training",
    "sampler": "sampler",
    "external": "external",
}


def _date(value: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"Invalid date: {value}", "Use ISO 8601 format: 2024-01-01, 2024-01-01T12:00:00Z"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _validate(rest: Any, paths: list[str]) -> list[Any]:
    """Every path parsed and found on the server, or a CliError naming each bad one."""
    bad: list[str] = []
    by_run: dict[str, list[str]] = defaultdict(list)
    for p in paths:
        try:
            by_run[parse_path(p).training_run_id].append(p)
        except CliError as exc:
            bad.append(f"  - {p}: {exc.message}")
    found: dict[str, Any] = {}
    from tinker_actors.errors import NotFoundError

    for run_id, run_paths in by_run.items():
        try:
            known = {c.tinker_path: c for c in rest.list_checkpoints(run_id).result().checkpoints}
        except NotFoundError:
            known = {}
        for p in run_paths:
            if p in known:
                found[p] = known[p]
            else:
                bad.append(f"  - {p}: not found")
    if bad:
        raise CliError(
            f"{len(bad)} of {len(paths)} checkpoint path(s) cannot be deleted; nothing was deleted",
            "\n".join(bad) + "\nList checkpoints with `tinker-actors checkpoint list`.",
        )
    return [found[p] for p in paths]


def _confirm(ckpts: list[Any]) -> bool:
    click.echo(f"Will delete {len(ckpts)} checkpoint(s):")
    for c in ckpts:
        click.echo(
            f"  - {c.tinker_path} ({format_size(c.size_bytes)}, created {format_time(c.time)})"
        )
    click.echo(f"\nTotal size: {format_size(sum(c.size_bytes or 0 for c in ckpts))}")
    click.echo("WARNING: This action is permanent and cannot be undone.")
    try:
        return click.confirm(f"Are you sure you want to delete {len(ckpts)} checkpoint(s)?")
    except click.Abort:  # end of input: no
        click.echo()
        return False


@cli.command()
@click.argument("checkpoint_paths", nargs=-1, required=False)
@click.option("--run-id", default=None, help="Delete all checkpoints of a training run")
@click.option("--type", "checkpoint_type", default=None, help="Filter: weights or sampler_weights")
@click.option("--before", default=None, help="Filter: created before (ISO 8601, UTC)")
@click.option("--after", default=None, help="Filter: created after (ISO 8601, UTC)")
@click.option("--yes", "-y", is_flag=True, help="Skip the confirmation prompt")
@handle_errors
def delete(
    checkpoint_paths: tuple[str, ...],
    run_id: str | None,
    checkpoint_type: str | None,
    before: str | None,
    after: str | None,
    yes: bool,
) -> int:
    """Delete checkpoints permanently: explicit paths (all validated before any is deleted),
    or a run's checkpoints with --run-id and optional --type/--before/--after filters.

    Exits 1 when a path is invalid or unknown (nothing is deleted) or when a delete fails.
    """
    example = "  tinker-actors checkpoint delete tinker://run-id/weights/0001"
    if not checkpoint_paths and not run_id:
        raise CliError("Must specify checkpoint paths or --run-id", "Example:\n" + example)
    if checkpoint_paths and run_id:
        raise CliError("Cannot specify both checkpoint paths and --run-id")
    if (checkpoint_type or before or after) and not run_id:
        raise CliError("--type, --before, and --after require --run-id")
    fmt = cli_context().format
    rest = rest_client()
    if run_id:
        want = None
        if checkpoint_type:
            want = _TYPES.get(checkpoint_type)
            if want is None:
                raise CliError(
                    f"Invalid checkpoint type: {checkpoint_type}",
                    "Valid types: weights, sampler_weights, external_weights",
                )
        lo, hi = (_date(after) if after else None), (_date(before) if before else None)
        ckpts = [
            c
            for c in rest.list_checkpoints(run_id).result().checkpoints
            if (want is None or c.checkpoint_type == want)
            and (hi is None or c.time < hi)
            and (lo is None or c.time > lo)
        ]
        if not ckpts:
            click.echo(f"No checkpoints found for run {run_id} matching filters")
            return 0
    else:
        ckpts = _validate(rest, list(dict.fromkeys(checkpoint_paths)))
    if not yes and not _confirm(ckpts):
        click.echo("Deletion cancelled.")
        return 0
    failed: list[tuple[str, str]] = []
    deleted = 0
    from .render import progress

    with progress("Deleting checkpoints", len(ckpts)) as advance:
        for i in range(0, len(ckpts), 32):  # at most 32 deletes in flight
            batch = [
                (c.tinker_path, rest.delete_checkpoint_from_tinker_path(c.tinker_path))
                for c in ckpts[i : i + 32]
            ]
            for path, fut in batch:
                try:
                    fut.result()
                    deleted += 1
                except Exception as exc:
                    failed.append((path, str(exc)))
                advance(1)
    if fmt == "json":
        Output(
            {
                "deleted_count": deleted,
                "failed": [{"tinker_path": p, "error": e} for p, e in failed],
            }
        ).print(fmt)
    else:
        click.echo(f"Deleted {deleted} checkpoint(s)")
        if failed:
            click.echo(f"Failed to delete {len(failed)} checkpoint(s):")
            for p, e in failed:
                click.echo(f"  - {p}: {e}")
    return 1 if failed else 0


# ------------------------------------------------------------------------------ download
@cli.command()
@click.argument("checkpoint_path")
@click.option("--output", "-o", type=click.Path(), help="Parent directory (default: current)")
@click.option("--force", is_flag=True, help="Overwrite the target directory if it exists")
@handle_errors
def download(checkpoint_path: str, output: str | None, force: bool) -> None:
    """Download a checkpoint into <output>/<run-id>_<kind>_<name>/.

    Training (weights) checkpoints are exported through temporary external weights, as the
    official CLI does; sampler_weights checkpoints come as an archive, safely extracted.
    """
    import shutil

    from .download import download_checkpoint, prepare_target

    fmt = cli_context().format
    target = prepare_target(checkpoint_path, output, force)
    rest = rest_client()
    target.mkdir(parents=True)
    try:
        size = download_checkpoint(rest, checkpoint_path, target, show=fmt != "json")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    data: dict[str, Any] = {"checkpoint_path": checkpoint_path, "destination": str(target)}
    rows = [["Checkpoint Path", checkpoint_path]]
    if size > 0:
        data["file_size_bytes"] = size
        rows.append(["Total Size", format_size(size)])
    rows.append(["Downloaded to", str(target)])
    Output(data, ["Property", "Value"], rows, f"Checkpoint Download: {checkpoint_path}").print(fmt)


# ------------------------------------------------------------------------------ save
def default_name(base_model: str) -> str:
    return "checkpoint-" + base_model.lower().replace("/", "-").replace(":", "-")


@cli.command()
@click.option("--base-model", default=None, help="Base model of a new LoRA model")
@click.option("--model-path", default=None, help="tinker:// training state to start from")
@click.option("--output", required=True, type=click.Path(), help="Write the JSON record here")
@click.option("--name", default=None, help="Checkpoint name (default: checkpoint-<model>)")
@click.option("--rank", type=int, default=32, show_default=True, help="LoRA rank")
@click.option("--seed", type=int, default=None, help="LoRA initialisation seed")
@click.option("--train-mlp/--no-train-mlp", default=True, show_default=True)
@click.option("--train-attn/--no-train-attn", default=True, show_default=True)
@click.option("--train-unembed/--no-train-unembed", default=True, show_default=True)
@click.option("--base-url", default=None, help="Server URL (default: $TINKER_BASE_URL)")
@click.option("--api-key", default=None, help="API key (default: $TINKER_API_KEY)")
@handle_errors
def save(
    base_model: str | None,
    model_path: str | None,
    output: str,
    name: str | None,
    rank: int,
    seed: int | None,
    train_mlp: bool,
    train_attn: bool,
    train_unembed: bool,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Create a LoRA training client and save its sampler weights; the record goes to --output."""
    if (base_model is None) == (model_path is None):
        raise CliError("Give exactly one of --base-model or --model-path")
    if model_path is not None:
        parse_path(model_path)
    sc = service_client(base_url, api_key)
    status: Literal["success", "errored"] = "errored"
    try:
        if model_path is not None:
            tc = sc.create_training_client_from_state(model_path).result()
        else:
            assert base_model is not None
            tc = sc.create_lora_training_client(
                base_model,
                rank=rank,
                seed=seed,
                train_mlp=train_mlp,
                train_attn=train_attn,
                train_unembed=train_unembed,
            ).result()
        bm = base_model or tc.get_info().model_data.model_name or "unknown"
        resp = tc.save_weights_for_sampler(name or default_name(bm)).result()
        status = "success"
    finally:
        sc.close(status).result()
    from .render import jsonable

    record = {
        "base_model": bm,
        "model_id": tc.model_id,
        "weights_path": resp.path,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "response": jsonable(resp),
    }
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    if cli_context().format == "json":
        Output(record).print("json")
    else:
        click.echo(f"Checkpoint saved to {out}")
        click.echo(f"  {resp.path}", err=True)


# ------------------------------------------------------------------------------ push-hf
@cli.command(name="push-hf")
@click.argument("checkpoint_path")
@click.option(
    "--repo", "-r", "repo_id", default=None, help="Hugging Face repo id (default: derived)"
)
@click.option("--public", is_flag=True, help="Create or upload to a public repo (default: private)")
@click.option("--revision", default=None, help="Target branch/revision")
@click.option("--commit-message", default=None, help="Commit message")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of pushing")
@click.option(
    "--allow-pattern", "allow_patterns", multiple=True, help="Only upload matches (repeatable)"
)
@click.option(
    "--ignore-pattern", "ignore_patterns", multiple=True, help="Skip matches (repeatable)"
)
@click.option("--no-model-card", is_flag=True, help="Do not write a README.md model card")
@handle_errors
def push_hf(
    checkpoint_path: str,
    repo_id: str | None,
    public: bool,
    revision: str | None,
    commit_message: str | None,
    create_pr: bool,
    allow_patterns: tuple[str, ...],
    ignore_patterns: tuple[str, ...],
    no_model_card: bool,
) -> None:
    """Upload a checkpoint to the Hugging Face Hub as a PEFT adapter."""
    from .hub import push_checkpoint

    result = push_checkpoint(
        rest_client(),
        checkpoint_path,
        repo_id,
        public=public,
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        allow_patterns=list(allow_patterns) or None,
        ignore_patterns=list(ignore_patterns) or None,
        model_card=not no_model_card,
        show=cli_context().format != "json",
    )
    data: dict[str, Any] = {"checkpoint_path": checkpoint_path, "repo_id": result["repo_id"]}
    rows = [["Checkpoint Path", checkpoint_path], ["Repo ID", result["repo_id"]]]
    if revision is not None:
        data["revision"] = revision
        rows.append(["Revision", revision])
    data["public"] = public
    rows.append(["Public", format_bool(public)])
    Output(data, ["Property", "Value"], rows, f"Checkpoint Hub Upload: {checkpoint_path}").print(
        cli_context().format
    )
