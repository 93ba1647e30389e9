"""Sequences (Python lists of arrays) and optionals (a value, or None when empty).

Kernels here return 1-tuples: a bare list would read as several outputs.
"""

from __future__ import annotations

import numpy as np

from .registry import op


def _pos(seq: list, position, insert: bool = False) -> int:
    n = len(seq)
    p = int(np.asarray(position).reshape(-1)[0])
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise IndexError(f"sequence position {p} out of range for length {n}")
    return p + n if p < 0 else p


@op("SequenceConstruct", since=11)
def sequence_construct(*xs):
    return (list(xs),)


@op("SequenceEmpty", since=11)
def sequence_empty(*, dtype=1):
    return ([],)


@op("SequenceInsert", since=11)
def sequence_insert(seq, tensor, position=None):
    out = list(seq)
    if position is None:
        out.append(tensor)
    else:
        out.insert(_pos(out, position, insert=True), tensor)
    return (out,)


@op("SequenceAt", since=11)
def sequence_at(seq, position):
    return (seq[_pos(seq, position)],)


@op("SequenceErase", since=11)
def sequence_erase(seq, position=None):
    out = list(seq)
    if not out:
        raise IndexError("SequenceErase on an empty sequence")
    del out[-1 if position is None else _pos(out, position)]
    return (out,)


@op("SequenceLength", since=11)
def sequence_length(seq):
    return (np.array(len(seq), dtype=np.int64),)


@op("SplitToSequence", since=11)
def split_to_sequence(x, split=None, *, axis=0, keepdims=1):
    ax = axis + x.ndim if axis < 0 else axis
    if split is None:
        parts = [np.take(x, i, axis=ax) if not keepdims else np.take(x, [i], axis=ax)
                 for i in range(x.shape[ax])]
        return (parts,)
    split = np.asarray(split)
    if split.ndim == 0:
        size = int(split)
        bounds = list(range(size, x.shape[ax], size))
    else:
        bounds = np.cumsum(split)[:-1].tolist()
    return (list(np.split(x, bounds, axis=ax)),)


@op("ConcatFromSequence", since=11)
def concat_from_sequence(seq, *, axis, new_axis=0):
    if not seq:
        raise ValueError("ConcatFromSequence of an empty sequence")
    if new_axis:
        return (np.stack(seq, axis=axis),)
    return (np.concatenate(seq, axis=axis),)


@op("SequenceMap", since=17)
def sequence_map(ctx, input_sequence, *additional_inputs, body):
    n = len(input_sequence)
    n_out = len(body.outputs)
    results: list[list] = [[] for _ in range(n_out)]
    for i in range(n):
        args = [input_sequence[i]] + [a[i] if isinstance(a, list) else a for a in additional_inputs]
        outs = ctx.run_graph(body, args, ctx.outer)
        for k in range(n_out):
            results[k].append(outs[k])
    return tuple(results)


@op("Optional", since=15)
def optional(input=None, *, type=None):
    return (input,)


@op("OptionalHasElement", since=15)
def optional_has_element(input=None):
    return (np.array(input is not None),)


@op("OptionalGetElement", since=15)
def optional_get_element(input=None):
    if input is None:
        raise ValueError("OptionalGetElement on an empty optional")
    return (input,)
