"""registry.find imports only the family modules op_index.py names for an op: the index is what
make_op_index computes now, and an op found that way is the same kernel, with the same type
inference, as after importing every family module."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from jitort.ops import make_op_index, op_index


def test_the_index_is_up_to_date():
    assert op_index.MODULES == make_op_index.compute(), "run: python -m jitort.ops.make_op_index"
    with open(op_index.__file__) as f:
        assert f.read() == make_op_index.source()


_FIND = textwrap.dedent("""
    import sys
    from jitort.ops import registry

    ops = [("ConstantOfShape", "", 21), ("Conv", "", 22), ("Softmax", "", 13), ("Add", "", 14),
           ("Add", "", 6), ("FusedConv", "jitort", 1), ("LinearClassifier", "ai.onnx.ml", 1),
           ("BiasGelu", "com.microsoft", 1)]
    name = lambda f: f and f"{f.__module__}.{f.__qualname__}"
    found = [registry.find(*o) for o in ops]
    assert all(found) and not registry._LOADED, "a partial find loaded every family module"
    families = sorted(m for m in sys.modules if m.startswith("jitort.ops.") and "registry" not in m)
    partial = [(d.since, name(d.kernel), name(d.infer)) for d in found]
    assert registry.find("NoSuchOp", "", 1) is None and registry._LOADED   # not indexed: load all
    full = [(d.since, name(d.kernel), name(d.infer)) for d in (registry.find(*o) for o in ops)]
    assert partial == full, (partial, full)
    print(len(families), len([m for m in sys.modules if m.startswith("jitort.ops.")]))
""")


def test_an_op_found_through_the_index_is_the_fully_loaded_one():
    r = subprocess.run([sys.executable, "-c", _FIND], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    some, every = map(int, r.stdout.split()[-2:])
    assert some < every / 2  # the partial finds imported a few families, not all
