"""Operator registry and the NumPy reference kernels, one module per op family."""

from .registry import KernelContext, OpDef, call, find, lookup, op, register_infer, registered_ops  # noqa: F401
