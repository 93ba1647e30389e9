"""Numba's start-up, trimmed to what loading and compiling jitort's kernels needs.

Seven things Numba does on the way to the first kernel cost a warm start (a process whose kernels
are all in the disk cache) a third of its time here, and ``prepare()`` (once, before the first
kernel is compiled or loaded; ``cache_on_first_use`` before the package's kernels are decorated)
changes each only where it cannot change a result:

* **SciPy's BLAS probe.** The first "refresh" of the target context (below) imports
  ``numba.np.arraymath``, whose module body runs ``_HAVE_BLAS = _check_blas()``:
  ``import scipy.linalg.cython_blas``, 0.15-0.18 s here (scipy.linalg and its array-API layer).
  No jitort kernel calls a BLAS (backend.py), and the flag only picks np.convolve/np.correlate's
  inner product; every linear-algebra implementation of Numba runs the same check itself when it
  is compiled. So the module is imported, right before the registries that need it, with the
  check answered from the package metadata (SciPy is installed, whose ``cython_blas`` is then
  imported when something needs it), and Numba's own function is put back right after. Anything
  unexpected (an older or newer Numba without these names, no SciPy) and it is a plain import.
* **The refresh on a cache load.** Loading a function from Numba's disk cache first refreshes the
  target context: it imports every lowering registry Numba has (arrays, random, typed containers,
  datetime, ...) and installs them, ~0.1 s, though loading machine code uses none of them -- only
  the runtime (NRT) must be up. Compiling refreshes the contexts itself
  (``CompilerBase.__init__``), so a cache miss still sees every registry. The cache load of
  jitort's own kernels (the package's and the generated ``jitort_*`` modules) initializes just the
  NRT; any other function's cache (a user's, in the same process) keeps Numba's behaviour.
* **The linking bitcode of a cached kernel.** A cache entry holds the machine code and, for
  linking the function into a later caller, its LLVM bitcode; loading parses that bitcode and
  walks its symbols (~2 ms a kernel, 29 kernels in ResNet-50) only to learn which symbols the
  library defines. jitort's kernels are called from Python, never linked into a caller, so their
  loads read the defined symbols from the object code's ELF symbol table (the same set: checked on
  every kernel of ResNet-50) and parse the bitcode only if something asks for it.
* **numpy.ma at the first array argument.** Numba types an ndarray argument (once per process
  and type; later calls take its C fast path) after ``isinstance(val, np.ma.MaskedArray)``, and
  NumPy imports ``numpy.ma`` on that first attribute access: 16-19 ms here. A MaskedArray can
  only exist once ``numpy.ma`` is imported, so until then the check is skipped (the rest is
  Numba's: dtype, layout, read-only); afterwards Numba's own function runs, MaskedArrays are
  refused as before.
* **The runtime's own functions.** Numba compiles the NRT's LLVM functions (reference counts,
  allocation helpers) at every process start: 20 ms of LLVM. Their object code is kept next to
  Numba's cache of jitort's package kernels (``NUMBA_CACHE_DIR``, else this package's
  ``__pycache__`` when writable), keyed by the IR text, the codegen's target (triple, CPU,
  features) and the Numba and llvmlite versions, with a sha256 of its bytes; a later process
  loads it like a cached kernel. A missing, unreadable, truncated or altered file is compiled
  again (and rewritten, temp file + rename).
* **A cache per kernel at import.** ``cache=True`` makes each dispatcher build its
  ``FunctionCache`` when it is decorated: the source file's stamp, the cache directory found,
  made and probed for writing (a temporary file). jitort decorates 42 kernels at import and
  ResNet-50's generated modules 49 more, ~7 ms here, though a warm start looks up only a few of
  them in Numba's cache (the kernel image holds the rest, kernel_image.py). A jitort function's
  cache is made when the dispatcher first uses it (``cache_on_first_use``, installed before the
  package's kernels are decorated); every other function's as Numba makes it.
* **Extension discovery.** Numba's first compile or cache load lists every entry point of every
  installed distribution to find its extensions' hooks (20-39 ms here, where there are none);
  ``numba_extensions.py`` reads the same files, and Numba's discovery runs only when one of them
  names Numba's extension group (or distributions may come from elsewhere).

``prepare()`` also registers a listener that ends a pause of the garbage collector
(jitort/gc_pause.py) when a compile starts: a compile makes cyclic garbage in bulk.

    numba = prepare()        # once, before the first kernel is compiled or loaded
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
import sys
import tempfile
import threading

_PATCHED = "_jitort_patched"
_loading = threading.local()  # set while a jitort kernel loads from Numba's cache


def prepare():
    import numba

    from .numba_extensions import skip_discovery_if_none

    for patch in (_arraymath_before_registries, _load_without_refresh, _symbols_from_object_code,
                  _typeof_ndarray_without_numpy_ma, _nrt_from_object_code, skip_discovery_if_none,
                  cache_on_first_use, _collect_while_compiling):
        try:
            patch()
        except (ImportError, AttributeError):  # another Numba: its own behaviour, unchanged
            pass
    return numba


def _collect_while_compiling() -> None:
    """A compile ends a pause of the garbage collector (gc_pause.py): it makes cyclic garbage in
    bulk."""
    from numba.core import event

    from ...gc_pause import resume

    global _RESUME_REGISTERED
    with _RESUME_LOCK:
        if _RESUME_REGISTERED:
            return

        class _Resume(event.Listener):
            def on_start(self, ev):
                resume()

            def on_end(self, ev):
                pass

        event.register("numba:compile", _Resume())
        _RESUME_REGISTERED = True


_RESUME_LOCK = threading.Lock()
_RESUME_REGISTERED = False


# -- SciPy's BLAS probe ---------------------------------------------------------------------------
def _arraymath_before_registries() -> None:
    from numba.core.cpu import CPUContext

    numba_load = CPUContext.load_additional_registries
    if getattr(numba_load, _PATCHED, False):
        return

    def load_additional_registries(self):
        if "numba.np.arraymath" not in sys.modules:
            _import_arraymath()
        return numba_load(self)

    setattr(load_additional_registries, _PATCHED, True)
    CPUContext.load_additional_registries = load_additional_registries


def _import_arraymath() -> None:
    try:
        from numba.np import linalg
        real = linalg.ensure_blas
        scipy_linalg = importlib.util.find_spec("scipy.linalg") is not None
    except (ImportError, AttributeError, ValueError):
        return
    if not scipy_linalg:  # Numba's own check then fails: let it run
        return
    linalg.ensure_blas = _blas_is_installed
    try:
        import numba.np.arraymath as arraymath
    finally:
        linalg.ensure_blas = real
    if getattr(arraymath, "ensure_blas", None) is _blas_is_installed:
        arraymath.ensure_blas = real


def _blas_is_installed() -> None:
    """``ensure_blas`` for arraymath's import-time probe: SciPy's spec was found."""


# -- the refresh on a cache load ------------------------------------------------------------------
def _is_jitort(py_func) -> bool:
    return getattr(py_func, "__module__", "").partition(".")[0].startswith("jitort")


def _load_without_refresh() -> None:
    from numba.core.caching import Cache
    from numba.core.runtime import nrt

    numba_load = Cache.load_overload
    if getattr(numba_load, _PATCHED, False):
        return
    rtsys, guard, load = nrt.rtsys, Cache._guard_against_spurious_io_errors, Cache._load_overload

    def load_overload(self, sig, target_context):
        if not _is_jitort(getattr(self, "_py_func", None)):
            return numba_load(self, sig, target_context)
        rtsys.initialize(target_context)  # what the cached machine code needs of the refresh
        _loading.active = True
        try:
            with guard(self):
                return load(self, sig, target_context)
        finally:
            _loading.active = False

    setattr(load_overload, _PATCHED, True)
    Cache.load_overload = load_overload


# -- a cache per kernel at import -----------------------------------------------------------------
def cache_on_first_use() -> None:
    """Give each jitort function's dispatcher, at ``enable_caching``, a stand-in that makes its
    ``FunctionCache`` at the first use (see the module docstring)."""
    from numba.core.dispatcher import Dispatcher

    numba_enable = Dispatcher.enable_caching
    if getattr(numba_enable, _PATCHED, False):
        return

    def enable_caching(self):
        if not _is_jitort(self.py_func):
            return numba_enable(self)
        self._cache = _CacheOnFirstUse(self.py_func)

    setattr(enable_caching, _PATCHED, True)
    Dispatcher.enable_caching = enable_caching


class _CacheOnFirstUse:
    """Numba's ``FunctionCache`` of ``py_func``, made when any of its attributes is first read."""

    def __init__(self, py_func):
        self._py_func = py_func
        self._real = None

    def __getattr__(self, name):
        real = self.__dict__["_real"]
        if real is None:
            from numba.core.caching import FunctionCache

            real = self.__dict__["_real"] = FunctionCache(self.__dict__["_py_func"])
        return getattr(real, name)


