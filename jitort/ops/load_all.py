"""Imports every op family module so that their @op registrations run."""

import importlib
import pkgutil

from . import __path__ as _ops_path

_SKIP = {"registry", "attrs", "load_all", "common", "op_index", "make_op_index"}

for _m in pkgutil.iter_modules(_ops_path):
    if _m.name not in _SKIP and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{_m.name}")
