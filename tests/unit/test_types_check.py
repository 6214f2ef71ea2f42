"""The package's types hold for user code: mypy (the project's near-strict config) accepts the
README's example, and the client futures are generic (``.result()`` has the client's type).

The README's first ```python block is read at test time, so the check follows the README.
Errors inside tinker_actors itself are not this test's business (``mypy tinker_actors`` is);
the package's modules are followed silently, for their types only.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="mypy comes with the dev extra")

ROOT = Path(__file__).resolve().parents[2]
# Apart from the cache of ``mypy tinker_actors`` (other options: would invalidate it).
CACHE_DIR = ROOT / ".mypy_cache" / "test_types_check"

FUTURES = """
from typing import assert_type

import tinker_actors
from tinker_actors import (
    ForwardBackwardOutput,
    RestClient,
    SampleResponse,
    SamplingClient,
    ServiceClient,
    TrainingClient,
)


async def _client_futures(service: ServiceClient) -> None:
    lora = service.create_lora_training_client(base_model="m")
    assert_type(lora.result(), TrainingClient)
    assert_type(await lora, TrainingClient)
    assert_type(await lora.result_async(), TrainingClient)
    assert_type(await service.create_lora_training_client_async(base_model="m"), TrainingClient)
    assert_type(service.create_training_client_from_state("tinker://x").result(), TrainingClient)
    assert_type(
        await service.create_training_client_from_state_async("tinker://x"), TrainingClient
    )
    assert_type(
        service.create_training_client_from_state_with_optimizer("tinker://x").result(),
        TrainingClient,
    )
    assert_type(
        await service.create_training_client_from_state_with_optimizer_async("tinker://x"),
        TrainingClient,
    )
    assert_type(service.create_sampling_client(base_model="m").result(), SamplingClient)
    assert_type(await service.create_sampling_client_async(base_model="m"), SamplingClient)
    assert_type(service.create_rest_client(), RestClient)

    training = lora.result()
    assert_type(training.save_weights_and_get_sampling_client().result(), SamplingClient)
    assert_type(training.forward_backward([], "cross_entropy").result(), ForwardBackwardOutput)
    sampler = service.create_sampling_client(base_model="m").result()
    prompt = tinker_actors.ModelInput.from_ints([1, 2])
    params = tinker_actors.SamplingParams(max_tokens=1)
    assert_type(sampler.sample(prompt, 1, params).result(), SampleResponse)
"""


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert m is not None, "README.md has no ```python block"
    return m.group(1)


def _mypy(path: Path) -> tuple[str, int]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--follow-imports=silent",
            "--cache-dir",
            str(CACHE_DIR),
            "--no-error-summary",
            "--show-error-codes",
            str(path),
        ]
    )
    return out + err, status


def test_readme_example_and_client_futures_type_check(tmp_path: Path) -> None:
    snippet = tmp_path / "readme_example.py"
    # the README's code runs at import time; wrapping it in a function keeps it unexecuted
    # and checked the same
    body = textwrap.indent(readme_example(), "    ")
    snippet.write_text(f"{FUTURES}\n\ndef _readme() -> None:\n{body}\n")
    report, status = _mypy(snippet)
    assert status == 0, (
        f"mypy on the README example:\n{report}\n--- checked:\n{snippet.read_text()}"
    )


def test_a_wrong_type_is_reported(tmp_path: Path) -> None:
    """The check can fail: a client future's result is not some other client."""
    snippet = tmp_path / "wrong.py"
    snippet.write_text(
        "from typing import assert_type\n"
        "from tinker_actors import SamplingClient, ServiceClient\n"
        "def f(s: ServiceClient) -> None:\n"
        '    assert_type(s.create_lora_training_client(base_model="m").result(), SamplingClient)\n'
    )
    report, status = _mypy(snippet)
    assert status == 1 and "assert-type" in report, report
