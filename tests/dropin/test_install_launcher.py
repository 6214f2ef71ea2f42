"""``tinker_actors.install()`` and ``tinker-actors exec``: unedited ``import tinker`` code.

Each case runs in a fresh interpreter (imports are process-wide). The official package is
installed in this environment as a test peer; the cases also run with it poisoned (a
``tinker`` package first on the path that raises when imported) and absent (a finder that
reports no ``tinker``), so a passing case shows that nothing came from the official package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tinker_actors import launcher

CHECK_OURS = """
import sys
import tinker
import tinker.types.tensor_data
from tinker.lib.public_interfaces import APIFuture
from tinker.types.datum import Datum
import tinker_actors
assert tinker is tinker_actors, tinker
assert tinker.types.tensor_data.TensorData is tinker_actors.TensorData
assert APIFuture is tinker_actors.APIFuture and Datum is tinker_actors.Datum
assert sys.modules["tinker.types.tensor_data"] is sys.modules["tinker_actors.types.tensor_data"]
assert tinker.types.__spec__.name == "tinker_actors.types"  # its own spec, not the alias's
bad = [n for n, m in sys.modules.items()
       if "site-packages/tinker/" in (getattr(m, "__file__", None) or "")]
assert not bad, bad
print("OURS")
"""

ABSENT = """
import importlib.abc, sys
class _NoTinker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tinker" or name.startswith("tinker."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTinker())
"""


def run(
    code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def poisoned_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with a ``tinker`` package that fails loudly if anything imports it."""
    pkg = tmp_path / "poison" / "tinker"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the official tinker was imported')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(pkg.parent), env.get("PYTHONPATH", "")])
    return env


def test_install_with_the_official_package_importable() -> None:
    out = run("import tinker_actors\ntinker_actors.install()\n" + CHECK_OURS)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OURS"


def test_install_when_the_official_package_is_absent() -> None:
    control = run(ABSENT + "import tinker\n")
    assert control.returncode != 0 and "No module named 'tinker'" in control.stderr
    out = run(ABSENT + "import tinker_actors\ntinker_actors.install()\n" + CHECK_OURS)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OURS"


