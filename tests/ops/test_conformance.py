"""Every ONNX node conformance case, run through jitort.InferenceSession.

Compared at the case's own tolerance (rtol 1e-3 / atol 1e-7 by default); integers, strings and
booleans exactly. Exclusions live in conformance_exclusions.py with a reason each.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitort
from tests.ops.conformance_exclusions import EXCLUDED, RANDOM_OUTPUTS
from tests.ops.node_check import as_value, compare


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases()


CASES = _cases()


def run_case(case) -> str | None:
    """None when the case passes, else a description of the first mismatch."""
    sess = jitort.InferenceSession(case.model.SerializeToString())
    names = [i.name for i in case.model.graph.input]
    out_names = [o.name for o in case.model.graph.output]
    for inputs, expected in case.data_sets:
        feed = dict(zip(names, (as_value(v) for v in inputs)))
        got = sess.run(None, feed)
        for name, e, g in zip(out_names, (as_value(v) for v in expected), got):
            if case.name in RANDOM_OUTPUTS:
                e = np.asarray(e)
                if not (isinstance(g, np.ndarray) and g.shape == e.shape and g.dtype == e.dtype):
                    return f"{name}: random output has shape/dtype {np.shape(g)}/{getattr(g, 'dtype', None)}"
                continue
            err = compare(e, g, case.rtol, case.atol)
            if err:
                return f"{name}: {err}"
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_conformance(case):
    if case.name in EXCLUDED:
        pytest.skip(EXCLUDED[case.name])
    err = run_case(case)
    assert err is None, err


def test_pass_rate_target():
    """At least 99% of all cases pass (exclusions count as failures)."""
    failures = len(EXCLUDED)
    assert (len(CASES) - failures) / len(CASES) >= 0.99, f"{failures} of {len(CASES)} excluded"


def test_exclusions_are_real_cases():
    names = {c.name for c in CASES}
    assert set(EXCLUDED) <= names, sorted(set(EXCLUDED) - names)
