"""The backend interface: ``supports(group) -> bool``, ``lower(group) -> source``,
``compile(module) -> Plan``. A backend also offers ``build_plan(bound)`` which runs the three
over a bound graph, sending what it does not support to the reference path."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Plan(Protocol):
    """An executable plan for one Signature."""

    input_names: Sequence[str]
    output_names: Sequence[str]

    def run(self, feeds: dict[str, np.ndarray]) -> list: ...


class Backend(Protocol):
    name: str

    def supports(self, group) -> bool: ...

    def lower(self, group): ...

    def compile(self, module) -> Plan: ...

    def build_plan(self, bound) -> Plan: ...


_BACKENDS: dict[str, type] = {}


def register_backend(name: str):
    def deco(cls):
        _BACKENDS[name] = cls
        return cls

    return deco


def get_backend(name: str, **options) -> Backend:
    if name not in _BACKENDS:
        from . import reference  # noqa: F401  (registers itself)
        if name == "cpu":
            from .cpu import backend  # noqa: F401
    try:
        return _BACKENDS[name](**options)
    except KeyError:
        from ..errors import JitortError

        raise JitortError(f"unknown backend {name!r}; available: {sorted(_BACKENDS)}") from None
