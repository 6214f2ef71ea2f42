"""Every public module path of the official ``tinker`` resolves under tinker_actors.

The official SDK (installed as a test peer) is walked from its files: for each module of
``tinker.types`` and ``tinker.lib.public_interfaces`` (and the other ``tinker.lib`` modules
that the alias table serves), every public name it defines or re-exports must import from
the same path under ``tinker_actors``, and names that also exist at the top level are the
very same objects.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import tinker_actors
from tinker_actors import _layout

OFFICIAL = Path(importlib.util.find_spec("tinker").origin).parent  # type: ignore[union-attr,arg-type]

# Names of the official modules that are implementation helpers, not part of what user code
# imports, with the reason they are not served.
NOT_SERVED = {
    # helpers of the official custom-loss implementation (tracing a torch.fx graph); ours
    # lives in tinker_actors.clients.custom_loss under its own names
    "lib.public_interfaces.custom_loss": {
        "trace_loss",
        "check_loss_inputs",
        "encode_graph",
        "run_loss_handle",
    },
    # the official holder plumbing (httpx pools) has no counterpart here
    "lib.public_interfaces.rest_client_common": {"rest_client_holder"},
    "lib.public_interfaces.training_client": {"fetch_training_info", "MODEL_ID_NOT_SET_ERROR"},
    # the official telemetry's own knobs and its factory over the httpx holder
    "lib.telemetry": {"FLUSH_TIMEOUT", "HTTP_TIMEOUT_SECONDS", "init_telemetry"},
    # the official metric reducers by name; ours are tinker_actors.types.combine_metrics
    "lib.chunked_fwdbwd_helpers": {"REDUCE_MAP"},
}
NOT_SERVED_MODULES = {"lib.public_interfaces.rest_client_common"}


def _public_names(path: Path) -> set[str]:
    """Names a module defines at top level or re-exports from the package (``__all__`` too)."""
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    if target.id == "__all__":
                        names.update(ast.literal_eval(node.value))
                    else:
                        names.add(target.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.update(a.name for a in node.names if a.asname == a.name)
    return {
        n for n in names if not n.startswith("_") and n not in ("logger", "T", "C", "U", "P", "R")
    }


def _official_modules(sub: str) -> list[tuple[str, Path]]:
    base = OFFICIAL / sub
    out = []
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(OFFICIAL).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts) or parts[-1].endswith("_test"):
            continue
        out.append((".".join(parts), path))
    return out


TYPES_MODULES = _official_modules("types")
PUBLIC_INTERFACES = _official_modules("lib/public_interfaces")
OTHER_LIB = [
    (m, p)
    for m, p in _official_modules("lib")
    if m in _layout.TABLE and not m.startswith("lib.public_interfaces")
]


def test_the_walk_finds_the_official_modules() -> None:
    mods = {m for m, _ in TYPES_MODULES + PUBLIC_INTERFACES}
    assert {"types", "types.tensor_data", "types.datum", "lib.public_interfaces"} <= mods
    assert len(TYPES_MODULES) > 100 and len(PUBLIC_INTERFACES) >= 10
    assert {m for m, _ in OTHER_LIB} >= {
        "lib.retry_handler",
        "lib.telemetry",
        "lib.telemetry_provider",
        "lib.queue_state_logger",
    }


@pytest.mark.parametrize(
    ("module", "path"),
    TYPES_MODULES + PUBLIC_INTERFACES + OTHER_LIB,
    ids=[m for m, _ in TYPES_MODULES + PUBLIC_INTERFACES + OTHER_LIB],
)
def test_every_public_name_resolves_under_tinker_actors(module: str, path: Path) -> None:
    if module in NOT_SERVED_MODULES:
        pytest.skip("official plumbing with no counterpart (see NOT_SERVED)")
    ours = importlib.import_module(f"tinker_actors.{module}")
    wanted = _public_names(path) - NOT_SERVED.get(module, set())
    if module == "types":  # the package: every name its __init__ re-exports
        wanted = {n for n in wanted if not n[0].islower()}
    missing = sorted(n for n in wanted if not hasattr(ours, n))
    assert not missing, f"tinker_actors.{module} lacks {missing}"
    for name in wanted:
        value = getattr(ours, name)
        for top in (tinker_actors, tinker_actors.types):
            if name in getattr(top, "__all__", ()):
                assert value is getattr(top, name), f"tinker_actors.{module}.{name} is a copy"


def test_submodule_imports_give_the_top_level_objects() -> None:
    import tinker_actors.lib.public_interfaces.api_future as api_future
    import tinker_actors.types.tensor_data
    from tinker_actors.lib.public_interfaces import APIFuture
    from tinker_actors.lib.public_interfaces.rest_client import RestClient
    from tinker_actors.types.sampled_sequence import SampledSequence

    from tinker_actors.types.datum import Datum

    assert tinker_actors.types.tensor_data.TensorData is tinker_actors.TensorData
    assert APIFuture is api_future.APIFuture is tinker_actors.APIFuture
    assert RestClient is tinker_actors.RestClient
    assert Datum is tinker_actors.Datum
    assert SampledSequence is tinker_actors.types.SampledSequence
    # attribute access without an import statement works, as the official package allows
    assert tinker_actors.types.model_input_chunk.ModelInputChunk is tinker_actors.ModelInputChunk
    assert tinker_actors.lib.public_interfaces.ServiceClient is tinker_actors.ServiceClient


def test_unknown_names_fail_with_a_clear_error() -> None:
    mod = importlib.import_module("tinker_actors.lib.public_interfaces")
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        mod.Nope  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tinker_actors.types.no_such_module")
    assert "ServiceClient" in dir(mod)


def test_a_fresh_interpreter_imports_a_deep_path_first() -> None:
    """No prior ``import tinker_actors``: the alias finder is set up by the package import."""
    code = (
        "from tinker_actors.lib.public_interfaces.api_future import APIFuture\n"
        "import tinker_actors\n"
        "assert APIFuture is tinker_actors.APIFuture\n"
        "from tinker_actors.types.shared.untyped_api_future import UntypedAPIFuture\n"
        "assert UntypedAPIFuture is tinker_actors.types.UntypedAPIFuture\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
