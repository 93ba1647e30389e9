"""Generated kernel modules: one place that writes, checks and imports them.

    mod = load_module(source, "jitort_conv_1a2b...", cache_dir)   # cache_dir None: in memory
    with recording() as names: ...build a plan...                  # the modules it used

With a ``cache_dir`` the source is written there as ``<modname>.py`` (temp file + rename) and
imported under ``modname``, registered in ``sys.modules`` before ``exec_module`` so that Numba's
disk cache (``cache=True``) finds the module again in a later process. The module name is a hash
of the source (and of the generator that wrote it), so a file whose text is not the source it
should hold was damaged: it is rewritten with a warning before it is imported. Without a
cache_dir the source is exec'd into a fresh module (compiled again in every process).

Every lookup of a kernel module -- new or already imported -- is noted, so the disk cache can
record in an entry's metadata which generated modules its plan runs (``jitort cache info``) and
keep their compiled kernels with the entry (kernel_image.py: a module imported after its entry's
image was installed gets its dispatchers' overloads from it).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import py_compile
import sys
import threading
import types
import warnings

from ...cache.fs import atomic_write
from . import kernel_image

_LOCAL = threading.local()


@contextlib.contextmanager
def recording():
    """Collect the names of the generated modules noted in this thread meanwhile."""
    prev = getattr(_LOCAL, "names", None)
    names: list[str] = []
    _LOCAL.names = names
    try:
        yield names
    finally:
        _LOCAL.names = prev
        if prev is not None:
            prev.extend(n for n in names if n not in prev)


def note(modname: str) -> None:
    names = getattr(_LOCAL, "names", None)
    if names is not None and modname not in names:
        names.append(modname)


def load_module(source: str, modname: str, cache_dir: str | None) -> types.ModuleType:
    """The module of ``source`` named ``modname`` (see the module docstring)."""
    note(modname)
    if cache_dir is None:
        mod = types.ModuleType(modname)
        mod.__file__ = f"<{modname}>"
        exec(compile(source, mod.__file__, "exec"), mod.__dict__)  # noqa: S102 - our own source
        return mod
    path = os.path.join(os.fspath(cache_dir), modname + ".py")
    known = sys.modules.get(modname)
    if known is not None and getattr(known, "__file__", None) == path:
        return known
    try:
        with open(path) as f:
            current = f.read()
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError):
        current = ""
    pyc = importlib.util.cache_from_source(path)
    if current != source:
        if current is not None:
            warnings.warn(f"jitort: generated kernel module {path} does not hold the source its name "
                          f"promises (damaged or edited); it is rewritten", RuntimeWarning, stacklevel=3)
        atomic_write(path, source)
        _write_pyc(path, pyc)
    elif not os.path.exists(pyc):
        _write_pyc(path, pyc)
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod  # before exec_module: Numba's cache finds the module by name
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    kernel_image.attach(mod)  # overloads an installed kernel image holds for it
    return mod


def _write_pyc(path: str, pyc: str) -> None:
    """Byte-compile the module next to it, whatever ``sys.dont_write_bytecode`` says (these
    machines set PYTHONDONTWRITEBYTECODE=1: every warm start compiled each kernel module's Python
    again, ~1 ms each). Hash-checked: the import uses it only while it matches the source."""
    try:
        py_compile.compile(path, cfile=pyc, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except (OSError, py_compile.PyCompileError):
        pass  # the import compiles the source itself


def hash_files(seed: str, paths) -> str:
    """sha256 of ``seed`` then the bytes of each existing file in ``paths``: the generator part
    of a kernel module's name (a changed generator, tile or inlined helper must not reuse a module
    compiled from the old one)."""
    h = hashlib.sha256(seed.encode())
    for path in paths:
        if os.path.exists(path):
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()