# -- the linking bitcode of a cached kernel -------------------------------------------------------
def _symbols_from_object_code() -> None:
    from numba.core.codegen import CPUCodeLibrary

    numba_unserialize = CPUCodeLibrary._unserialize.__func__
    if getattr(numba_unserialize, _PATCHED, False):
        return

    def _unserialize(cls, codegen, state):
        name, kind, data = state
        symbols, engine = None, codegen._engine
        if kind == "object" and getattr(_loading, "active", False) \
                and isinstance(getattr(engine, "_defined_symbols", None), set):
            symbols = elf_defined_symbols(data[0])
        if symbols is None:
            return numba_unserialize(cls, codegen, state)
        object_code, bitcode = data
        self = codegen.create_library(name)
        self.__class__ = _lazy_class(type(self))
        self._linking_bitcode = bitcode
        self.__dict__["_jitort_blobs"] = data  # what kernel_image.collect keeps of it
        self.enable_object_caching()
        self._set_compiled_object(object_code)
        self._finalize_final_module()
        engine._defined_symbols |= symbols  # what _load_defined_symbols(bitcode) adds
        return self

    setattr(_unserialize, _PATCHED, True)
    CPUCodeLibrary._unserialize = classmethod(_unserialize)


_LAZY: dict = {}


def _lazy_class(base: type) -> type:
    """``base`` whose ``_shared_module`` (the module for linking into a caller) is parsed from the
    kept bitcode the first time anything reads it."""
    cls = _LAZY.get(base)
    if cls is None:
        import llvmlite.binding as ll

        def get(self):
            mod = self.__dict__.get("_jitort_shared")
            if mod is None and self.__dict__.get("_linking_bitcode") is not None:
                mod = self.__dict__["_jitort_shared"] = ll.parse_bitcode(self.__dict__.pop("_linking_bitcode"))
            return mod

        def put(self, mod):
            self.__dict__["_jitort_shared"] = mod

        cls = _LAZY[base] = type(base.__name__, (base,), {"_shared_module": property(get, put),
                                                           "__module__": base.__module__})
    return cls


