"""Recipe: a long training loop that survives its server being killed and restarted.

The script runs its own local server as a child process (``tinker-actors serve``), so that it
can kill it: with SIGKILL halfway through the loop, then starts it again on the same port and
data directory. The ServiceClient has a RecoveryPolicy: the client retries through the
outage, the training actor learns that the server lost the live model, rebuilds it from the
last ``save_state`` checkpoint and replays the steps reported done since then. The loop
itself never sees the crash; at the end the server's own step counter is compared with the
number of steps the loop was told succeeded.

This recipe ignores TINKER_BASE_URL (it must own the server it kills).
Env: TINKER_BASE_MODEL, TINKER_STEPS (40), TINKER_SAVE_EVERY (10), TINKER_ENGINE (torch).
Prints ``RESULT steps=N ok=N failed=N server_steps=N models=N``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request

import _common as c

import tinker_actors as tinker

KEY = "tml-restart-demo-key"


class ServerProcess:
    """``tinker-actors serve`` on a fixed port and data dir, restartable."""

    def __init__(self, data_dir: str, engine: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.data_dir, self.engine = data_dir, engine
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tinker_actors",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                self.data_dir,
                "--engine",
                self.engine,
                "--api-key",
                KEY,
                "--stats",
                "--quiet",
                "--long-poll",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # it prints TINKER_BASE_URL=... once it serves
            if line.strip().startswith("TINKER_BASE_URL="):
                return
        raise RuntimeError("the server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def optimizer_steps(self, model_id: str) -> int:
        req = urllib.request.Request(
            f"{self.base_url}/api/v1/_local/stats", headers={"X-API-Key": KEY}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(json.load(resp)["models"][model_id]["optimizer_steps"])


def main() -> None:
    steps = c.env_int("TINKER_STEPS", 40)
    save_every = c.env_int("TINKER_SAVE_EVERY", 10)
    if os.environ.get("TINKER_BASE_URL"):
        print("(TINKER_BASE_URL is ignored: this recipe runs, kills and restarts its own server)")
    with tempfile.TemporaryDirectory() as data_dir:
        server = ServerProcess(data_dir, c.env_str("TINKER_ENGINE", "torch"))
        server.start()
        print(f"server started at {server.base_url}")
        try:
            service = tinker.ServiceClient(
                base_url=server.base_url, api_key=KEY, recovery_policy=tinker.RecoveryPolicy()
            )
            training = service.create_lora_training_client(
                base_model=c.base_model(), rank=8, seed=0
            ).result()
            datum = c.text_datum(
                tinker, training.get_tokenizer(), "the quick brown fox jumps over the lazy dog"
            )
            models, ok, failed = {training.model_id}, 0, 0
            kill_before = steps // 2 + save_every // 2 + 1  # mid-interval: steps to replay
            for step in range(1, steps + 1):
                if step == kill_before:
                    server.kill()
                    print(f"-- server killed (SIGKILL) before step {step}", flush=True)
                    server.start()
                    print("-- server restarted on the same port and data dir", flush=True)
                fwd = training.forward_backward([datum], "cross_entropy")
                opt = training.optim_step(tinker.AdamParams(learning_rate=1e-3))
                try:
                    loss = fwd.result().metrics["loss:sum"]
                    opt.result()
                    ok += 1
                except tinker.TinkerError as exc:  # reported, never replayed
                    failed += 1
                    print(f"step {step:3d} failed: {exc}")
                    continue
                models.add(training.model_id)
                if step % save_every == 0:
                    training.save_state(f"step-{step}").result()
                print(
                    f"step {step:3d}/{steps}  loss {loss:8.3f}  model {training.model_id}",
                    flush=True,
                )
            server_steps = server.optimizer_steps(training.model_id)
            print(
                f"the server applied {server_steps} steps to the rebuilt model; the loop was told {ok} succeeded"
            )
            print(
                f"RESULT steps={steps} ok={ok} failed={failed} server_steps={server_steps} models={len(models)}"
            )
            service.close("success").result()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
