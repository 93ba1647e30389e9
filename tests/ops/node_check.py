"""Developer tool: run ONNX's single-node conformance cases straight through the op registry.

    python -m tests.ops.node_check [REGEX ...]      # cases whose op_type or test name matches

Skips cases with subgraphs or several nodes (those need the full session). Prints failures and
a pass count. The real conformance suite (tests/ops/test_conformance.py) goes through
InferenceSession; this exists so op families can be developed before the session is ready.
"""

from __future__ import annotations

import re
import sys
import traceback
import warnings

import numpy as np
import onnx

from jitort.ops.attrs import tensor_value


def as_value(v):
    """Conformance data holds arrays, lists, None, or protos for the exotic types."""
    if isinstance(v, onnx.TensorProto):
        return tensor_value(v)
    if isinstance(v, onnx.SequenceProto):
        return [as_value(x) for x in onnx.numpy_helper.to_list(v)]
    if isinstance(v, onnx.OptionalProto):
        return as_value(onnx.numpy_helper.to_optional(v))
    if isinstance(v, list):
        return [as_value(x) for x in v]
    return v


def compare(expected, got, rtol, atol) -> str | None:
    if isinstance(expected, list):
        if not isinstance(got, list) or len(got) != len(expected):
            return f"expected a sequence of {len(expected)}, got {type(got).__name__}"
        for e, g in zip(expected, got):
            err = compare(e, g, rtol, atol)
            if err:
                return err
        return None
    if expected is None:
        return None if got is None else f"expected None, got {type(got).__name__}"
    expected = np.asarray(expected)
    if not isinstance(got, np.ndarray):
        return f"expected ndarray, got {type(got).__name__}"
    if expected.shape != got.shape:
        return f"shape {got.shape} != expected {expected.shape}"
    if expected.dtype != got.dtype and not (expected.dtype.kind in "OSU" and got.dtype.kind in "OSU"):
        return f"dtype {got.dtype} != expected {expected.dtype}"
    if expected.dtype.kind in "fc" or expected.dtype.name.startswith(("bfloat", "float")):
        e = expected.astype(np.complex128 if expected.dtype.kind == "c" else np.float64)
        g = got.astype(e.dtype)
        ok = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        if not ok.all():
            bad = np.argwhere(~ok)[0]
            return f"value mismatch ({(~ok).sum()} of {ok.size}) e.g. at {tuple(bad)}: {g[tuple(bad)]} vs {e[tuple(bad)]}"
        return None
    if not np.array_equal(expected.astype(object) if expected.dtype.kind in "OSU" else expected,
                          got.astype(object) if got.dtype.kind in "OSU" else got):
        return "exact mismatch"
    return None


def main(patterns: list[str]) -> int:
    from onnx.backend.test.case.node import collect_testcases

    from jitort.ops.attrs import node_attributes
    from jitort.ops.registry import KernelContext, call, lookup

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    rx = [re.compile(p) for p in patterns] or [re.compile(".")]
    passed = failed = 0
    for case in cases:
        g = case.model.graph
        if len(g.node) != 1:
            continue
        node = g.node[0]
        if not any(r.search(node.op_type) or r.search(case.name) for r in rx):
            continue
        if any(a.g.node or a.graphs for a in node.attribute):
            continue
        opset = {o.domain: o.version for o in case.model.opset_import}
        version = opset.get(node.domain, opset.get("ai.onnx" if node.domain == "" else node.domain, 0))
        for inputs, outputs in case.data_sets:
            try:
                entry = lookup(node.op_type, node.domain, version, node.name)
                feed = {vi.name: as_value(v) for vi, v in zip(g.input, inputs)}
                args = [feed.get(n) if n else None for n in node.input]
                outputs = [as_value(v) for v in outputs]
                ctx = KernelContext(num_outputs=len(node.output), opset=version, node_name=node.name)
                got = call(entry, args, node_attributes(node), ctx)
                err = None
                positions = [k for k, name in enumerate(node.output) if name]
                for i, exp in zip(positions, outputs):
                    if i >= len(got):
                        err = f"output {i} missing"
                        break
                    err = compare(exp, got[i], case.rtol, case.atol)
                    if err:
                        err = f"output {i}: {err}"
                        break
            except Exception as exc:  # noqa: BLE001 - a developer report
                err = f"{type(exc).__name__}: {exc}"
                if "-v" in sys.argv:
                    traceback.print_exc()
            if err:
                failed += 1
                print(f"FAIL {case.name} [{node.op_type}-{version}]: {err}"[:400])
            else:
                passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if a != "-v"]))