# -- numpy.ma at the first array argument --------------------------------------------------------
def _typeof_ndarray_without_numpy_ma() -> None:
    import numpy as np
    from numba.core import errors, types
    from numba.core.typing.typeof import typeof_impl
    from numba.np import numpy_support

    numba_typeof = typeof_impl.dispatch(np.ndarray)
    if getattr(numba_typeof, _PATCHED, False):
        return

    def typeof_ndarray(val, c):
        """numba.core.typing.typeof._typeof_ndarray less its MaskedArray check while numpy.ma is
        not imported (tests/backends/cpu/test_numba_start.py checks the types equal)."""
        if "numpy.ma" in sys.modules:  # MaskedArrays may exist: Numba's own check and refusal
            return numba_typeof(val, c)
        try:
            dtype = numpy_support.from_dtype(val.dtype)
        except errors.NumbaNotImplementedError:
            raise errors.NumbaValueError(f"Unsupported array dtype: {val.dtype}") from None
        return types.Array(dtype, val.ndim, numpy_support.map_layout(val), readonly=not val.flags.writeable)

    setattr(typeof_ndarray, _PATCHED, True)
    typeof_impl.register(np.ndarray)(typeof_ndarray)


# -- the runtime's own functions ------------------------------------------------------------------
_NRT_MAGIC = b"jitort-nrt-1\n"


