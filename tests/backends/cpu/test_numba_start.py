"""numba_start.prepare: Numba's arraymath without its SciPy BLAS probe, and nothing else changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_plan_runs_without_importing_scipy_linalg_and_numba_blas_still_works():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from onnx import TensorProto, helper
        import jitort

        g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        m = jitort.load(model, backend="cpu", cache=False)
        x = np.arange(10, dtype=np.float32).reshape(2, 5)
        y = m(x=x)[0]
        want = np.exp(x - x.max(1, keepdims=True)); want /= want.sum(1, keepdims=True)
        assert np.allclose(y, want, rtol=1e-5)
        plan = next(iter(m._variants.values())).plan
        assert plan.steps[0].kind != "reference"       # a Numba kernel ran
        assert "numba.np.arraymath" in sys.modules
        assert "scipy.linalg" not in sys.modules, "the BLAS probe imported scipy.linalg"

        import numba
        import numba.np.arraymath as arraymath
        import numba.np.linalg as linalg
        assert arraymath._HAVE_BLAS is True
        assert arraymath.ensure_blas is linalg.ensure_blas  # Numba's own function is back

        @numba.njit
        def dot(a, b):
            return np.dot(a, b)

        assert dot(np.ones((3, 4)), np.ones((4, 2))).tolist() == [[4.0, 4.0]] * 3
        assert "scipy.linalg" in sys.modules             # imported when linear algebra needed it
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
