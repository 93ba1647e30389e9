"""Importing Numba without importing PyYAML.

Numba's config module runs ``import yaml`` when it is imported (15-18 ms here), to read a
``.numba_config.yaml`` in the current directory, if there is one, then and at each later config
reload. ``import_numba()`` imports Numba with a stand-in module under the name ``yaml`` when
PyYAML is installed, no such file is in the current directory and neither Numba nor PyYAML is
imported yet: Numba then sees PyYAML as installed, as it is, and the first attribute Numba (or
anything else holding the stand-in) reads from it imports PyYAML and answers from it. The name
``yaml`` in ``sys.modules`` is given back right after Numba's import, so every later ``import
yaml`` gets PyYAML itself. In any other case it is a plain ``import numba``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types


class _PyYAMLOnFirstUse(types.ModuleType):
    def __getattr__(self, name):
        real = sys.modules.get("yaml")
        if real is None or real is self:
            sys.modules.pop("yaml", None)
            real = importlib.import_module("yaml")
        return getattr(real, name)


def import_numba():
    if "numba" not in sys.modules and "yaml" not in sys.modules \
            and not os.path.isfile(".numba_config.yaml") and importlib.util.find_spec("yaml") is not None:
        stand_in = _PyYAMLOnFirstUse("yaml")
        sys.modules["yaml"] = stand_in
        try:
            import numba  # noqa: F401
        finally:
            if sys.modules.get("yaml") is stand_in:
                del sys.modules["yaml"]
    import numba

    return numba
