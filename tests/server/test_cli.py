"""``python -m tinker_actors.server`` / ``tinker-actors serve`` start, print, serve and stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tinker_actors.cli import main as cli_main


def test_serve_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--data-dir", "--api-key", "--engine", "--device"):
        assert flag in out


def test_python_m_server_prints_url_and_key_and_stops_on_sigterm(tmp_path):
    env = {**os.environ, "TINKER_API_KEY": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tinker_actors.server",
            "--port",
            "0",
            "--engine",
            "null",
            "--data-dir",
            str(tmp_path),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        lines = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if "=" in line:
                k, _, v = line.strip().partition("=")
                lines[k] = v
            if "TINKER_API_KEY" in lines:
                break
        base, key = lines["TINKER_BASE_URL"], lines["TINKER_API_KEY"]
        assert base.startswith("http://127.0.0.1:") and key.startswith("tml-")
        with urllib.request.urlopen(base + "/api/v1/healthz", timeout=10) as resp:
            assert json.load(resp) == {"status": "ok"}
        req = urllib.request.Request(
            base + "/api/v1/get_server_capabilities", headers={"X-API-Key": key}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["engine"]["name"] == "null"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
