"""Imports every pass module so that their @graph_pass registrations run."""

import importlib
import pkgutil

from . import __path__ as _path

_SKIP = {"base", "pattern", "pipeline", "load_all"}

for _m in pkgutil.iter_modules(_path):
    if _m.name not in _SKIP and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{_m.name}")
