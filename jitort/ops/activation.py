"""Activations (placeholder start; family owner extends)."""

import numpy as np

from .registry import op


@op("Relu", since=6)
def relu(x):
    return np.maximum(x, x.dtype.type(0))
