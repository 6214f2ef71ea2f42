"""Base classes and msgspec hooks shared by every wire type.

Wire types are msgspec Structs (fast, typed, no I/O). Two conventions carry the
official SDK's ``exclude_none=True`` JSON behaviour:

* fields that default to ``None`` are omitted on encode (``omit_defaults``);
* fields with a non-None default are always sent, so they use :func:`always`
  (a default *factory*, which ``omit_defaults`` never drops).

The pydantic-style helpers (``model_dump``, ``model_copy``, ``model_validate``)
exist because user code written for the official SDK calls them.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import enum
from collections.abc import Callable
from typing import Any, Self, TypeVar, dataclass_transform

import msgspec
import numpy as np

T = TypeVar("T")

# Filled in by tensor.py (avoids an import cycle); used by the hooks below.
_CUSTOM_ENCODERS: dict[type, Callable[[Any], Any]] = {}
_CUSTOM_DECODERS: dict[type, Callable[[Any], Any]] = {}
_CUSTOM_SCHEMAS: dict[type, dict[str, Any]] = {}


def always(value: Any) -> Any:
    """A default that is always encoded, even when equal to the default.

    ``omit_defaults`` only drops plain defaults and the builtin collection
    factories, so wrapping the value in a lambda keeps it on the wire.
    """
    if isinstance(value, list | dict):
        return msgspec.field(default_factory=lambda: copy.copy(value))
    return msgspec.field(default_factory=lambda: value)


def enc_hook(obj: Any) -> Any:
    """Encode the non-msgspec values our types hold (TensorData, numpy)."""
    enc = _CUSTOM_ENCODERS.get(type(obj))
    if enc is not None:
        return enc(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    for cls, fn in _CUSTOM_ENCODERS.items():
        if isinstance(obj, cls):
            return fn(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def dec_hook(type_: type, obj: Any) -> Any:
    """Decode the custom types (TensorData) from their JSON builtins."""
    dec = _CUSTOM_DECODERS.get(type_)
    if dec is not None:
        return dec(obj)
    raise NotImplementedError(f"cannot decode {type_!r}")


def schema_hook(type_: type) -> dict[str, Any]:
    """JSON schema for the custom types (used by the OpenAPI export)."""
    schema = _CUSTOM_SCHEMAS.get(type_)
    if schema is not None:
        return schema
    raise NotImplementedError(f"no schema for {type_!r}")


def _to_python(value: Any, mode: str, exclude_none: bool) -> Any:
    """Recursive pydantic-like dump (all fields, tag included)."""
    if isinstance(value, WireStruct):
        return value.model_dump(mode=mode, exclude_none=exclude_none)
    if isinstance(value, msgspec.Struct):
        return _to_python(msgspec.structs.asdict(value), mode, exclude_none)
    if isinstance(value, dict):
        return {k: _to_python(v, mode, exclude_none) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_python(v, mode, exclude_none) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    enc = _CUSTOM_ENCODERS.get(type(value))
    if enc is not None:
        return enc(value)
    if mode == "json":
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        if isinstance(value, _dt.datetime | _dt.date):
            return msgspec.to_builtins(value)
        if isinstance(value, enum.Enum):
            return value.value
    return value


class FieldInfo:
    """What ``Model.model_fields[name]`` gives in pydantic: annotation, default, requiredness."""

    __slots__ = ("annotation", "default", "default_factory")

    def __init__(self, annotation: Any, default: Any, default_factory: Any) -> None:
        self.annotation = annotation
        self.default = default
        self.default_factory = default_factory

    def is_required(self) -> bool:
        return self.default is msgspec.NODEFAULT and self.default_factory is msgspec.NODEFAULT

    def get_default(self, *, call_default_factory: bool = False) -> Any:
        if self.default_factory is not msgspec.NODEFAULT:
            return self.default_factory() if call_default_factory else None
        return None if self.default is msgspec.NODEFAULT else self.default

    def __repr__(self) -> str:
        req = "required=True" if self.is_required() else f"default={self.get_default()!r}"
        return f"FieldInfo(annotation={self.annotation!r}, {req})"


class _ModelFields:
    """``Model.model_fields``: the fields by name (the tag included), built once per class."""

    def __get__(self, obj: Any, cls: type) -> dict[str, FieldInfo]:
        cached = cls.__dict__.get("_model_fields_cache")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        out = {}
        for f in msgspec.structs.fields(cls):
            default, factory = f.default, f.default_factory
            if factory is not msgspec.NODEFAULT:
                value = factory()  # always(x) wraps a plain default in a factory
                if not isinstance(value, list | dict | set):
                    default, factory = value, msgspec.NODEFAULT
            out[f.name] = FieldInfo(f.type, default, factory)
        cfg = cls.__struct_config__  # type: ignore[attr-defined]
        if cfg.tag_field is not None:
            out[cfg.tag_field] = FieldInfo(str, cfg.tag, msgspec.NODEFAULT)
        type.__setattr__(cls, "_model_fields_cache", out)
        return out


# Subclasses inherit ``frozen`` from msgspec at run time; type checkers need to be told.
@dataclass_transform(field_specifiers=(msgspec.field,), frozen_default=True)
class WireStruct(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """Base of every wire type: None fields omitted.

    ``kw_only`` is per class in msgspec (not inherited): subclasses whose field order
    needs it say so. No metaclass, so type checkers see msgspec's dataclass_transform.
    """

    # -- pydantic compatibility shims -------------------------------------------------
    model_fields = _ModelFields()

    def model_dump(
        self, *, mode: str = "python", exclude_none: bool = False, **_: Any
    ) -> dict[str, Any]:
        """All fields as a dict (like pydantic), the ``type`` tag included."""
        out: dict[str, Any] = {}
        cfg = type(self).__struct_config__
        if cfg.tag_field is not None:
            out[cfg.tag_field] = cfg.tag
        for name in self.__struct_fields__:
            v = getattr(self, name)
            if exclude_none and v is None:
                continue
            out[name] = _to_python(v, mode, exclude_none)
        return out

    def model_dump_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`model_dump` (``mode="json"``)."""
        kwargs.pop("indent", None)
        return msgspec.json.encode(
            self.model_dump(mode="json", **kwargs), enc_hook=enc_hook
        ).decode()

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied (pydantic's ``model_copy``)."""
        base = copy.deepcopy(self) if deep else self
        return msgspec.structs.replace(base, **(update or {}))

    @classmethod
    def model_validate(cls, obj: Any, **_: Any) -> Self:
        """Build from a dict (or an instance), as pydantic's ``model_validate``."""
        if isinstance(obj, cls):
            return obj
        if isinstance(obj, msgspec.Struct):
            obj = obj.model_dump() if isinstance(obj, WireStruct) else msgspec.structs.asdict(obj)
        return msgspec.convert(obj, cls, strict=False, dec_hook=dec_hook)

    @classmethod
    def model_validate_json(cls, data: str | bytes, **_: Any) -> Self:
        """Decode JSON text into this type."""
        return msgspec.json.decode(data, type=cls, dec_hook=dec_hook)

    @classmethod
    def model_construct(cls, **kwargs: Any) -> Self:
        """Build without extra validation (pydantic's ``model_construct``)."""
        return cls(**kwargs)

    @property
    def model_fields_set(self) -> set[str]:
        return {n for n in self.__struct_fields__ if getattr(self, n) is not None}


class NullableStruct(WireStruct, omit_defaults=False):
    """For the few bodies the SDK sends with explicit ``null`` values."""


def as_dataclass(cls: type[T]) -> type[T]:
    """Make ``dataclasses.replace/fields/asdict/is_dataclass`` accept the Struct ``cls``.

    The official SDK declares some types as frozen dataclasses and user code calls the
    ``dataclasses`` functions on them. Those only read ``__dataclass_fields__`` (and call the
    constructor), so the Struct gets the field table of an equivalent frozen dataclass;
    msgspec still treats it as a Struct, so nothing on the encode or decode path changes.
    """
    import dataclasses

    spec: list[Any] = []
    seen_default = kw_only = False
    for f in msgspec.structs.fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, dataclasses.field(default_factory=f.default_factory)))
            seen_default = True
        elif f.default is not msgspec.NODEFAULT:
            spec.append((f.name, f.type, dataclasses.field(default=f.default)))
            seen_default = True
        else:
            kw_only |= seen_default  # a required field after a defaulted one: keyword-only
            spec.append((f.name, f.type))
    shadow = dataclasses.make_dataclass(cls.__name__, spec, frozen=True, kw_only=kw_only)
    cls.__dataclass_fields__ = shadow.__dataclass_fields__  # type: ignore[attr-defined]
    cls.__dataclass_params__ = shadow.__dataclass_params__  # type: ignore[attr-defined]
    return cls


def force_set(obj: Any, name: str, value: Any) -> None:
    """Assign to a frozen Struct during ``__post_init__`` normalisation."""
    msgspec.structs.force_setattr(obj, name, value)
