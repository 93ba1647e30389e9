"""Counting compiles, for tests and ``jitort warmup``: how many Numba functions this process
compiled (a load from Numba's disk cache is not a compile), next to the store's counters.

    counter = compile_counter()      # installs a listener on Numba's "numba:compile" event once
    ...
    counter.numba                    # functions compiled since the listener was installed
"""

from __future__ import annotations

from dataclasses import dataclass, field

_COUNTER = None


@dataclass
class CompileCounter:
    numba: int = 0
    names: list = field(default_factory=list)


def compile_counter() -> CompileCounter:
    global _COUNTER
    if _COUNTER is None:
        from numba.core import event

        counter = CompileCounter()

        class _Listener(event.Listener):
            def on_start(self, ev):
                counter.numba += 1
                disp = (ev.data or {}).get("dispatcher")
                counter.names.append(getattr(getattr(disp, "py_func", None), "__qualname__", "?"))

            def on_end(self, ev):
                pass

        event.register("numba:compile", _Listener())
        _COUNTER = counter
    return _COUNTER
