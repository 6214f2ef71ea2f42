"""The Tinkex additions and this CLI's own conventions, against a real local server (null
engine): validated multi-path delete, ``--limit 0`` across pages, ``sample`` from a token
file, ``checkpoint save``, archive download, ``push-hf`` up to the Hub boundary, output
modes, ``python -m tinker_actors``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tinker_actors.cli import checkpoint as ckpt_cmd
from tinker_actors.cli import hub, render
from tinker_actors.cli.core import CliError
from tinker_actors.cli.download import safe_extract
from tinker_actors.cli.generated import Paging

from .conftest import MODEL, Seeded, run_official, run_ours

pytestmark = pytest.mark.e2e


def _listed(s: Seeded, run_id: str | None = None) -> set[str]:
    args = ["-f", "json", "checkpoint", "list", "--limit", "0"]
    if run_id:
        args += ["--run-id", run_id]
    r = run_ours(args, s.env)
    assert r.code == 0, r
    return {c["tinker_path"] for c in json.loads(r.stdout)["checkpoints"]}


# ------------------------------------------------------------------------------ delete
def test_delete_validates_every_path_before_deleting_any(seeded: Seeded) -> None:
    good = seeded.state_paths[:2]
    unknown = good[0].rsplit("/", 1)[0] + "/no-such-state"
    before = _listed(seeded)
    r = run_ours(["checkpoint", "delete", "--yes", *good, unknown, "not-a-path"], seeded.env)
    assert r.code == 1
    assert "2 of 4 checkpoint path(s) cannot be deleted; nothing was deleted" in r.stderr
    assert f"{unknown}: not found" in r.stderr and "not-a-path: Invalid checkpoint path" in r.stderr
    assert _listed(seeded) == before  # nothing deleted


def test_delete_asks_first_and_end_of_input_means_no(seeded: Seeded) -> None:
    path = seeded.sampler_paths[0]
    for answer in ("n\n", ""):
        r = run_ours(["checkpoint", "delete", path], seeded.env, input=answer)
        assert r.code == 0 and "Deletion cancelled." in r.stdout
        assert f"  - {path} (" in r.stdout and "cannot be undone" in r.stdout
        assert path in _listed(seeded)
    r = run_ours(["checkpoint", "delete", path], seeded.env, input="y\n")
    assert r.code == 0 and "Deleted 1 checkpoint(s)" in r.stdout
    assert path not in _listed(seeded)
    seeded.sampler_paths.remove(path)


# ------------------------------------------------------------------------------ paging
def test_limit_zero_pages_through_everything(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = json.loads(
        run_official(["-f", "json", "checkpoint", "list", "--limit", "0"], seeded.env).stdout
    )["checkpoints"]
    assert len(everything) > 4
    monkeypatch.setattr(ckpt_cmd, "USER_PAGE", Paging(batch=2, default_limit=20, noun="ckpts"))
    r = run_ours(["-f", "json", "checkpoint", "list", "--limit", "0"], seeded.env)
    assert r.code == 0
    got = json.loads(r.stdout)["checkpoints"]
    assert [c["tinker_path"] for c in got] == [c["tinker_path"] for c in everything]
    # progress on stderr, one line per page (stderr is not a terminal here), stdout pure JSON
    n = len(everything)
    assert f"Fetching ckpts: 2/{n}" in r.stderr and f"Fetching ckpts: {n}/{n}" in r.stderr
    # a limit that is not a multiple of the page size stops exactly there
    r = run_ours(["-f", "json", "checkpoint", "list", "--limit", "3"], seeded.env)
    assert [c["tinker_path"] for c in json.loads(r.stdout)["checkpoints"]] == [
        c["tinker_path"] for c in everything[:3]
    ]
    r = run_ours(["checkpoint", "list", "--limit", "3"], seeded.env)
    assert f"3 checkpoints ({n - 3} more not shown, use --limit to see more)" in r.stderr


# ------------------------------------------------------------------------------ sample, save
def test_sample_from_a_token_file(seeded: Seeded, tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps([72, 101, 108, 108, 111]))
    out = tmp_path / "out.json"
    args = ["sample", "--base-model", MODEL, "--prompt-file", str(prompt)]
    r = run_ours([*args, "--num-samples", "2", "--max-tokens", "4", "--json"], seeded.env)
    assert r.code == 0, r
    data = json.loads(r.stdout)
    assert len(data["sequences"]) == 2
    assert all(1 <= len(s["tokens"]) <= 4 for s in data["sequences"])
    assert "Starting sampling..." in r.stderr and "Sampling complete (2 sequences)" in r.stderr
    # {"tokens": [...]} and --output
    prompt.write_text(json.dumps({"tokens": [1, 2, 3]}))
    r = run_ours(["-f", "json", *args, "--max-tokens", "3", "--output", str(out)], seeded.env)
    assert r.code == 0 and r.stdout == ""
    assert len(json.loads(out.read_text())["sequences"]) == 1
    # a list that is not token ids names the fix
    prompt.write_text(json.dumps([1, "two"]))
    r = run_ours(args, seeded.env)
    assert r.code == 1 and "not token ids" in r.stderr and "JSON list of integers" in r.stderr
    r = run_ours(["sample", "--prompt", "hi"], seeded.env)
    assert r.code == 1 and "--base-model or --model-path" in r.stderr


def test_checkpoint_save_writes_a_record(seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "record.json"
    r = run_ours(
        ["checkpoint", "save", "--base-model", MODEL, "--rank", "2", "--output", str(out)],
        seeded.env,
    )
    assert r.code == 0, r
    assert r.stdout.strip() == f"Checkpoint saved to {out}"
    record = json.loads(out.read_text())
    assert record["base_model"] == MODEL
    assert record["weights_path"].endswith("/sampler_weights/checkpoint-tinker-actors-byte-1m")
    assert record["weights_path"] in _listed(seeded)
    assert record["saved_at"].endswith("+00:00") and record["model_id"]
    r = run_ours(["checkpoint", "save", "--output", str(out)], seeded.env)
    assert r.code == 1 and "--base-model or --model-path" in r.stderr


# ------------------------------------------------------------------------------ download
def test_download_of_a_sampler_checkpoint_extracts_its_archive(
    seeded: Seeded, tmp_path: Path
) -> None:
    path = seeded.sampler_paths[-1]
    r = run_ours(["checkpoint", "download", path, "-o", str(tmp_path)], seeded.env)
    assert r.code == 0, r
    target = tmp_path / path.removeprefix("tinker://").replace("/", "_")
    assert sorted(p.name for p in target.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert json.loads((target / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert "Downloaded to\t" + str(target) in r.stdout
    # the official CLI refuses sampler checkpoints; ours is a superset
    off = run_official(["checkpoint", "download", path, "-o", str(tmp_path / "o")], seeded.env)
    assert off.code == 1 and "Sampler checkpoints cannot be downloaded" in off.stderr


def _tar(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo("link")
            info.type, info.linkname = tarfile.SYMTYPE, symlink
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "entries,symlink",
    [({"../evil": b"x"}, None), ({"/etc/evil": b"x"}, None), ({"ok": b"x"}, "/etc/passwd")],
)
def test_safe_extract_refuses_escaping_entries(
    tmp_path: Path, entries: dict[str, bytes], symlink: str | None
) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar(entries, symlink=symlink))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CliError, match="Unsafe path in checkpoint archive"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_safe_extract_extracts_plain_and_gzip(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar({"adapter_config.json": b"{}", "sub/x.bin": b"12"}))
    assert sorted(safe_extract(archive, tmp_path / "d")) == ["adapter_config.json", "sub/x.bin"]
    assert (tmp_path / "d" / "sub" / "x.bin").read_bytes() == b"12"


# ------------------------------------------------------------------------------ push-hf
class FakeHfApi:
    """``huggingface_hub.HfApi`` at its boundary: records calls, keeps what was uploaded."""

    def __init__(self, readme: str | None = None, logged_in: bool = True) -> None:
        self.readme, self.logged_in = readme, logged_in
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, bytes] = {}

    def whoami(self) -> dict[str, str]:
        if not self.logged_in:
            raise RuntimeError("401 Unauthorized")
        return {"name": "me"}

    def create_repo(self, **kw: Any) -> str:
        self.calls.append(("create_repo", kw))
        return f"https://huggingface.co/{kw['repo_id']}"

    def hf_hub_download(self, *, repo_id: str, filename: str, revision: str | None) -> str:
        self.calls.append(("hf_hub_download", {"repo_id": repo_id, "revision": revision}))
        if self.readme is None:
            raise FileNotFoundError(filename)
        p = Path(self._tmp) / "remote-README.md"
        p.write_text(self.readme)
        return str(p)

    def upload_folder(self, **kw: Any) -> None:
        import fnmatch

        self.calls.append(("upload_folder", kw))
        folder = Path(kw["folder_path"])
        for f in folder.rglob("*"):
            rel = str(f.relative_to(folder))
            if any(fnmatch.fnmatch(rel, pat) for pat in kw["ignore_patterns"] or []):
                continue
            self.uploaded[rel] = f.read_bytes()


def test_push_hf_up_to_the_upload(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeHfApi()
    api._tmp = str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setattr(hub, "_hf_api", lambda: api)
    path = seeded.sampler_paths[-1]
    r = run_ours(["-f", "json", "checkpoint", "push-hf", path], seeded.env)
    assert r.code == 0, r
    run_id = path.split("/")[2]
    repo = hub.sanitize(f"tinker-byte-1m-{run_id}")
    assert ":" not in repo and repo.startswith("tinker-byte-1m-sess-")
    assert json.loads(r.stdout) == {"checkpoint_path": path, "repo_id": repo, "public": False}
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "hf_hub_download", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": repo, "private": True, "exist_ok": True}
    up = api.calls[2][1]
    assert up["revision"] == "sampler_weights-sampler-0" and up["repo_id"] == repo
    assert up["commit_message"] == f"Upload adapter from {path}"
    assert set(api.uploaded) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    card = api.uploaded["README.md"].decode()
    assert f"tinker_path: {path}" in card and "base_model: tinker-actors/byte-1m" in card
    assert "library_name: peft" in card and "- base_model:adapter:tinker-actors/byte-1m" in card
    assert "- LoRA rank: 5" in card  # run 1 has rank 5
    config = json.loads(api.uploaded["adapter_config.json"])
    assert config["base_model_name_or_path"] == MODEL

    # a repo whose README names another checkpoint is refused before any upload
    other = FakeHfApi(readme="tinker_path: tinker://someone-else/sampler_weights/x\n")
    other._tmp = str(tmp_path)  # type: ignore[attr-defined]
    monkeypatch.setattr(hub, "_hf_api", lambda: other)
    r = run_ours(["checkpoint", "push-hf", path, "-r", "me/adapter"], seeded.env)
    assert r.code == 1 and "different Tinker checkpoint" in r.stderr
    assert "upload_folder" not in [c[0] for c in other.calls]
    # not logged in: the fix is named, nothing is downloaded
    monkeypatch.setattr(hub, "_hf_api", lambda: FakeHfApi(logged_in=False))
    r = run_ours(["checkpoint", "push-hf", path], seeded.env)
    assert r.code == 1 and "hf auth login" in r.stderr


def test_adapter_config_patch_only_fills_a_missing_base_model(tmp_path: Path) -> None:
    cfg = tmp_path / "adapter_config.json"
    cfg.write_text(json.dumps({"r": 4, "base_model_name_or_path": None}))
    assert hub.patch_adapter_config(cfg, "org/base") is True
    text = cfg.read_text()
    assert text.endswith("}\n") and json.loads(text)["base_model_name_or_path"] == "org/base"
    assert hub.patch_adapter_config(cfg, "other/base") is False
    assert json.loads(cfg.read_text())["base_model_name_or_path"] == "org/base"
    assert hub.sanitize("tinker-Qwen/Qwen3:8B--x__") == "tinker-Qwen-Qwen3-8B-x"


# ------------------------------------------------------------------------------ output modes
def test_tables_use_rich_only_on_a_terminal_and_respect_no_color(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    render.print_table(["A", "B"], [["1", "x y"]], "T")
    out = capsys.readouterr()
    assert out.out == "A\tB\n1\tx y\n" and out.err == "T\n"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    render.print_table(["A", "B"], [["1", "x y"]], "T")
    text = tty.getvalue()
    assert "┃ A" in text and "x y" in text and "\x1b[" not in text


def test_times_are_humanized_in_tables_and_iso_in_json() -> None:
    import datetime as dt

    now = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    assert render.format_time(now - dt.timedelta(seconds=5), now) == "just now"
    assert render.format_time(now - dt.timedelta(hours=3, minutes=2), now) == "3 hours ago"
    assert render.format_time(now + dt.timedelta(days=2, hours=1), now) == "in 2 days"
    assert render.format_time(now - dt.timedelta(days=40), now) == "2026-04-22"
    assert render.format_time(None) == "N/A"
    assert render.jsonable({"t": now}) == {"t": "2026-06-01T12:00:00+00:00"}
    assert render.format_size(1536) == "1.5 KB" and render.format_size(12) == "12 B"


def test_python_dash_m_and_help() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "tinker_actors", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0
    for name in ("auth", "billing", "checkpoint", "model", "run", "session", "version", "sample"):
        assert f"  {name}" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "tinker_actors", "version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.startswith("tinker-actors ")
    r = subprocess.run(
        [sys.executable, "-m", "tinker_actors", "run", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TINKER_BASE_URL": ""},
    )
    assert r.returncode == 1 and r.stdout == "" and "TINKER_BASE_URL" in r.stderr


def test_generated_commands_take_their_parameters_from_the_route() -> None:
    from click.testing import CliRunner

    from tinker_actors.cli import cli

    r = CliRunner().invoke(cli, ["checkpoint", "set-ttl", "--help"])
    assert "CHECKPOINT_PATH" in r.output and "--ttl" in r.output
    assert "PUT /api/v1/training_runs/{run_id}/checkpoints/{checkpoint_id}/ttl" in r.output
    r = CliRunner().invoke(cli, ["run", "info", "--help"])
    assert "RUN_ID" in r.output and "--access-scope [owned|accessible]" in r.output
    r = CliRunner().invoke(cli, ["session", "info", "--help"])
    assert "SESSION_ID" in r.output
    r = CliRunner().invoke(cli, ["billing", "usage", "--help"])
    assert "STARTING_ON ENDING_BEFORE" in r.output


def test_exec_runs_unedited_tinker_code_and_passes_its_status(tmp_path: Path) -> None:
    code = "import tinker, sys; print(tinker.ServiceClient.__module__); sys.exit(3)"
    r = subprocess.run(
        [sys.executable, "-m", "tinker_actors", "exec", "--", "python", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip().startswith("tinker_actors.")
    r = subprocess.run(
        [sys.executable, "-m", "tinker_actors", "exec", "--", "no-such-command-xyz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 127 and "command not found" in r.stderr


def test_auth_login_stores_a_checked_key_and_logout_removes_it(
    seeded: Seeded, tmp_path: Path
) -> None:
    env = {**seeded.env, "HOME": str(tmp_path), "TINKER_API_KEY": "", "TINKER_CREDENTIAL_CMD": ""}
    r = run_ours(["auth", "status"], env)
    assert r.code == 1 and "Credentials available: no" in r.stdout and "auth login" in r.stderr
    r = run_ours(["auth", "login"], env, input="tml-wrong-key-000\n")
    assert r.code == 1 and "Could not validate the API key" in r.stderr
    assert not (tmp_path / ".tinker" / "credentials.json").exists()
    r = run_ours(["auth", "login"], env, input=seeded.server.api_key + "\n")
    assert r.code == 0, r
    assert "Logged in as " in r.stdout and "as the default credential" in r.stdout
    assert seeded.server.api_key not in r.stdout + r.stderr
    stored = tmp_path / ".tinker" / "credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    r = run_ours(["auth", "status"], env)
    assert r.code == 0 and "Tinker accessible: yes" in r.stdout
    assert run_ours(["-f", "json", "run", "list"], env).code == 0  # the stored key is used
    r = run_ours(["auth", "login"], env, input=seeded.server.api_key + "\n")
    assert r.code == 1 and "Already logged in" in r.stderr
    r = run_ours(["auth", "logout"], env)
    assert r.code == 0 and "The API key is still active" in r.stdout
    r = run_ours(["auth", "logout"], env)
    assert r.code == 1 and "No default credential is stored" in r.stderr
