"""One exception tree: every exception class lives in ``tinker_actors/errors.py`` and is exported.

Read from the source (no module is imported to look), so an exception class defined anywhere
else in the package fails here, nested ones included. The server (``tinker_actors/server/``) is
an independent implementation of the protocol with its own errors, and ``_proto`` is generated
code; both are out of scope.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import tinker_actors
from tinker_actors import errors

PACKAGE = Path(__file__).resolve().parents[2] / "tinker_actors"
ERRORS = PACKAGE / "errors.py"
EXCLUDED = ("server", "_proto")

# Private control-flow signals, never raised to a caller: (file relative to the package, class).
PRIVATE_SIGNALS = {
    # the transport's "retry this attempt" signals inside its tenacity loop (402: billing pause)
    ("transport.py", "_Retry"),
    ("transport.py", "_Billing"),
}

BUILTIN_EXCEPTIONS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}


def _sources() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if p.relative_to(PACKAGE).parts[0] not in EXCLUDED and "_pb2" not in p.name
    )


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):  # asyncio.CancelledError, click.ClickException
        return node.attr
    return None


def _classes(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text("utf-8"))
    return [
        (node.name, [b for b in map(_base_name, node.bases) if b])
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    ]


def _exception_classes() -> dict[tuple[str, str], list[str]]:
    """(file, class) -> bases, for every class that derives from BaseException.

    A base counts as an exception when it is a builtin exception, a class already found to be
    one (anywhere in the package, by name), or a foreign name shaped like one
    (``...Error``, ``...Exception``, ``...Warning``).
    """
    classes = {
        (str(p.relative_to(PACKAGE)), name): bases
        for p in _sources()
        for name, bases in _classes(p)
    }
    known = set(BUILTIN_EXCEPTIONS)
    found: dict[tuple[str, str], list[str]] = {}
    changed = True
    while changed:
        changed = False
        for key, bases in classes.items():
            if key in found:
                continue
            if any(
                b in known or b.endswith(("Error", "Exception", "Warning", "Exit", "Interrupt"))
                for b in bases
            ):
                found[key] = bases
                known.add(key[1])
                changed = True
    return found


def test_every_exception_class_lives_in_errors() -> None:
    found = _exception_classes()
    assert ("errors.py", "TinkerError") in found  # the detector sees the tree itself
    stray = sorted(
        f"{file}: class {name}({', '.join(bases)})"
        for (file, name), bases in found.items()
        if file != "errors.py" and (file, name) not in PRIVATE_SIGNALS
    )
    assert not stray, "exception classes outside tinker_actors/errors.py:\n" + "\n".join(stray)


def test_every_public_exception_is_exported_from_the_root() -> None:
    public = [
        name
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), BaseException)
    ]
    defined = {name for (file, name) in _exception_classes() if file == "errors.py"}
    assert {n for n in defined if not n.startswith("_")} <= set(public), "errors.__all__"
    for name in public:
        assert getattr(tinker_actors, name) is getattr(errors, name), name
        assert name in tinker_actors.__all__, name


def test_the_old_import_paths_give_the_same_classes() -> None:
    from tinker_actors import compat, dropin, runtime, tokenizers
    from tinker_actors.actors import actor, recovery, supervisor, training
    from tinker_actors.cli import core as cli_core

    assert runtime.BlockingOnLoopError is errors.BlockingOnLoopError
    assert dropin.TinkerAlreadyImportedError is errors.TinkerAlreadyImportedError
    assert tokenizers.TokenizerError is errors.TokenizerError
    assert compat.RetryableException is errors.RetryableException
    assert compat.ExperimentalWarning is errors.ExperimentalWarning
    assert cli_core.CliError is errors.CliError
    assert training.SequenceBrokenError is errors.SequenceBrokenError
    assert recovery.RunCorruptedError is errors.RunCorruptedError
    assert supervisor.RestartLimitExceeded is errors.RestartLimitExceeded
    assert actor.ActorDeadError is errors.ActorDeadError
    import tinker_actors.lib.retry_handler as retry_handler
    import tinker_actors.lib.retryable_exception as retryable_exception

    assert retry_handler.RetryableException is errors.RetryableException
    assert retryable_exception.RetryableException is errors.RetryableException


def test_the_bases_are_kept() -> None:
    assert issubclass(errors.BlockingOnLoopError, RuntimeError)
    assert issubclass(errors.TinkerAlreadyImportedError, RuntimeError)
    assert issubclass(errors.RegularizerTimeoutError, errors.RegularizerError)
    assert issubclass(errors.RegularizerTimeoutError, TimeoutError)
    assert issubclass(errors.TokenizerError, RuntimeError)
    assert issubclass(errors.ExperimentalWarning, FutureWarning)
    assert issubclass(errors.DriverError, RuntimeError)
