"""Control flow: If, Loop, Scan. Bodies are IR Graphs run through ``ctx.run_graph``."""

from __future__ import annotations

import numpy as np

from ..ir.types import TensorType
from .registry import op


def _scalar_bool(v) -> bool:
    return bool(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else False


@op("If", since=1)
def if_(ctx, cond, *, then_branch, else_branch):
    if np.asarray(cond).size != 1:
        raise ValueError(f"If condition must hold exactly one element, got shape {np.shape(cond)}")
    branch = then_branch if _scalar_bool(cond) else else_branch
    return tuple(ctx.run_graph(branch, [], ctx.outer))


def _empty_like_output(info) -> np.ndarray:
    t = info.type
    if isinstance(t, TensorType) and t.dtype is not None:
        shape = [0] + [d if isinstance(d, int) else 0 for d in (t.shape or ())]
        return np.zeros(shape, dtype=t.dtype)
    return np.zeros((0,), dtype=np.float32)


@op("Loop", since=1)
def loop(ctx, M=None, cond=None, *v_initial, body):
    """for i in range(M) while cond: carried = body(i, cond, carried); scan outputs stacked."""
    trip = None if M is None else int(np.asarray(M).reshape(-1)[0])
    keep_going = True if cond is None else _scalar_bool(cond)
    carried = list(v_initial)
    n_carried = len(carried)
    n_scan = len(body.outputs) - 1 - n_carried
    scans: list[list] = [[] for _ in range(n_scan)]
    i = 0
    cond_dtype = np.asarray(cond).dtype if cond is not None else np.bool_
    while keep_going and (trip is None or i < trip):
        outs = ctx.run_graph(
            body, [np.array(i, dtype=np.int64), np.array(keep_going, dtype=cond_dtype)] + carried, ctx.outer)
        keep_going = _scalar_bool(outs[0])
        carried = list(outs[1:1 + n_carried])
        for k in range(n_scan):
            scans[k].append(outs[1 + n_carried + k])
        i += 1
    stacked = []
    for k in range(n_scan):
        if scans[k]:
            first = scans[k][0]
            stacked.append(np.stack(scans[k]) if isinstance(first, np.ndarray) else scans[k])
        else:
            stacked.append(_empty_like_output(body.outputs[1 + n_carried + k]))
    return tuple(carried + stacked)


@op("Scan", since=9)
def scan(ctx, *inputs, body, num_scan_inputs, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None):
    n_state = len(inputs) - num_scan_inputs
    state = list(inputs[:n_state])
    xs = list(inputs[n_state:])
    in_axes = scan_input_axes or [0] * num_scan_inputs
    in_dirs = scan_input_directions or [0] * num_scan_inputs
    xs = [np.moveaxis(x, ax if ax >= 0 else ax + x.ndim, 0) for x, ax in zip(xs, in_axes)]
    xs = [x[::-1] if d else x for x, d in zip(xs, in_dirs)]
    steps = xs[0].shape[0] if xs else 0
    n_scan_out = len(body.outputs) - n_state
    collected: list[list] = [[] for _ in range(n_scan_out)]
    for t in range(steps):
        outs = ctx.run_graph(body, state + [x[t] for x in xs], ctx.outer)
        state = list(outs[:n_state])
        for k in range(n_scan_out):
            collected[k].append(outs[n_state + k])
    out_axes = scan_output_axes or [0] * n_scan_out
    out_dirs = scan_output_directions or [0] * n_scan_out
    results = []
    for k in range(n_scan_out):
        if collected[k]:
            seq = collected[k][::-1] if out_dirs[k] else collected[k]
            y = np.stack(seq)
        else:
            y = _empty_like_output(body.outputs[n_state + k])
        ax = out_axes[k]
        if ax < 0:
            ax += y.ndim
        results.append(np.moveaxis(y, 0, ax))
    return tuple(state + results)


@op("Scan", since=8)
def scan8(ctx, sequence_lens, *inputs, body, num_scan_inputs, directions=None):
    """Opset 8: a leading batch axis and optional per-batch sequence lengths."""
    if sequence_lens is not None and np.asarray(sequence_lens).size:
        lens = np.asarray(sequence_lens)
    else:
        lens = None
    n_state = len(inputs) - num_scan_inputs
    batch = (inputs[0] if inputs else None).shape[0]
    outs_per_batch = []
    for b in range(batch):
        per = [x[b] for x in inputs]
        xs = per[n_state:]
        if lens is not None:
            xs = [x[: int(lens[b])] for x in xs]
        outs_per_batch.append(scan(ctx, *(per[:n_state] + xs), body=body, num_scan_inputs=num_scan_inputs,
                                   scan_input_directions=directions))
    return tuple(np.stack([o[k] for o in outs_per_batch]) for k in range(len(outs_per_batch[0])))
