"""Fill the disk cache ahead of time: compile every listed Signature of a model.

    jitort.warmup("bert.onnx", [{"input_ids": (1, 128), "attention_mask": (1, 128)},
                                {"input_ids": (8, 128), "attention_mask": (8, 128)}])

Each Signature is compiled by calling the model once on random inputs of those shapes (and the
declared dtypes), which writes its variant to the cache; an entry already there is only loaded.
``jobs`` > 1 compiles signatures in that many worker processes (each compile is single-threaded
Python + LLVM; the per-key file lock keeps two workers from compiling one key). Returns one
:class:`WarmupResult` per Signature.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from .errors import JitortError


@dataclass
class WarmupResult:
    signature: str
    status: str  # "compiled" (optimized here), "cached" (loaded from the disk cache) or "failed: ..."
    seconds: float
    key: str = ""
    numba_compiles: int = 0


def parse_signatures(data) -> list[dict[str, tuple]]:
    """A JSON-like value -> signatures: ``{"x": [1, 3]}`` (one) or a list of such objects; a
    shape is a list of ints or 'D1xD2...'."""
    items = data if isinstance(data, list) else [data]
    out = []
    for i, sig in enumerate(items):
        if not isinstance(sig, dict):  # {} : the declared shapes (symbolic dims as 1)
            raise JitortError(f"signature {i}: expected an object name -> shape, got {sig!r}")
        shapes = {}
        for name, dims in sig.items():
            try:
                if isinstance(dims, str):
                    dims = [d for d in dims.lower().split("x") if d != ""]
                shapes[str(name)] = tuple(int(d) for d in dims)
            except (TypeError, ValueError):
                raise JitortError(f"signature {i}: shape of {name!r} must be a list of ints or "
                                  f"'D1xD2...', got {dims!r}") from None
        out.append(shapes)
    return out


def load_signatures_file(path: str) -> list[dict[str, tuple]]:
    try:
        with open(path) as f:
            return parse_signatures(json.load(f))
    except (OSError, ValueError) as exc:
        raise JitortError(f"--shapes-from {path}: {exc}") from None


def _warm_one(path, shapes: dict, options: dict, seed: int = 0) -> WarmupResult:
    from . import load
    from .cache.instrument import compile_counter
    from .cache.variants import wait_for_saves
    from .cli import random_inputs

    counter = compile_counter()
    before = counter.numba
    t0 = time.perf_counter()
    m = load(path, **options)
    unknown = sorted(set(shapes) - set(m.input_names))
    if unknown:
        raise JitortError(f"--shape names {unknown}, which the model does not have; its inputs "
                          f"are {m.input_names}")
    feeds = random_inputs(m, shapes, seed)
    sig_text = ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())
    try:
        m(**feeds)
    except JitortError as exc:
        return WarmupResult(sig_text, f"failed: {exc}", time.perf_counter() - t0)
    wait_for_saves()  # "compiled" means on disk
    v = next(iter(m._variants.values()))
    status = "cached" if m.stats.cache_hits else "compiled"
    return WarmupResult(sig_text, status, time.perf_counter() - t0,
                        v.key.digest if v.key is not None else "", counter.numba - before)


def _worker(args) -> dict:
    path, shapes, options = args
    try:
        return asdict(_warm_one(path, shapes, options))
    except JitortError as exc:
        return asdict(WarmupResult(str(shapes), f"failed: {exc}", 0.0))


def warmup(path, signatures, *, jobs: int = 1, progress: bool = False, **options) -> list[WarmupResult]:
    """Compile ``signatures`` (a list of {input name: shape}) of the model at ``path`` into the
    disk cache; ``options`` as for :func:`jitort.load` (cache_dir, num_threads, opt_level...)."""
    if options.get("device") not in (None, "cpu"):
        raise JitortError(f"device {options['device']!r} is not available for warm-up: jitort "
                          f"compiles for 'cpu' (the GPU backend is not built yet)")
    sigs = parse_signatures(list(signatures)) if not isinstance(signatures, dict) else parse_signatures(signatures)
    bar = _bar(len(sigs), progress)
    results: list[WarmupResult] = []
    try:
        if jobs <= 1 or len(sigs) <= 1:
            for shapes in sigs:
                results.append(_warm_one(path, shapes, options))
                bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
                for r in ex.map(_worker, [(path, s, options) for s in sigs]):
                    results.append(WarmupResult(**r))
                    bar.update(1)
    finally:
        bar.close()
    return results


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total: int, progress: bool):
    if not progress:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="signature", desc="warm-up")
