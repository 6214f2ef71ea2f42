"""Helpers shared by the examples: environment variables, the model default, small printers.

Every example reads its settings from ``TINKER_*`` environment variables, as the Tinkex
examples do. With no ``TINKER_BASE_URL`` the client starts the embedded local server, so the
defaults fit its built-in models (``tinker-actors/byte-1m``, a byte-level tokenizer).
"""

from __future__ import annotations

import os
import sys
from typing import Any

DEFAULT_MODEL = "tinker-actors/byte-1m"


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    return int(env_str(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(env_str(name, str(default)))


def env_flag(name: str, default: bool) -> bool:
    return env_str(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


def base_model() -> str:
    return env_str("TINKER_BASE_MODEL", DEFAULT_MODEL)


def is_local() -> bool:
    """True when the examples talk to a server on this machine: the embedded one (no
    TINKER_BASE_URL) or one on a loopback address. Scripts then avoid the network (the Hub)."""
    from urllib.parse import urlparse

    url = os.environ.get("TINKER_BASE_URL")
    return not url or urlparse(url).hostname in {"127.0.0.1", "localhost", "::1"}


def endpoint() -> tuple[str, str]:
    """``(base_url, api_key)`` of the server the examples use; starts the embedded one if
    ``TINKER_BASE_URL`` is unset (for code that speaks HTTP itself, or runs the CLI)."""
    url = os.environ.get("TINKER_BASE_URL")
    if url:
        return url.rstrip("/"), os.environ.get("TINKER_API_KEY", "")
    from tinker_actors.embedded import embedded_endpoint

    return embedded_endpoint()


def not_available(what: str) -> None:
    """The one-line notice for a step the local server cannot do (never a faked result)."""
    print(f"[not available locally] {what}", flush=True)


def fail(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)


def text_datum(tinker: Any, tokenizer: Any, text: str) -> Any:
    """A next-token-prediction datum over the whole of ``text``."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
    )


def http(method: str, path: str, body: Any = None, *, auth: bool = True) -> tuple[int, Any]:
    """One plain HTTP call to the server's ``/api/v1`` routes: ``(status, decoded JSON)``.

    For the examples that show the wire protocol itself (no retries, no client runtime).
    """
    import json
    import urllib.error
    import urllib.request

    base_url, api_key = endpoint()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base_url}/api/v1/{path.lstrip('/')}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if auth:
        req.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def ensure_checkpoint(tinker: Any, service: Any, kind: str = "sampler") -> str:
    """A tinker:// path of this user's to work with: the newest existing one of ``kind``
    ("sampler" or "training"), else one saved now from a fresh LoRA model (said so)."""
    rest = tinker.RestClient()
    for ckpt in rest.list_user_checkpoints(limit=50).result().checkpoints:
        if ckpt.checkpoint_type == kind:
            return ckpt.tinker_path
    print(f"(no {kind} checkpoint yet: saving one from a fresh model)")
    training = service.create_lora_training_client(base_model=base_model(), rank=8).result()
    if kind == "sampler":
        return training.save_weights_for_sampler("example-sampler").result().path
    return training.save_state("example-state").result().path


def archive_url(tinker: Any, rest: Any, tinker_path: str) -> str:
    """The signed download URL of a checkpoint's archive (RestClient's method; if it fails,
    the same route over plain HTTP, reading the 302's Location, and a notice saying so)."""
    try:
        return rest.get_checkpoint_archive_url_from_tinker_path(tinker_path).result().url
    except tinker.TinkerError as exc:
        print(
            "[workaround] RestClient.get_checkpoint_archive_url_from_tinker_path failed "
            f"({type(exc).__name__}); reading the archive route's redirect over plain HTTP"
        )
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    base_url, api_key = endpoint()
    run_id, kind, name = tinker_path.removeprefix("tinker://").split("/")[:3]
    req = urllib.request.Request(
        f"{base_url}/api/v1/training_runs/{run_id}/checkpoints/{kind}/{name}/archive",
        headers={"X-API-Key": api_key},
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=60) as resp:
            import json

            return str(json.loads(resp.read())["url"])
    except urllib.error.HTTPError as err:
        if err.code in (301, 302, 303, 307, 308):
            return str(err.headers["Location"])
        raise


def run_cli(*args: str, check: bool = True) -> Any:
    """Runs ``tinker-actors ARGS`` (``python -m tinker_actors``) against the examples' server.

    The CLI never starts a server of its own, so it gets this process's URL and key (the
    embedded server's when TINKER_BASE_URL is unset). Its output is echoed.
    """
    import shlex
    import subprocess

    base_url, api_key = endpoint()
    env = {**os.environ, "TINKER_BASE_URL": base_url, "TINKER_API_KEY": api_key}
    print(f"$ tinker-actors {shlex.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "tinker_actors", *args], env=env, capture_output=True, text=True
    )
    sys.stdout.write(proc.stdout)
    sys.stdout.write(proc.stderr)
    sys.stdout.flush()
    if check and proc.returncode != 0:
        fail(f"tinker-actors {args[0]} exited with {proc.returncode}")
    return proc
