"""A variant's generated kernels as one piece of its cache entry: what a warm start loads instead of
asking Numba's disk cache for each kernel.

    image = collect(plan.kernel_modules)   # after the plan's first run: bytes, or None
    install(image)                         # a later process, before building the plan
    attach(module)                         # modules.load_module, once a generated module ran

Numba's cache costs a warm start ~1.2 ms per kernel: an index and a data file opened and
unpickled, an index key hashed, an empty LLVM module parsed, added to the JIT engine and
finalized, all per kernel (ResNet-50's 25 generated kernels: ~30 ms; from the image ~20 ms less,
measured). The image holds, per module (generated, or the package's own), each compiled overload
of the dispatchers that no compiled one calls (a callee is linked into its caller; a dispatcher
kept under another name, ``f = njit(g)``, counts as its module's): the object code and linking bitcode
Numba's cache would hold, the function descriptor, environments and signature (pickled as Numba
pickles them), and the overload's ``reload_init`` (the threading layer's start for a
``parallel=True`` kernel). ``install`` runs
every ``reload_init``, adds every object file to Numba's JIT engine and finalizes once (the
NRT is up first: the kernels call it); ``attach`` gives each dispatcher of a module, once the
module's code has run, its overloads -- the entry point made as Numba makes one from a cached
overload (``get_executable``, ``insert_user_function``, ``add_overload``). Calls then go through
the dispatcher as before: its type checks and its choice of overload are Numba's.

An image is used only where it was made for this codegen (Numba's ``magic_tuple``: triple, CPU,
features) and these Numba and llvmlite versions -- the cache key holds the same facts; anything
else, an overload a dispatcher already has, or any failure, and the kernel loads from Numba's
cache as before. Overloads in object mode or of lifted loops are left out. The object code of an
overload loaded from Numba's cache is kept on its library (``numba_start``), so an image can be
made in a process that compiled nothing. The package's own kernels (pools, transposes, row
kernels) that ran in the process that made the image are in it too; their modules are imported
with the backend, so ``install`` gives them their overloads at once.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import sys
import threading
import warnings

FORMAT = 1

_LOCK = threading.RLock()
_INSTALLED: set = set()    # (module, attribute, argument types) added to the JIT engine
_WAITING: dict = {}        # module name -> kernel records whose module has not run yet


class Stats:
    attached = 0   # overloads given to dispatchers from an image, this process


STATS = Stats()


def collect(module_names) -> bytes | None:
    """The image of the overloads of the generated modules ``module_names`` (imported in this
    process) and of the package's own kernels compiled or loaded in this process (pools,
    transposes, row kernels: those the plan ran among them); None when there is none to keep."""
    import llvmlite
    import numba
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.dispatcher import Dispatcher
    from numba.core.serialize import dumps

    names = list(module_names) + sorted(n for n in sys.modules if n.startswith(_PACKAGE))
    own = {n: _own_dispatchers(sys.modules.get(n), Dispatcher) for n in names}
    # a callee's code is linked into the library of each caller compiled here: only a call from
    # Python can need its own (a callee not in the image loads from Numba's cache if one does)
    called = {c for ds in own.values() for name, d in ds.items() if d.overloads
              for c in d.py_func.__code__.co_names if c != name}
    modules: dict = {}
    with global_compiler_lock:
        for modname, ds in own.items():
            for attr, disp in ds.items():
                if attr in called:
                    continue
                for args, cres in list(disp.overloads.items()):
                    rec = _record(attr, args, cres, dumps)
                    if rec is not None:
                        modules.setdefault(modname, []).append(rec)
    if not modules:
        return None
    return pickle.dumps({"format": FORMAT, "magic": _magic(), "numba": numba.__version__,
                         "llvmlite": llvmlite.__version__, "modules": modules}, protocol=5)


_PACKAGE = __name__.rpartition(".")[0] + "."  # jitort.backends.cpu.


def _own_dispatchers(mod, Dispatcher) -> dict:
    """name -> dispatcher of the functions ``mod`` defines and decorates (``f = njit(g)`` too),
    each dispatcher under one name: its function's own when it has that one."""
    if mod is None:
        return {}
    out: dict = {}
    for name, d in vars(mod).items():
        if isinstance(d, Dispatcher) and getattr(d.py_func, "__module__", None) == mod.__name__:
            out.setdefault(id(d), (name, d))
            if d.py_func.__name__ == name:
                out[id(d)] = (name, d)
    return dict(out.values())


def _record(attr: str, args, cres, dumps) -> dict | None:
    if cres.objectmode or cres.lifted or cres.environment is None:
        return None
    blobs = cres.library.__dict__.get("_jitort_blobs")
    if blobs is None:
        try:
            _, kind, blobs = cres.library.serialize_using_object_code()
        except Exception:  # noqa: BLE001 - no object code kept: Numba's cache has it
            return None
        if kind != "object":
            return None
    fndesc = copy.copy(cres.fndesc)
    fndesc.typemap = fndesc.calltypes = None  # as Numba's cache: not needed, may not pickle
    try:  # the environments of the functions linked in, as Numba's cache keeps them
        envs = cres.referenced_envs if cres.referenced_envs is not None else cres._find_referenced_environments()
        meta = dumps((fndesc, cres.environment, cres.signature, str(cres.type_annotation), tuple(envs)))
        init = dumps(tuple(cres.reload_init or ()))
    except Exception:  # noqa: BLE001 - something in it does not pickle
        return None
    return {"attr": attr, "args": str(tuple(args)), "name": cres.library.name, "object": blobs[0],
            "bitcode": blobs[1], "meta": meta, "init": init}


def _magic() -> str:
    from numba.core.registry import cpu_target

    return repr(cpu_target.target_context.codegen().magic_tuple())


