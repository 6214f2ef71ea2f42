"""TensorData: a numpy-backed tensor with the official SDK's JSON shape.

The values live in a numpy array (``_numpy``) so the protobuf codec moves them
with ``tobytes``/``frombuffer``; ``.data`` gives the flat Python list the JSON
shape and the official API expose. Sparse CSR (2-D only) keeps the listed
values in ``_numpy`` and the index arrays as int64 numpy arrays.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import InvalidInputError
from . import _base

TensorDtype = Literal["int64", "float32"]

_NP_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype(np.float32),
    "int64": np.dtype(np.int64),
}


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    """Numpy dtype for a public TensorDtype name."""
    try:
        return _NP_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"Unsupported TensorDtype: {dtype!r}") from None


def tensor_dtype_of(np_dtype: Any) -> TensorDtype:
    """Public dtype for a numpy dtype: floats become float32, integers int64."""
    kind = np.dtype(np_dtype).kind
    if kind == "f":
        return "float32"
    if kind in ("i", "u", "b"):
        return "int64"
    raise ValueError(f"Unsupported numpy dtype: {np_dtype}")


def _check_pad(pad_value: Any) -> int:
    if isinstance(pad_value, bool) or not isinstance(pad_value, int | np.integer):
        raise TypeError(f"pad_value must be an integer, got {type(pad_value).__name__}")
    return int(pad_value)


def _shape_list(shape: Any) -> list[int]:
    if isinstance(shape, str | bytes) or not hasattr(shape, "__iter__"):
        raise InvalidInputError(f"TensorData shape must be a list of ints, got {shape!r}")
    out = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0:
            raise InvalidInputError(
                f"TensorData shape must be a list of non-negative ints, got {shape!r}"
            )
        out.append(int(d))
    return out


def _index_array(values: Any) -> np.ndarray | None:
    if values is None:
        return None
    return np.ascontiguousarray(np.asarray(values, dtype=np.int64).reshape(-1))


class TensorData:
    """A dense or sparse-CSR tensor of float32 or int64 values."""

    __slots__ = ("_col", "_crow", "_numpy", "dtype", "shape")

    dtype: TensorDtype
    shape: list[int] | None

    def __init__(
        self,
        data: Any = None,
        dtype: TensorDtype | None = None,
        shape: list[int] | tuple[int, ...] | None = None,
        sparse_crow_indices: Any = None,
        sparse_col_indices: Any = None,
    ) -> None:
        if dtype is None:
            raise TypeError("TensorData requires `dtype`")
        np_dtype = numpy_dtype(dtype)
        try:
            if isinstance(data, np.ndarray):
                arr = data if data.dtype == np_dtype else data.astype(np_dtype)
            elif data is None:
                arr = np.empty(0, dtype=np_dtype)
            elif isinstance(data, str | bytes):
                raise TypeError(f"a {type(data).__name__}")
            else:
                arr = np.asarray(data, dtype=np_dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(
                f"TensorData data must be numeric values for dtype {dtype!r}: {exc}"
            ) from None
        shape_list = None if shape is None else _shape_list(shape)
        if (sparse_crow_indices is None) != (sparse_col_indices is None):
            raise ValueError("sparse_crow_indices and sparse_col_indices must be set together")
        if sparse_crow_indices is not None:
            if shape_list is None:
                raise ValueError("shape is required for a sparse CSR TensorData")
            arr = arr.reshape(-1)
        elif shape_list is not None and list(arr.shape) != shape_list:
            if int(np.prod(shape_list)) != arr.size:
                raise InvalidInputError(
                    f"TensorData shape {shape_list} needs {int(np.prod(shape_list))} values, "
                    f"got {arr.size}"
                )
            arr = arr.reshape(shape_list)
        self.dtype = dtype
        self.shape = shape_list
        self._numpy = arr
        self._crow = _index_array(sparse_crow_indices)
        self._col = _index_array(sparse_col_indices)

    # -- official attributes -------------------------------------------------------------
    @property
    def data(self) -> list[Any]:
        """Flattened values as a Python list (only the listed values when sparse)."""
        return self._numpy.reshape(-1).tolist()

    @property
    def sparse_crow_indices(self) -> list[int] | None:
        return None if self._crow is None else self._crow.tolist()

    @property
    def sparse_col_indices(self) -> list[int] | None:
        return None if self._col is None else self._col.tolist()

    @property
    def is_sparse(self) -> bool:
        return self._crow is not None

    @property
    def values_np(self) -> np.ndarray:
        """The stored array (dense values, or the CSR values), without copying."""
        return self._numpy

    @property
    def crow_indices_np(self) -> np.ndarray | None:
        return self._crow

    @property
    def col_indices_np(self) -> np.ndarray | None:
        return self._col

    @property
    def nbytes(self) -> int:
        """Protobuf payload size: values plus 8 bytes per CSR index."""
        n = int(self._numpy.nbytes)
        if self._crow is not None:
            n += 8 * (len(self._crow) + len(self._col))  # type: ignore[arg-type]
        return n

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> TensorData:
        array = np.asarray(array)
        return cls(data=array, dtype=tensor_dtype_of(array.dtype), shape=list(array.shape))

    @classmethod
    def from_torch(cls, tensor: Any) -> TensorData:
        import torch

        t = tensor.detach()
        if t.dtype == torch.bfloat16 or t.dtype == torch.float16:
            t = t.float()
        return cls.from_numpy(t.contiguous().cpu().numpy())

    @classmethod
    def from_torch_sparse(cls, tensor: Any, pad_value: int = 0) -> TensorData:
        """CSR when that is smaller than dense (2-D only); entries equal to pad are left out."""
        pad = _check_pad(pad_value)
        if tensor.ndim != 2:
            return cls.from_torch(tensor)
        return cls.from_numpy_sparse(tensor.detach().cpu().numpy(), pad)

    @classmethod
    def from_numpy_sparse(cls, array: np.ndarray, pad_value: int = 0) -> TensorData:
        """CSR encoding of a 2-D array when it saves space, else dense."""
        pad = _check_pad(pad_value)
        array = np.asarray(array)
        if array.ndim != 2:
            return cls.from_numpy(array)
        mask = array != pad
        nnz = int(mask.sum())
        nrows, ncols = array.shape
        if (nrows + 1) + 2 * nnz >= nrows * ncols:
            return cls.from_numpy(array)
        rows, cols = np.nonzero(mask)
        crow = np.zeros(nrows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=nrows), out=crow[1:])
        return cls(
            data=array[rows, cols],
            dtype=tensor_dtype_of(array.dtype),
            shape=[nrows, ncols],
            sparse_crow_indices=crow,
            sparse_col_indices=cols.astype(np.int64),
        )

    def to_numpy(self, pad_value: int = 0) -> np.ndarray:
        """Dense numpy array; CSR entries that are not listed take ``pad_value``."""
        if self._crow is None:
            return self._numpy
        pad = _check_pad(pad_value)
        assert self.shape is not None and self._col is not None
        if len(self.shape) != 2:
            raise ValueError("sparse CSR TensorData must be 2-D")
        nrows, ncols = self.shape
        crow, col = self._crow, self._col
        if (
            len(crow) != nrows + 1
            or crow[0] != 0
            or np.any(np.diff(crow) < 0)
            or crow[-1] != len(col)
            or len(col) != len(self._numpy)
            or (len(col) and (col.min() < 0 or col.max() >= ncols))
        ):
            raise ValueError(f"invalid sparse CSR indices for shape {self.shape!r}")
        dense = np.full((nrows, ncols), pad, dtype=self._numpy.dtype)
        rows = np.repeat(np.arange(nrows, dtype=np.int64), np.diff(crow))
        dense[rows, col] = self._numpy
        return dense

    def to_torch(self, pad_value: int = 0) -> Any:
        import torch

        arr = self.to_numpy(pad_value)
        if not arr.flags.writeable:
            arr = arr.copy()
        return torch.from_numpy(arr)

    def tolist(self, pad_value: int = 0) -> list[Any]:
        values: list[Any] = self.to_numpy(pad_value).tolist()
        return values

    # -- dict-ish helpers ----------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The official JSON shape, None fields omitted."""
        out: dict[str, Any] = {"data": self.data, "dtype": self.dtype}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self._crow is not None:
            out["sparse_crow_indices"] = self._crow.tolist()
            out["sparse_col_indices"] = self._col.tolist()  # type: ignore[union-attr]
        return out

    model_dump = to_json_dict

    @classmethod
    def from_json_dict(cls, obj: Any) -> TensorData:
        if isinstance(obj, TensorData):
            return obj
        if not isinstance(obj, dict):
            raise TypeError(f"expected a TensorData object, got {type(obj).__name__}")
        return cls(
            data=obj.get("data"),
            dtype=obj.get("dtype"),
            shape=obj.get("shape"),
            sparse_crow_indices=obj.get("sparse_crow_indices"),
            sparse_col_indices=obj.get("sparse_col_indices"),
        )

    model_validate = from_json_dict

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorData):
            return NotImplemented
        if self.dtype != other.dtype:
            return False
        if self.is_sparse or other.is_sparse:
            if self.shape != other.shape:
                return False
            return bool(
                np.array_equal(self.to_numpy(), other.to_numpy(), equal_nan=self.dtype == "float32")
            )
        a, b = self._numpy, other._numpy
        if self.shape is not None and other.shape is not None and self.shape != other.shape:
            return False
        return bool(np.array_equal(a.reshape(-1), b.reshape(-1), equal_nan=self.dtype == "float32"))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = "csr" if self.is_sparse else "dense"
        return (
            f"TensorData(dtype={self.dtype!r}, shape={self.shape!r}, {kind}, n={self._numpy.size})"
        )

    def __reduce__(self) -> Any:
        return (
            TensorData,
            (self._numpy, self.dtype, self.shape, self._crow, self._col),
        )


_base._CUSTOM_ENCODERS[TensorData] = TensorData.to_json_dict
_base._CUSTOM_DECODERS[TensorData] = TensorData.from_json_dict
_base._CUSTOM_SCHEMAS[TensorData] = {
    "title": "TensorData",
    "type": "object",
    "properties": {
        "data": {"type": "array", "items": {"type": "number"}},
        "dtype": {"enum": ["int64", "float32"]},
        "shape": {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]},
        "sparse_crow_indices": {
            "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]
        },
        "sparse_col_indices": {
            "anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]
        },
    },
    "required": ["data", "dtype"],
}
