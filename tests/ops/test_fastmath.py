"""Error bounds of the vectorized float32 transcendentals against float64 scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf as erf64

from jitort.ops.fastmath import erf


def test_erf_float32_error_bounds():
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.standard_normal(200_001) * 3,  # odd size: crosses block boundaries
        np.logspace(-38, 1.5, 20_000), -np.logspace(-38, 1.5, 20_000),
        np.linspace(0.45, 0.55, 1001),  # the switch between the two forms
    ]).astype(np.float32)
    ref = erf64(x.astype(np.float64))
    got = erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - ref).max() < 4e-7
    nz = ref != 0
    assert (np.abs(got - ref)[nz] / np.abs(ref[nz])).max() < 1e-6


def test_erf_special_values_and_shapes():
    x = np.array([[0.0, -0.0, np.inf], [-np.inf, np.nan, 1e-45]], np.float32)
    got = erf(x)
    np.testing.assert_array_equal(got[0], [0, 0, 1])
    assert got[1, 0] == -1 and np.isnan(got[1, 1]) and got[1, 2] >= 0
    assert erf(np.zeros((0, 3), np.float32)).shape == (0, 3)
    assert erf(np.float32(0.3) * np.ones((), np.float32)).shape == ()
    strided = np.arange(20, dtype=np.float32).reshape(4, 5)[:, ::2] / 10
    np.testing.assert_allclose(erf(strided), erf64(strided.astype(np.float64)), atol=4e-7)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_erf_other_dtypes_keep_dtype(dtype):
    x = np.linspace(-3, 3, 101).astype(dtype)
    got = erf(x)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.astype(np.float64), erf64(x.astype(np.float64)),
                               atol=1e-12 if dtype == np.float64 else 1e-3)
