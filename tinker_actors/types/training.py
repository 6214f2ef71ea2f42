"""Training-side requests and results: models, forward/backward, optimizer, weights."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from . import _validate as _v
from ._base import WireStruct, always, force_set
from ._bounds import LoraRank, Seed, SeqId, TtlSeconds
from .datum import Datum, LossFnOutput

ModelID = str
LossFnType = Literal[
    "cross_entropy",
    "importance_sampling",
    "ppo",
    "cispo",
    "dro",
    "gspo",
    "stable_reinforce",
    "custom",
]
SamplingClientKind = Literal["snapshot", "inflight"]


# -- optimizer ---------------------------------------------------------------------------
class AdamParams(WireStruct):
    """AdamW hyper-parameters; every key is always sent."""

    learning_rate: float = always(0.0001)
    beta1: float = always(0.9)
    beta2: float = always(0.95)
    eps: float = always(1e-12)
    weight_decay: float = always(0.0)
    grad_clip_norm: float = always(0.0)

    def __post_init__(self) -> None:
        # Types only (the official pydantic model checks them); ranges are the server's.
        for name in self.__struct_fields__:
            v = getattr(self, name)
            if type(v) is not float:
                force_set(self, name, _v.as_float("AdamParams", name, v))


class DimuonParams(WireStruct, tag_field="type", tag="dimuon"):
    """Parameters of the Dimuon optimizer family."""

    learning_rate: float
    grad_clip_norm: float = always(0.0)
    beta1: float = always(0.9)

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            v = getattr(self, name)
            if type(v) is not float:
                force_set(self, name, _v.as_float("DimuonParams", name, v))
        if self.learning_rate < 0:
            raise ValueError("learning_rate must be >= 0")
        if not 0 <= self.beta1 < 1:
            raise ValueError("beta1 must be in [0, 1)")


class AdamOptimizerConfig(WireStruct, tag_field="type", tag="adamw"):
    """Selects AdamW at model creation (the default)."""

    @property
    def type(self) -> str:
        return "adamw"


class DimuonOptimizerConfig(WireStruct, tag_field="type", tag="dimuon"):
    """Selects Dimuon at model creation."""

    version: Literal[1] = always(1)

    @property
    def type(self) -> str:
        return "dimuon"


OptimizerConfig = AdamOptimizerConfig | DimuonOptimizerConfig
OptimParams = AdamParams | DimuonParams


class LoraConfig(WireStruct):
    """LoRA adapter settings (the SDK uses rank=32 and every train_* true)."""

    rank: LoraRank
    seed: Seed | None = None
    train_unembed: bool = always(True)
    train_mlp: bool = always(True)
    train_attn: bool = always(True)

    def __post_init__(self) -> None:
        if type(self.rank) is not int:
            force_set(self, "rank", _v.as_int("LoraConfig", "rank", self.rank))
        if self.seed is not None and type(self.seed) is not int:
            force_set(self, "seed", _v.as_int("LoraConfig", "seed", self.seed))
        for name in ("train_unembed", "train_mlp", "train_attn"):
            v = getattr(self, name)
            if type(v) is not bool:
                force_set(self, name, _v.as_bool("LoraConfig", name, v))


# -- models -------------------------------------------------------------------------------
class CreateModelRequest(WireStruct, tag_field="type", tag="create_model"):
    session_id: str
    model_seq_id: SeqId
    base_model: str
    user_metadata: dict[str, Any] | None = None
    lora_config: LoraConfig | None = None
    optimizer_config: OptimizerConfig = msgspec.field(default_factory=AdamOptimizerConfig)


class CreateModelResponse(WireStruct, tag_field="type", tag="create_model"):
    model_id: ModelID


class ModelData(WireStruct):
    arch: str | None = None
    model_name: str | None = None
    tokenizer_id: str | None = None


class GetInfoRequest(WireStruct, tag_field="type", tag="get_info"):
    model_id: ModelID


class GetInfoResponse(WireStruct):
    model_data: ModelData
    model_id: ModelID
    type: Literal["get_info"] | None = None
    optimizer_config: OptimizerConfig = msgspec.field(default_factory=AdamOptimizerConfig)
    is_lora: bool | None = None
    lora_rank: int | None = None
    model_name: str | None = None


class UnloadModelRequest(WireStruct, tag_field="type", tag="unload_model"):
    model_id: ModelID


class UnloadModelResponse(WireStruct):
    model_id: ModelID
    type: Literal["unload_model"] | None = None


# -- forward / backward ---------------------------------------------------------------------
class ForwardBackwardInput(WireStruct):
    data: list[Datum]
    loss_fn: str
    loss_fn_config: dict[str, float | str] | None = None


class ForwardBackwardRequest(WireStruct):
    """The legacy JSON fwd/bwd body (``forward_backward_input`` envelope)."""

    forward_backward_input: ForwardBackwardInput
    model_id: ModelID
    seq_id: SeqId | None = None


class ForwardRequest(WireStruct):
    """The legacy JSON ``POST /forward`` body."""

    forward_input: ForwardBackwardInput
    model_id: ModelID
    seq_id: SeqId | None = None


class ForwardBackwardProtoRequest(WireStruct):
    """A decoded protobuf fwd/bwd body, flattened; ``loss_fn_config`` has v2 merged in."""

    model_id: ModelID
    seq_id: SeqId
    data: list[Datum]
    loss_fn: str
    loss_fn_config: dict[str, float | str] | None = None
    forward_only: bool = False


class ForwardBackwardOutput(WireStruct):
    """Per-datum loss outputs (``{"logprobs": TensorData}``...) and ``name:reduction`` metrics."""

    loss_fn_output_type: str
    loss_fn_outputs: list[LossFnOutput]
    metrics: dict[str, float] = always({})


class OptimStepRequest(WireStruct, tag_field="type", tag="optim_step"):
    """Exactly one of ``adam_params`` / ``optimizer_params`` is set.

    ``optim_params`` (the SDK's attribute name, and an accepted input alias)
    is folded into the right one.
    """

    model_id: ModelID
    seq_id: SeqId | None = None
    adam_params: AdamParams | None = None
    optimizer_params: DimuonParams | None = None
    # Input alias: an AdamParams or DimuonParams, or (decoded from JSON) either as an object,
    # told apart by ``"type": "dimuon"``. Typed Any because msgspec cannot union an untagged
    # and a tagged Struct; __post_init__ converts and validates it.
    optim_params: Any = None

    def __post_init__(self) -> None:
        p = self.optim_params
        if isinstance(p, dict):
            kind = DimuonParams if p.get("type") == "dimuon" else AdamParams
            try:
                p = msgspec.convert(p, kind, strict=False)
            except msgspec.ValidationError as exc:
                raise ValueError(f"optim_params: {exc}") from None
        if p is not None:
            force_set(self, "optim_params", None)
            if isinstance(p, AdamParams):
                force_set(self, "adam_params", p)
            else:
                force_set(self, "optimizer_params", p)

    @property
    def params(self) -> OptimParams | None:
        return self.adam_params if self.adam_params is not None else self.optimizer_params


class OptimStepResponse(WireStruct):
    metrics: dict[str, float] | None = None


# -- weights --------------------------------------------------------------------------------
class SaveWeightsRequest(WireStruct, tag_field="type", tag="save_weights"):
    model_id: ModelID
    path: str | None = None
    seq_id: SeqId | None = None
    ttl_seconds: TtlSeconds | None = None
    overwrite: bool = always(False)
    user_metadata: dict[str, str] | None = None


class SaveWeightsResponse(WireStruct):
    path: str
    type: Literal["save_weights"] | None = None

    def get_console_url(self) -> str:
        from ..tinker_path import checkpoint_console_url

        return checkpoint_console_url(self.path)


class SaveWeightsForSamplerRequest(WireStruct, tag_field="type", tag="save_weights_for_sampler"):
    model_id: ModelID
    path: str | None = None
    sampling_session_seq_id: SeqId | None = None
    kind: SamplingClientKind = always("snapshot")
    seq_id: SeqId | None = None
    ttl_seconds: TtlSeconds | None = None
    user_metadata: dict[str, str] | None = None


class SaveWeightsForSamplerResponseInternal(WireStruct):
    path: str | None = None
    sampling_session_id: str | None = None
    type: Literal["save_weights_for_sampler"] | None = None


class SaveWeightsForSamplerResponse(WireStruct):
    path: str
    type: Literal["save_weights_for_sampler"] | None = None

    def get_console_url(self) -> str:
        from ..tinker_path import checkpoint_console_url

        return checkpoint_console_url(self.path)


class SaveWeightsExternalRequest(WireStruct, tag_field="type", tag="save_weights_external"):
    model_id: ModelID
    path: str
    seq_id: SeqId | None = None
    ttl_seconds: TtlSeconds | None = None
    age_encryption_recipients: list[str] | None = None


class SaveWeightsExternalResponseInternal(WireStruct):
    path: str | None = None
    size_bytes: int | None = None
    type: Literal["save_weights_external"] | None = None


class SaveWeightsExternalResponse(WireStruct):
    path: str
    type: Literal["save_weights_external"] | None = None


class LoadWeightsRequest(WireStruct, tag_field="type", tag="load_weights", kw_only=True):
    """Create-via-load (session_id + model_seq_id) or legacy (model_id + seq_id)."""

    model_id: ModelID | None = None
    seq_id: SeqId | None = None
    session_id: str | None = None
    model_seq_id: SeqId | None = None
    base_model: str | None = None
    user_metadata: dict[str, Any] | None = None
    path: str
    optimizer: bool
    optimizer_config: OptimizerConfig | None = None
    weights_access_token: str | None = None


class LoadWeightsResponse(WireStruct):
    path: str | None = None
    model_id: str | None = None
    type: Literal["load_weights"] | None = None


class WeightsInfoRequest(WireStruct):
    tinker_path: str


class WeightsInfoResponse(WireStruct, kw_only=True):
    base_model: str
    optimizer_config: OptimizerConfig = msgspec.field(default_factory=AdamOptimizerConfig)
    is_lora: bool
    lora_rank: int | None = None
    train_unembed: bool | None = None
    train_mlp: bool | None = None
    train_attn: bool | None = None


class CopyWeightsRequest(WireStruct, kw_only=True):
    session_id: str | None = None
    model_seq_id: SeqId | None = None
    destination_project_id: str | None = None
    source_path: str
    ttl_seconds: TtlSeconds | None = None
    weights_access_token: str | None = None


class CopyWeightsResponse(WireStruct):
    tinker_path: str


# -- custom losses ---------------------------------------------------------------------------
CustomLossNodeOp = Literal[
    "placeholder", "get_attr", "call_function", "call_method", "call_module", "output"
]
CustomLossInputRank = Literal[0, 1, 2]


class CustomLossInput(WireStruct):
    name: str
    rank: CustomLossInputRank


class CustomLossNode(WireStruct):
    op: CustomLossNodeOp
    name: str
    target: str
    args: list[Any] = always([])
    kwargs: dict[str, Any] = always({})


class CustomLossGraph(WireStruct, kw_only=True):
    format: Literal[1] = always(1)
    nodes: list[CustomLossNode]


class CreateCustomLossRequest(WireStruct, tag_field="type", tag="create_custom_loss"):
    session_id: str
    custom_loss_seq_id: SeqId
    name: str
    inputs: list[CustomLossInput]
    graph: CustomLossGraph


class CreateCustomLossResponse(WireStruct, tag_field="type", tag="create_custom_loss"):
    loss_id: str
