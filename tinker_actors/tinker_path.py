"""Parsing of ``tinker://`` checkpoint paths (protocol.md section 8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InvalidTinkerPathError

if TYPE_CHECKING:
    from .types.rest import CheckpointType, ParsedCheckpointTinkerPath

SCHEME = "tinker://"
SEGMENT_TO_TYPE: dict[str, CheckpointType] = {
    "weights": "training",
    "sampler_weights": "sampler",
    "external_weights": "external",
}
TYPE_TO_SEGMENT = {v: k for k, v in SEGMENT_TO_TYPE.items()}
CONSOLE_BASE_URL = "https://tinker-console.thinkingmachines.ai"


def parse_tinker_path(tinker_path: str) -> ParsedCheckpointTinkerPath:
    """Split ``tinker://{run}/{segment}/{name}``; raise InvalidTinkerPathError (a ValueError)."""
    from .types.rest import ParsedCheckpointTinkerPath

    if not isinstance(tinker_path, str) or not tinker_path.startswith(SCHEME):
        raise InvalidTinkerPathError(
            f"Invalid tinker path: {tinker_path!r} (expected 'tinker://<run_id>/<kind>/<name>')"
        )
    parts = tinker_path[len(SCHEME) :].split("/")
    if len(parts) != 3 or not all(parts):
        raise InvalidTinkerPathError(
            f"Invalid tinker path: {tinker_path!r} (expected exactly "
            "'tinker://<run_id>/<kind>/<name>' with three non-empty parts)"
        )
    run_id, segment, _name = parts
    if segment not in SEGMENT_TO_TYPE:
        raise InvalidTinkerPathError(
            f"Invalid tinker path: {tinker_path!r} (kind {segment!r} is not one of "
            f"{', '.join(SEGMENT_TO_TYPE)})"
        )
    return ParsedCheckpointTinkerPath(
        tinker_path=tinker_path,
        training_run_id=run_id,
        checkpoint_type=SEGMENT_TO_TYPE[segment],
        checkpoint_id="/".join(parts[1:]),
    )


def make_tinker_path(training_run_id: str, checkpoint_type: CheckpointType, name: str) -> str:
    """Inverse of :func:`parse_tinker_path`."""
    return f"{SCHEME}{training_run_id}/{TYPE_TO_SEGMENT[checkpoint_type]}/{name}"


def checkpoint_console_url(tinker_path: str) -> str:
    """A console URL for a checkpoint (informational only)."""
    p = parse_tinker_path(tinker_path)
    return f"{CONSOLE_BASE_URL}/training-runs/{p.training_run_id}/checkpoints/{p.checkpoint_id}"