def test_install_never_loads_an_installed_official_package(poisoned_env: dict[str, str]) -> None:
    control = run("import tinker\n", env=poisoned_env)
    assert "the official tinker was imported" in control.stderr
    out = run("import tinker_actors\ntinker_actors.install()\n" + CHECK_OURS, env=poisoned_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OURS"


def test_paths_tinker_actors_lacks_fail_with_a_named_error() -> None:
    out = run(
        """
        import tinker_actors
        tinker_actors.install()
        try:
            import tinker._base_client
        except ModuleNotFoundError as exc:
            assert exc.name == "tinker._base_client", exc.name
            print(exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "tinker_actors" in out.stdout and "tinker._base_client" in out.stdout


def test_install_after_the_official_import_refuses_or_replaces() -> None:
    out = run(
        """
        import tinker as official
        import tinker_actors
        from tinker_actors.dropin import TinkerAlreadyImportedError
        try:
            tinker_actors.install()
        except TinkerAlreadyImportedError as exc:
            assert "replace=True" in str(exc)
        else:
            raise AssertionError("install() accepted an imported official tinker")
        tinker_actors.install(replace=True)
        import tinker
        assert tinker is tinker_actors
        import tinker.types.tensor_data as td
        assert td.TensorData is tinker_actors.TensorData
        tinker_actors.uninstall()
        import tinker
        assert tinker is official  # the evicted modules are back
        import tinker.types.tensor_data as td2
        assert td2.TensorData is official.TensorData
        print("OK")
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_installed_context_manager() -> None:
    out = run(
        ABSENT
        + """
import sys
import tinker_actors
with tinker_actors.installed():
    import tinker
    assert tinker is tinker_actors
    tinker_actors.install()  # idempotent inside
assert "tinker" not in sys.modules and not tinker_actors.dropin.is_installed()
try:
    import tinker
except ModuleNotFoundError:
    print("OK")
"""
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


# -- the launcher ----------------------------------------------------------------------------
@pytest.fixture
def program(tmp_path: Path) -> Path:
    """A package, a script and a console script that import tinker as the cookbook does."""
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "main.py").write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            import tinker
            from tinker.types.tensor_data import TensorData
            import tinker_actors
            assert tinker is tinker_actors and TensorData is tinker_actors.TensorData
            child = subprocess.run(
                [sys.executable, "-c",
                 "import tinker, tinker_actors; print(tinker is tinker_actors)"],
                capture_output=True, text=True, check=True,
            )
            print("MAIN", sys.argv[1:], "child", child.stdout.strip())
            if sys.argv[1:] == ["fail"]:
                sys.exit(3)
            """
        )
    )
    (tmp_path / "script.py").write_text(
        "import sys, tinker, tinker_actors\nprint('SCRIPT', tinker is tinker_actors, sys.argv[1:])\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    console = bindir / "user-console"
    console.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
        "from userpkg.main import *\n"
    )
    console.chmod(0o755)
    return tmp_path


def launch(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinker_actors.launcher", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_launcher_runs_a_module_with_its_arguments(
    program: Path, poisoned_env: dict[str, str]
) -> None:
    out = launch(["--", "python", "-m", "userpkg.main", "a", "--flag"], program, poisoned_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MAIN ['a', '--flag'] child True"


def test_launcher_runs_a_script_and_passes_the_exit_status(program: Path) -> None:
    out = launch(["python", "script.py", "x"], program)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SCRIPT True ['x']"
    failed = launch(["--", "python", "-m", "userpkg.main", "fail"], program)
    assert failed.returncode == 3


def test_launcher_runs_a_console_script_from_path(program: Path) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(program / "bin"), env.get("PATH", "")])
    out = launch(["--", "user-console", "z"], program, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MAIN ['z'] child True"


def test_launcher_usage_and_missing_commands(program: Path) -> None:
    assert launcher.main([]) == 2
    assert launcher.main(["--"]) == 2
    missing = launch(["--", "no-such-command-xyz"], program)
    assert missing.returncode == 127 and "command not found" in missing.stderr


def test_a_python_without_tinker_actors_stops_instead_of_using_the_official_sdk(
    program: Path,
) -> None:
    shadow = program / "shadow" / "tinker_actors"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed here')\n")
    args, env = launcher.command_and_env(["python", "script.py"])
    env["PYTHONPATH"] = os.pathsep.join([launcher.BOOTSTRAP_DIR, str(shadow.parent)])
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=program, env=env, check=False
    )
    assert out.returncode == 2
    assert "cannot serve `tinker` from tinker_actors" in out.stderr and "SCRIPT" not in out.stdout


def test_command_and_env_keep_the_user_pythonpath() -> None:
    args, env = launcher.command_and_env(
        ["--", "python3", "-m", "x"], {"PYTHONPATH": "/a" + os.pathsep + "/b"}
    )
    assert args == [sys.executable, "-m", "x"]
    assert env["PYTHONPATH"].split(os.pathsep) == [launcher.BOOTSTRAP_DIR, "/a", "/b"]
    assert env[launcher.ENV_FLAG] == "1"
    other, _ = launcher.command_and_env(["python2.7", "x.py"], {})
    assert other[0] == "python2.7"  # another interpreter is run as named


def test_the_bootstrap_still_runs_the_sitecustomize_it_shadows(program: Path) -> None:
    other = program / "site_other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.CHAINED = True\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(other)
    out = launch(
        [
            "--",
            "python",
            "-c",
            "import builtins, tinker, tinker_actors; "
            "print(getattr(builtins, 'CHAINED', False), tinker is tinker_actors)",
        ],
        program,
        env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True True"