def install(image: bytes | None) -> int:
    """Add the image's kernels to Numba's JIT engine (those not there yet); their dispatchers
    get them at :func:`attach`. Returns how many were added; 0 for an image of another codegen
    or version, or one that cannot be read (the kernels then load from Numba's cache)."""
    if not image:
        return 0
    try:
        rec = _read(image)
    except Exception as exc:  # noqa: BLE001
        _warn(f"its kernel image cannot be read ({type(exc).__name__}: {exc})")
        return 0
    if rec is None:
        return 0
    import llvmlite.binding as ll
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    from numba.core.runtime import nrt

    from .numba_start import elf_defined_symbols

    ctx = cpu_target.target_context
    with global_compiler_lock, _LOCK:
        try:
            new = _not_installed(rec, elf_defined_symbols)
            if not new:
                return 0
            nrt.rtsys.initialize(ctx)  # the kernels call the NRT: its functions must be in the engine
            engine = ctx.codegen()._engine
            for _, k, symbols in new:
                engine._ee.add_object_file(ll.ObjectFileRef.from_data(k["object"]))
                engine._defined_symbols |= symbols
            engine._ee.finalize_object()
        except Exception as exc:  # noqa: BLE001 - an object added already is loaded again: harmless
            _warn(f"its kernel image could not be installed ({type(exc).__name__}: {exc})")
            return 0
        for key, k, _ in new:
            _INSTALLED.add(key)
            _WAITING.setdefault(key[0], []).append(k)
    for modname in sorted({key[0] for key, _, _ in new}):
        mod = sys.modules.get(modname)
        if mod is None and modname.startswith(_PACKAGE):  # one of ours the plan will import
            mod = _import(modname)
        if mod is not None:
            attach(mod)
    return len(new)


def _import(modname: str):
    try:
        return importlib.import_module(modname)
    except ImportError:  # not in this version of the package: its records wait unused
        return None


def _not_installed(rec: dict, elf_defined_symbols) -> list:
    """(key, record, defined symbols) of the image's kernels not in the engine yet, with each
    one's ``reload_init`` run (its object code may need what they start)."""
    new = []
    for modname, kernels in rec["modules"].items():
        for k in kernels:
            key = (modname, k["attr"], k["args"])
            if key in _INSTALLED or _has_overload(getattr(sys.modules.get(modname), k["attr"], None), k):
                continue
            symbols = elf_defined_symbols(k["object"])
            if symbols is None:
                continue
            for fn in pickle.loads(k["init"]):
                fn()
            new.append((key, k, symbols))
    return new


def _read(image: bytes) -> dict | None:
    import llvmlite
    import numba

    rec = pickle.loads(image)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        return None
    if (rec.get("numba"), rec.get("llvmlite")) != (numba.__version__, llvmlite.__version__) \
            or rec.get("magic") != _magic():
        return None
    return rec


def _has_overload(disp, k: dict) -> bool:
    """Whether ``disp`` (None: its module is not imported yet; a plain function: an elementwise
    region's kernel before its decoration) has the overload of record ``k``."""
    return any(str(a) == k["args"] for a in getattr(disp, "overloads", ()))


def attach(mod) -> None:
    """Give the dispatchers of ``mod`` (a generated module whose code has run) the overloads an
    installed image holds for them. A record whose attribute is not a dispatcher yet (an
    elementwise region's kernel is decorated after its module ran) waits for the next call."""
    if mod.__name__ not in _WAITING:
        return
    from numba.core.compiler import CompileResult
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.dispatcher import Dispatcher
    from numba.core.registry import cpu_target

    ctx = cpu_target.target_context
    with global_compiler_lock, _LOCK:
        later = []
        for k in _WAITING.pop(mod.__name__, ()):
            try:
                disp = getattr(mod, k["attr"], None)
                if not isinstance(disp, Dispatcher):  # decorated after the module ran
                    later.append(k)
                    continue
                if _has_overload(disp, k):
                    continue
                fndesc, env, signature, typeann, envs = pickle.loads(k["meta"])
                library = _library(ctx.codegen(), k)
                entry = ctx.get_executable(library, fndesc, env)
                cres = CompileResult(
                    target_context=ctx, typing_context=ctx.typing_context, library=library,
                    environment=env, entry_point=entry, fndesc=fndesc, type_annotation=typeann,
                    signature=signature, objectmode=False, lifted=(), typing_error=None,
                    call_helper=None, metadata=None, reload_init=list(pickle.loads(k["init"])),
                    referenced_envs=envs)
                ctx.insert_user_function(entry, fndesc, [library])
                disp.add_overload(cres)
                disp._cache_hits[tuple(signature.args)] += 1  # a load, as Numba counts one
                STATS.attached += 1
            except Exception as exc:  # noqa: BLE001 - the dispatcher loads it from Numba's cache
                _warn(f"a kernel of {mod.__name__} could not be taken from its image "
                      f"({type(exc).__name__}: {exc})")
        if later:
            _WAITING[mod.__name__] = later


def _library(codegen, k: dict):
    """A finalized code library around object code already in the engine, as Numba's cache
    load makes one (numba_start._unserialize) less adding it to the engine again."""
    from .numba_start import _lazy_class

    lib = codegen.create_library(k["name"])
    lib.__class__ = _lazy_class(type(lib))
    lib._linking_bitcode = k["bitcode"]
    lib.__dict__["_jitort_blobs"] = (k["object"], k["bitcode"])
    lib.enable_object_caching()
    lib._set_compiled_object(k["object"])
    lib._finalized = True
    return lib


def _warn(what: str) -> None:
    warnings.warn(f"jitort cache: {what}; its kernels load from Numba's cache instead",
                  RuntimeWarning, stacklevel=3)
