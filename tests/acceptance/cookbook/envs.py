"""A tiny deterministic RL task on tinker-cookbook's own ``Env`` types, for the acceptance run.

The policy is asked to write lowercase text; the reward is the fraction of the sampled bytes
that are lowercase letters or spaces. Rewards differ within a group (so advantages are not all
zero and the loss moves), and they depend only on the sampled tokens, so two runs that sample
the same tokens get the same rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import chz
import tinker
from tinker_cookbook import renderers
from tinker_cookbook.completers import StopCondition
from tinker_cookbook.rl.types import (
    Action,
    ActionExtra,
    Env,
    EnvGroupBuilder,
    Observation,
    RLDataset,
    RLDatasetBuilder,
    StepResult,
)
from tinker_cookbook.tokenizer_utils import get_tokenizer

LOWER = frozenset("abcdefghijklmnopqrstuvwxyz ")
PROMPTS = ["write: cat", "write: dog", "write: sun", "write: sea", "write: owl", "write: elk"]


class LowercaseEnv(Env):
    """One turn: the prompt rendered by the renderer, reward = lowercase fraction."""

    def __init__(self, renderer: renderers.Renderer, prompt: str) -> None:
        self.renderer = renderer
        self.prompt = prompt

    @property
    def stop_condition(self) -> StopCondition:
        return self.renderer.get_stop_sequences()

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        convo: list[renderers.Message] = [{"role": "user", "content": self.prompt}]
        return self.renderer.build_generation_prompt(convo), self.stop_condition

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        message, _ = self.renderer.parse_response(action)
        text = renderers.get_text_content(message)
        reward = sum(c in LOWER for c in text) / max(len(text), 1)
        return StepResult(
            reward=reward,
            episode_done=True,
            next_observation=tinker.ModelInput.empty(),
            next_stop_condition=self.stop_condition,
            metrics={"lowercase_frac": reward},
        )


@dataclass(frozen=True)
class LowercaseGroupBuilder(EnvGroupBuilder):
    """``group_size`` copies of one prompt (GRPO-style centring across the group)."""

    model_name: str
    renderer_name: str
    prompt: str
    group_size: int

    async def make_envs(self) -> Sequence[Env]:
        renderer = renderers.get_renderer(self.renderer_name, get_tokenizer(self.model_name))
        return [LowercaseEnv(renderer, self.prompt) for _ in range(self.group_size)]

    def logging_tags(self) -> list[str]:
        return ["lowercase"]


class LowercaseDataset(RLDataset):
    def __init__(self, builders: list[LowercaseGroupBuilder], groups_per_batch: int) -> None:
        self.builders = builders
        self.groups_per_batch = groups_per_batch

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        start = index * self.groups_per_batch
        return self.builders[start : start + self.groups_per_batch]

    def __len__(self) -> int:
        return len(self.builders) // self.groups_per_batch


@chz.chz
class LowercaseDatasetBuilder(RLDatasetBuilder):
    model_name: str
    renderer_name: str
    groups_per_batch: int = 2
    group_size: int = 4

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        builders = [
            LowercaseGroupBuilder(self.model_name, self.renderer_name, p, self.group_size)
            for p in PROMPTS
        ]
        return LowercaseDataset(builders, self.groups_per_batch), None
