"""The OpenAPI export is the server's truth: schemathesis, driven by the export, against the
local server (null engine) finds no 5xx, no undocumented status code, no response that
breaks its schema, no schema-valid request refused and no schema-invalid one accepted.

Bounded and seeded: a fixed number of examples per operation and a fixed seed, so the run is
a test (tens of seconds), not a fuzzing campaign. Run the CLI the same way by hand for more
(``schemathesis run`` with ``--max-examples`` larger; see docs/server.md).

Two documented exceptions to "schema-valid means accepted", both about what JSON Schema
cannot say: a protobuf body is any bytes to the schema (``forward_backward``), and a
TensorData's ``shape`` must match its ``data`` length (``forward``'s legacy JSON data).
A future id the server never issued answers 410 (the protocol's "unknown or expired").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tinker_actors.openapi import build_openapi
from tinker_actors.server import LocalServer

pytest.importorskip("schemathesis")

HERE = Path(__file__).parent
SEED = 20261201
MAX_EXAMPLES = 4
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "429", "5xx"]

# Stateful checks need links between operations; test_users.py covers ownership instead.
[checks.use_after_free]
enabled = false

[checks.ensure_resource_availability]
enabled = false

[checks.object_level_authorization]
enabled = false

[[operations]]
include-operation-id = "forward_backward"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-operation-id = "forward"
checks.positive_data_acceptance.enabled = false
"""


def _post(srv: LocalServer, path: str, body: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        srv.base_url + "/api/v1" + path,
        data=json.dumps(body).encode(),
        headers={"X-API-Key": srv.api_key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


def _result(srv: LocalServer, request_id: str) -> Any:
    while True:  # the server long-polls, so this is no busy loop
        out = _post(srv, "/retrieve_future", {"request_id": request_id})
        if out.get("type") != "try_again":
            return out


def _seed(srv: LocalServer) -> dict[str, str]:
    """Real ids for the path parameters, so operations on them get past the 404."""
    sid = _post(srv, "/create_session", {"tags": [], "sdk_version": "schemathesis"})["session_id"]
    fut = _post(
        srv,
        "/create_model",
        {"session_id": sid, "model_seq_id": 0, "base_model": "tinker-actors/byte-1m"},
    )
    run = _result(srv, fut["request_id"])["model_id"]
    for seq, path in ((1, "/save_weights"), (2, "/save_weights_external")):
        fut = _post(srv, path, {"model_id": run, "seq_id": seq, "path": "ck"})
        assert "path" in _result(srv, fut["request_id"])
    sampler = _post(
        srv,
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": "tinker-actors/byte-1m"},
    )["sampling_session_id"]
    return {
        "session_id": sid,
        "run_id": run,
        "sampling_session_id": sampler,
        "checkpoint_kind": "weights",
        "checkpoint_name": "ck",
        "name": "ck",
    }


def test_schemathesis_finds_no_disagreement_between_the_export_and_the_server(tmp_path):
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(build_openapi()))
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'hooks = "{HERE / "_schemathesis_hooks.py"}"\n' + CONFIG)
    srv = LocalServer(
        port=0,
        data_dir=tmp_path / "server",
        engine="null",
        api_key="tml-schemathesis",
        long_poll_s=0.05,
    ).start_in_thread()
    try:
        params = "".join(f'"{k}" = "{v}"\n' for k, v in _seed(srv).items())
        config.write_text(config.read_text() + "\n[parameters]\n" + params)
        proc = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "--config-file",
                str(config),
                "run",
                str(schema),
                *("--url", srv.base_url, "-H", "X-API-Key: tml-schemathesis"),
                *("--phases", "examples,coverage,fuzzing"),
                *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)),
                *("--workers", "1", "--request-timeout", "20", "--no-color"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
        statuses = srv.stats()["statuses"]
    finally:
        srv.stop_in_thread()
    out = proc.stdout + proc.stderr
    summary = re.search(r"Test cases:\s*\n\s*(.+)", out)
    print(f"schemathesis: {summary.group(1) if summary else '?'}; statuses {statuses}")
    assert proc.returncode == 0, out[-12000:]
    assert not any(code.startswith("5") for code in statuses), statuses
    assert sum(statuses.values()) > 1000  # it did exercise the server
