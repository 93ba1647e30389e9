"""Detection: NonMaxSuppression (greedy, per batch and class; IoU rows computed only for kept boxes)."""

from __future__ import annotations

import numpy as np

from .registry import op


def _corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    """Boxes as (y1, x1, y2, x2) with y1 <= y2, x1 <= x2 (float64)."""
    b = boxes.astype(np.float64)
    if center_point_box:
        xc, yc, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)
    y1 = np.minimum(b[..., 0], b[..., 2])
    y2 = np.maximum(b[..., 0], b[..., 2])
    x1 = np.minimum(b[..., 1], b[..., 3])
    x2 = np.maximum(b[..., 1], b[..., 3])
    return np.stack([y1, x1, y2, x2], axis=-1)


def _iou_row(box: np.ndarray, others: np.ndarray, area: np.ndarray, area_i: float) -> np.ndarray:
    ih = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    iw = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.maximum(ih, 0) * np.maximum(iw, 0)
    union = area_i + area - inter
    ok = (area > 0) & (area_i > 0) & (inter > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _scalar(v, default, kind=float):
    if v is None or np.asarray(v).size == 0:
        return default
    return kind(np.asarray(v).reshape(-1)[0])


@op("NonMaxSuppression", since=10)
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None,
                        score_threshold=None, *, center_point_box=0):
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    max_out = _scalar(max_output_boxes_per_class, 0, int)
    iou_thr = _scalar(iou_threshold, 0.0)
    score_thr = _scalar(score_threshold, None)
    out = []
    if max_out <= 0:
        return np.zeros((0, 3), np.int64)
    B, K = scores.shape[:2]
    corners = _corners(boxes, center_point_box)
    for b in range(B):
        cb = corners[b]
        area = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
        for k in range(K):
            sc = scores[b, k].astype(np.float64)
            cand = np.arange(sc.shape[0]) if score_thr is None else np.nonzero(sc > score_thr)[0]
            if cand.size == 0:
                continue
            # highest score first; ties keep the lower box index first
            cand = cand[np.argsort(-sc[cand], kind="stable")]
            boxes_c, area_c = cb[cand], area[cand]
            alive = np.ones(cand.size, bool)
            kept = 0
            for i in range(cand.size):
                if not alive[i]:
                    continue
                out.append((b, k, cand[i]))
                kept += 1
                if kept >= max_out:
                    break
                rest = slice(i + 1, None)
                alive[rest] &= ~(_iou_row(boxes_c[i], boxes_c[rest], area_c[rest], area_c[i]) > iou_thr)
    if not out:
        return np.zeros((0, 3), np.int64)
    return np.asarray(out, np.int64)
