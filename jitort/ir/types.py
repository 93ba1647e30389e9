"""Value types of the IR: tensors with symbolic or concrete dims, sequences, optionals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

# A dim is a concrete size (int), a symbolic name (str) or unknown (None).
Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorType:
    dtype: np.dtype | None  # None: element type unknown
    shape: tuple | None  # None: rank unknown

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def __str__(self) -> str:
        dt = "?" if self.dtype is None else np.dtype(self.dtype).name
        if self.shape is None:
            return f"{dt}[*]"
        return f"{dt}[{','.join('?' if d is None else str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class SequenceType:
    elem: "ValueType"

    def __str__(self) -> str:
        return f"seq({self.elem})"


@dataclass(frozen=True)
class OptionalType:
    elem: "ValueType"

    def __str__(self) -> str:
        return f"optional({self.elem})"


@dataclass(frozen=True)
class MapType:
    key: np.dtype
    value: "ValueType"


ValueType = Union[TensorType, SequenceType, OptionalType, MapType, None]


def tensor(dtype, shape) -> TensorType:
    return TensorType(None if dtype is None else np.dtype(dtype), None if shape is None else tuple(shape))


def type_of(value) -> ValueType:
    """The IR type of a runtime value (array, sequence as list, empty optional as None)."""
    if isinstance(value, np.ndarray):
        return TensorType(value.dtype, value.shape)
    if isinstance(value, list):
        return SequenceType(type_of(value[0]) if value else TensorType(None, None))
    if value is None:
        return OptionalType(TensorType(None, None))
    if isinstance(value, np.generic):
        return TensorType(value.dtype, ())
    return None
