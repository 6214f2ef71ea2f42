"""Imports only point down (DESIGN.md, "Layers"), and the server never uses client internals.

The server is an independent implementation of the protocol that checks ours, so it may use the
wire layer only. Every import is read from the source (function-level ones included, and
``TYPE_CHECKING`` ones), so a lazy import cannot hide an upward edge. There are no exceptions:

* the embedded local server (started when no ``TINKER_BASE_URL`` is set) is injected: the
  package root, the composition root at the top (it sees every layer, nothing imports it, and
  it runs before any submodule), hands ``embedded.provide`` a factory that imports the server;
  the session only calls ``embedded.embedded_endpoint()``;
* the official ``tinker.auth.raise_if_tinker_not_accessible`` opens a ServiceClient, so it
  lives in ``clients/access.py``; ``_layout`` (the official module paths, layer 5) adds it to
  the real ``auth`` module as that loads;
* ``config`` only reads the environment; the credential lookup (the stored key file) is
  ``auth.settings_from_env``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tinker_actors"

# module prefix (dotted, under tinker_actors) -> layer; the longest matching prefix wins.
LAYERS: dict[str, int] = {
    "_proto": 0,
    "types": 0,
    "errors": 0,
    "codec": 0,
    "manifest": 0,
    "tinker_path": 0,
    "telemetry": 0,
    "events": 0,  # the event catalogue: no I/O (issue 11); tinker_actors.telemetry re-exports it
    "metrics": 1,  # a listener of the event catalogue (issue 11)
    "tracing": 1,  # opt-in OpenTelemetry spans and traceparent (issue 11)
    "config": 1,
    "runtime": 2,
    "transport": 2,
    "futures": 3,
    "actors": 4,
    "regularizers": 4,  # domain: torch losses and penalties (issue 12)
    "tokenizers": 4,  # domain: tokenizer resolution and cache (issue 12)
    "files": 2,  # request bodies: file inputs (issue 12)
    "multipart": 2,  # request bodies: multipart/form-data (issue 12)
    "streaming": 4,  # sample_stream: SSE chunks (issue 12)
    "auth": 1,
    "embedded": 1,  # the embedded server's slot: a factory the package root provides
    "clients": 5,
    "__init__": 7,  # the composition root: wires the embedded server in (see the docstring)
    "openapi": 6,
    "cli": 6,
    "_cli_version": 6,
    "__main__": 6,
    "demo": 6,
    "data": 6,
    "server": 6,
    "compat": 5,  # official-SDK names with no other home (RetryHandler, Timeout, ...)
    "dropin": 5,  # tinker_actors.install(): `import tinker` served from tinker_actors
    "_layout": 5,  # the official module paths, one alias table
    "launcher": 6,  # tinker-actors exec
    "bench": 6,  # tinker-actors bench: the load generator (issue 16)
    "_bootstrap": 6,  # the sitecustomize the launcher puts on PYTHONPATH
}

SERVER_MAY_USE = {"_proto", "types", "errors", "codec", "manifest", "tinker_path", "telemetry"}


def _layer_key(module: str) -> str:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return key
    raise KeyError(module)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    """Dotted tinker_actors-relative modules that ``path`` imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tinker_actors."):
                    found.add(alias.name.removeprefix("tinker_actors."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            elif node.module and node.module.startswith("tinker_actors"):
                target = node.module.removeprefix("tinker_actors").lstrip(".")
            else:
                continue
            if not target:  # "from tinker_actors import x" / "from . import x" at the top
                # a submodule, or else a name the package root defines or re-exports
                found.update(
                    alias.name if _is_module(alias.name) else "__init__" for alias in node.names
                )
            else:
                found.add(target)
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "_pb2" not in p.name)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    module = _module_name(path)
    own = _layer_key(module)
    for target in _imports(path):
        try:
            key = _layer_key(target)
        except KeyError:
            continue  # an official module path served by _layout (tinker_actors.lib...)
        if key == own or key.startswith(own + ".") or own.startswith(key + "."):
            continue
        if own == "server" or own.startswith("server."):
            assert key in SERVER_MAY_USE, f"server module {module} imports client code {target}"
            continue
        assert LAYERS[key] <= LAYERS[own], (
            f"{module} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[key]})"
        )


def test_the_layer_table_covers_every_module() -> None:
    for path in SOURCES:
        _layer_key(_module_name(path))  # raises KeyError for a module nobody placed
