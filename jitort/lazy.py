"""Modules imported on first use, not at import time.

    from ..lazy import onnx, onnx_helper as helper, ml_dtypes

``import onnx`` costs about 0.6 s here, nearly all of it ml_dtypes registering its NumPy ufunc
loops (measured: 0.5 s in ``PyUFunc_AddLoop``). A warm start (every plan from the disk cache)
runs float32 models without ever touching them, so the modules on that path reach onnx,
ml_dtypes and scipy through these proxies; the first attribute access imports the real module.
A proxy is not the module: ``isinstance`` against a class needs ``proxy.Class``.
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_lazy_name"] = name

    def _load(self):
        mod = self.__dict__.get("_lazy_mod")
        if mod is None:
            mod = self.__dict__["_lazy_mod"] = importlib.import_module(self.__dict__["_lazy_name"])
        return mod

    def __getattr__(self, attr: str):
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_name']!r}>"


onnx = LazyModule("onnx")
onnx_helper = LazyModule("onnx.helper")
numpy_helper = LazyModule("onnx.numpy_helper")
ml_dtypes = LazyModule("ml_dtypes")
scipy_special = LazyModule("scipy.special")


class LazyObject:
    """An attribute of a module (a class, a function), imported on first use: attribute access
    and calls go to the real object."""

    __slots__ = ("_mod", "_attr", "_obj")

    def __init__(self, module: str, attr: str):
        self._mod, self._attr, self._obj = module, attr, None

    def _load(self):
        if self._obj is None:
            self._obj = getattr(importlib.import_module(self._mod), self._attr)
        return self._obj

    def __getattr__(self, name: str):
        return getattr(self._load(), name)

    def __call__(self, *args, **kwargs):
        return self._load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy {self._mod}.{self._attr}>"


TensorProto = LazyObject("onnx", "TensorProto")
AttributeProto = LazyObject("onnx", "AttributeProto")
