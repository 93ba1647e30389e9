"""NonMaxSuppression vs onnxruntime one-node models (exact: int64 indices)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jitort.ops.registry import KernelContext, call, lookup

RNG = np.random.default_rng(9)


def run(*inputs, **attrs):
    return call(lookup("NonMaxSuppression", "", 11), list(inputs), attrs, KernelContext(opset=11))[0]


def ort_nms(boxes, scores, extra, attrs):
    names = ["b", "s"] + [f"c{k}" if a is not None else "" for k, a in enumerate(extra)]
    inits = [numpy_helper.from_array(a, n) for n, a in zip(names[2:], extra) if a is not None]
    ins = [helper.make_tensor_value_info("b", TensorProto.FLOAT, boxes.shape),
           helper.make_tensor_value_info("s", TensorProto.FLOAT, scores.shape)]
    out = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    node = helper.make_node("NonMaxSuppression", names, ["y"], **attrs)
    m = helper.make_model(helper.make_graph([node], "g", ins, [out], inits),
                          opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 9
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"b": boxes, "s": scores})[0]


def random_boxes(B, n, center):
    xy = RNG.uniform(0, 10, size=(B, n, 2))
    wh = RNG.uniform(0.5, 4, size=(B, n, 2))
    if center:
        return np.concatenate([xy, wh], axis=-1).astype(np.float32)
    b = np.concatenate([xy, xy + wh], axis=-1)
    flip = RNG.random((B, n)) < 0.3  # corners given in either order
    b[flip] = b[flip][:, [2, 3, 0, 1]]
    return b.astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("max_out,iou,score", [(3, 0.5, None), (100, 0.3, 0.2), (2, 0.0, 0.5), (0, 0.5, None),
                                               (50, 1.0, None)])
def test_nms_vs_ort(center, max_out, iou, score):
    boxes = random_boxes(2, 30, center)
    scores = RNG.random((2, 3, 30)).astype(np.float32)
    scores[0, 0, :5] = 0.75  # ties keep the lower index first
    extra = [np.array([max_out], np.int64), np.array([iou], np.float32),
             None if score is None else np.array([score], np.float32)]
    got = run(boxes, scores, *extra, center_point_box=center)
    exp = ort_nms(boxes, scores, extra, dict(center_point_box=center))
    assert got.dtype == np.int64 and got.shape[1:] == (3,)
    np.testing.assert_array_equal(got, exp)


def test_nms_defaults_and_degenerate():
    boxes = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [0, 0, 1, 1.1]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7, 0.6]]], np.float32)
    assert run(boxes, scores).shape == (0, 3)  # max_output_boxes_per_class defaults to 0
    got = run(boxes, scores, np.array([10], np.int64), np.array([0.5], np.float32))
    np.testing.assert_array_equal(got, [[0, 0, 0], [0, 0, 2]])
