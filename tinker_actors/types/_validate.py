"""Cheap construction-time checks for the public types (pydantic "lax mode" look-alikes).

msgspec Structs do not check field types on ``__init__``; the official SDK's pydantic models
do. These helpers give the same leniency (``"10"`` -> 10, ``2.0`` -> 2, ``1`` -> 1.0) and a
clear :class:`~tinker_actors.errors.InvalidInputError` (a ValueError) for the rest, raised at
construction in the caller's thread instead of as a 422 later, or deep inside an encoder.
Each check is a few ``type()`` tests on the fast path; nothing here loops over payloads.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

from ..errors import InvalidInputError

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def as_int(owner: str, name: str, v: Any) -> int:
    """An int field: ints, bools, integral floats and numeric strings (as pydantic lax)."""
    if type(v) is int:
        return v
    if isinstance(v, bool | int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        if float(v).is_integer():
            return int(v)
        raise InvalidInputError(f"{owner}.{name} must be an integer, got {v!r}")
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise InvalidInputError(f"{owner}.{name} must be an integer, got {type(v).__name__} {v!r}")


def as_float(owner: str, name: str, v: Any) -> float:
    """A float field: ints, floats, bools and numeric strings (as pydantic lax)."""
    if type(v) is float:
        return v
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    raise InvalidInputError(f"{owner}.{name} must be a number, got {type(v).__name__} {v!r}")


def as_bool(owner: str, name: str, v: Any) -> bool:
    if type(v) is bool:
        return v
    if isinstance(v, np.bool_) or (isinstance(v, int | np.integer) and v in (0, 1)):
        return bool(v)
    raise InvalidInputError(f"{owner}.{name} must be a bool, got {type(v).__name__} {v!r}")


def _token_error(owner: str, tokens: Any) -> InvalidInputError | None:
    for i, x in enumerate(tokens):
        if isinstance(x, bool | int | np.integer):
            if not INT32_MIN <= int(x) <= INT32_MAX:
                return InvalidInputError(
                    f"{owner}: token {i} is {int(x)}, outside the int32 range of token ids"
                )
            continue
        if isinstance(x, float | np.floating) and float(x).is_integer():
            continue
        if isinstance(x, str) and x.strip().lstrip("+-").isdigit():
            continue
        return InvalidInputError(
            f"{owner}: tokens must be integers; token {i} is {type(x).__name__} {x!r}"
        )
    return None


def token_list(owner: str, tokens: list[Any]) -> list[int] | None:
    """Checks a list of token ids; returns a coerced copy, or None when it is already fine.

    The fast path is one C-level pass (``array('i', ...)`` rejects non-ints and anything
    outside int32, the wire type of token ids). Only a failing list is walked in Python,
    to coerce the lax cases (2.0, "7") or to name the offending element.
    """
    try:
        array("i", tokens)
        return None
    except (TypeError, OverflowError):
        pass
    err = _token_error(owner, tokens)
    if err is not None:
        raise err
    out = [as_int(owner, "tokens", x) for x in tokens]
    try:
        array("i", out)
    except OverflowError:
        raise InvalidInputError(
            f"{owner}: a token is outside the int32 range of token ids"
        ) from None
    return out


def token_array(owner: str, arr: np.ndarray) -> np.ndarray:
    """Checks a numpy array of token ids (1-D, integral, int32 range); vectorised."""
    if arr.ndim != 1:
        raise InvalidInputError(f"{owner}: tokens must be 1-D, got an array of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.int64)
        kind = "i"
    if kind == "f":
        if arr.size and not np.all(np.isfinite(arr) & (arr == np.floor(arr))):
            raise InvalidInputError(f"{owner}: tokens must be integers, got non-integral floats")
        arr = arr.astype(np.int64)
        kind = "i"
    if kind not in "iu":
        raise InvalidInputError(f"{owner}: tokens must be integers, got an array of {arr.dtype}")
    if arr.size and (arr.dtype.itemsize > 4 or (kind == "u" and arr.dtype.itemsize == 4)):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < INT32_MIN or hi > INT32_MAX:
            bad = lo if lo < INT32_MIN else hi
            raise InvalidInputError(f"{owner}: token {bad} is outside the int32 range of token ids")
    return arr
