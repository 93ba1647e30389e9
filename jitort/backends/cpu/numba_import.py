"""Importing Numba without importing PyYAML, SciPy or importlib.metadata.

Numba's package imports three modules it does not use until much later, if ever:
* ``yaml`` (15-18 ms here), in its config module, to read a ``.numba_config.yaml`` in the current
  directory if there is one, then and at each later config reload;
* ``scipy`` (13-15 ms), in its ``__init__``, only to check that its version is at least 1.0;
* ``importlib.metadata`` (11 ms: it imports the email package), in ``numba.core.entrypoints``,
  only to list the installed entry points at the first compile or cache load, which
  ``numba_extensions.py`` skips when no distribution declares a Numba extension.

``import_numba()`` imports Numba with a stand-in module under each name whose real module is
installed and not imported yet (for yaml: when no such config file is in the current directory):
the stand-in for scipy carries ``__version__``, read from its ``.dist-info`` directory's name as
the cache key's versions are; any other attribute read from a stand-in imports the real module and
answers from it. The names in ``sys.modules`` are given back right after Numba's import, so every
later ``import yaml``, ``import scipy`` or ``import importlib.metadata`` gets the real module. Anything else (Numba or a module
already imported, a version that cannot be read) and it is a plain ``import numba``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types


class _OnFirstUse(types.ModuleType):
    """Stands in for the module ``name``: the attributes given here answer directly, any other
    imports the module (the stand-in first leaves ``sys.modules``) and answers from it."""

    def __init__(self, name: str, **known):
        super().__init__(name)
        self.__dict__.update(known)

    def __getattr__(self, attr):
        name = self.__name__
        real = sys.modules.get(name)
        if real is None or real is self:
            sys.modules.pop(name, None)
            real = importlib.import_module(name)
        return getattr(real, attr)


def _stand_ins() -> dict:
    if "numba" in sys.modules:
        return {}
    out = {}
    if "yaml" not in sys.modules and not os.path.isfile(".numba_config.yaml") \
            and importlib.util.find_spec("yaml") is not None:
        out["yaml"] = _OnFirstUse("yaml")
    if "scipy" not in sys.modules:
        from ...cache.key import installed_version

        version = installed_version("scipy")
        if version:
            out["scipy"] = _OnFirstUse("scipy", __version__=version)
    if "importlib.metadata" not in sys.modules:
        out["importlib.metadata"] = _OnFirstUse("importlib.metadata")
    return out


def import_numba():
    stand_ins = _stand_ins()
    sys.modules.update(stand_ins)
    try:
        import numba
    finally:
        for name, mod in stand_ins.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]
    return numba