def _nrt_from_object_code() -> None:
    import llvmlite
    import numba
    from numba.core.runtime import nrtdynmod

    numba_compile = nrtdynmod.compile_nrt_functions
    if getattr(numba_compile, _PATCHED, False):
        return

    def compile_nrt_functions(ctx):
        ir_mod, library = nrtdynmod.create_nrt_module(ctx)
        codegen = ctx.codegen()
        path = nrt_object_path(str(ir_mod), repr(codegen.magic_tuple()), numba.__version__, llvmlite.__version__)
        blobs = read_checked(path) if path else None
        if blobs is not None:
            _loading.active = True  # the object-code load above: defined symbols from the ELF table
            try:
                return codegen.unserialize_library((library.name, "object", blobs))
            except Exception:  # noqa: BLE001 - anything wrong with it: compile as Numba would
                pass
            finally:
                _loading.active = False
            ir_mod, library = nrtdynmod.create_nrt_module(ctx)
        library.enable_object_caching()
        library.add_ir_module(ir_mod)
        library.finalize()
        if path:
            _, _, (obj, bitcode) = library.serialize_using_object_code()
            write_checked(path, obj, bitcode)
        return library

    setattr(compile_nrt_functions, _PATCHED, True)
    nrtdynmod.compile_nrt_functions = compile_nrt_functions


def nrt_object_path(*key: str) -> str | None:
    """Where the NRT's object code for ``key`` lives; None when no such place is writable."""
    from numba.core import config

    if config.CACHE_DIR:
        where = os.path.join(config.CACHE_DIR, "jitort_nrt")
    else:
        where = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return None
    if not os.access(where, os.W_OK):
        return None
    digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:32]
    return os.path.join(where, f"nrt-{digest}.o")


def write_checked(path: str, *blobs: bytes) -> None:
    """``blobs`` with their sizes and a sha256 of them, written to a temp file renamed onto
    ``path``; nothing (and no temp file) when the directory refuses."""
    body = struct.pack(f"<{len(blobs)}Q", *map(len, blobs)) + b"".join(blobs)
    count = struct.pack("<B", len(blobs))
    data = _NRT_MAGIC + count + hashlib.sha256(count + body).digest() + body
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nrt-", dir=os.path.dirname(path))
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def read_checked(path: str) -> tuple[bytes, ...] | None:
    """The blobs ``write_checked`` wrote to ``path``; None when the file is missing, unreadable,
    of another format, truncated or altered."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = len(_NRT_MAGIC) + 1 + 32
    if len(data) < head or not data.startswith(_NRT_MAGIC):
        return None
    n = data[len(_NRT_MAGIC)]
    digest, body = data[len(_NRT_MAGIC) + 1:head], data[head:]
    if hashlib.sha256(bytes([n]) + body).digest() != digest or len(body) < 8 * n:
        return None
    sizes = struct.unpack_from(f"<{n}Q", body)
    if 8 * n + sum(sizes) != len(body):
        return None
    out, at = [], 8 * n
    for size in sizes:
        out.append(body[at:at + size])
        at += size
    return tuple(out)


def elf_defined_symbols(obj: bytes) -> set[str] | None:
    """The names an ELF64 little-endian object file defines (functions and data, any binding);
    None for any other format, or a file this reader does not follow."""
    try:
        if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
            return None
        shoff, = struct.unpack_from("<Q", obj, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
        names: set[str] = set()
        for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
            if sh_type != 2:  # SHT_SYMTAB
                continue
            if entsize != 24 or off + size > len(obj):
                return None
            strtab = sections[link][4]
            for st_name, st_info, _, st_shndx, _, _ in struct.iter_unpack("<IBBHQQ", obj[off:off + size]):
                if st_shndx == 0 or not st_name or (st_info & 0xF) in (3, 4):  # undefined, SECTION, FILE
                    continue
                start = strtab + st_name
                names.add(obj[start:obj.index(b"\0", start)].decode())
        return names
    except (struct.error, IndexError, ValueError, OverflowError, UnicodeDecodeError):
        return None
