"""Autotuning of the CPU backend's GEMM and convolution tile configs (``jitort tune``).

    results = tune_model("bert.onnx", {"input_ids": (1, 128), ...}, cache_dir=None, threads=1)
    results = tune_bound(bound, threads, cache_dir)       # an optimized BoundGraph
    print(format_results(results))

For every GEMM / group-1 conv kernel the backend would generate for the graph (found by running
its lowerings under ``lower_gemm.collect_kernels()``; identical signatures once), the tuner

1. builds the default config (``gemm.choose_config``) and the candidates, each compiled in memory;
2. checks each candidate's output on random data against the registry's reference kernel
   (jitort::FusedMatMul / jitort::FusedConv in float64): |got - want| <= RTOL * (the magnitude of
   the terms summed there) + ATOL, every element. A candidate that fails, or fails to build, is
   rejected and reported; only checked candidates are timed, so none other can win;
3. times the checked candidates: per round each runs ``inner`` calls (about 1 ms of work) in a
   rotated order, the median over rounds is its time (interleaving spreads the load of the other
   jobs on the machine over all candidates alike); 7-41 rounds, about ``stage_s`` seconds;
4. duels the fastest against the default (the two alone, 15-101 rounds, about ``duel_s``
   seconds: the stage medians of a dozen candidates were off by 2-4% on a shared machine, which
   is the size of the gains) and stores it in the tuning database when it is MARGIN (3%)
   faster, else stores the default (so the next tune skips the kernel: ``force=True`` re-tunes).

Candidates (``_stage1``, ``_stage2``; ``candidates=`` replaces them with one flat list). A compile costs 0.3-0.7 s, so not the 41 of ``tile_configs``:

* stage 1, the register tile (the first-order choice: FMA throughput and the A/B reuse per
  load): every tile shape of ``tile_configs`` at the default's KC and MC, minus tiles wider than
  N rounded up to the vector width (padding work) and tiles that run as another one (MR > M
  rows: M rows), the default's kept;
* stage 2, cache blocking (second-order, mostly independent of the tile): the best tile with KC
  in 128/256/384/512 and, for M > 96, MC = 96 rows or the whole M; the runner-up tile with the
  KC values. Configs with the same effective blocking (KC >= K, MC >= M...) are built once;
* M = 1 (gemv): stage 1 the panel width NR = 2, 4 or 8 vectors (one row: MR = 1), stage 2 the
  KC values.

The timed epilogue is the one most of the kernel's nodes have (the key leaves it out, see
tuning_db.py).

At most ``max_candidates`` (default 12) per kernel, the default included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import tuning_db

MARGIN = 1.03  # a candidate must be 3% faster than the default to be stored
RTOL, ATOL = 3e-5, 1e-6  # float32 results, as tests/backends/cpu (per element, see check)
MAX_CANDIDATES = 12
_KCS = (128, 256, 384, 512)


# -- what is tuned ---------------------------------------------------------------------------
@dataclass
class KernelSpec:
    kind: str  # "gemm" | "conv"
    key: str  # the tuning database key (tuning_db.gemm_key / conv_key)
    args: dict  # what gemm_plan / conv_plan were called with
    nodes: list = field(default_factory=list)  # names of the nodes that run this kernel
    flops: float = 0.0


@dataclass
class KernelTuneResult:
    key: str
    kind: str
    nodes: int
    default: object = None  # TileConfig
    chosen: object = None  # TileConfig (the default when nothing beat it)
    default_us: float = float("nan")
    chosen_us: float = float("nan")
    tried: int = 0  # candidates built and checked, the default included
    rejected: list = field(default_factory=list)  # (config text, reason)
    status: str = ""  # tuned | default kept | in database | skipped: ... | failed: ...
    default_text: str = "-"  # effective blocking, "MRxNR KC= MC=" (describe)
    chosen_text: str = "-"
    timings: dict = field(default_factory=dict)  # config text -> median us (stage timings)

    @property
    def speedup(self) -> float:
        return self.default_us / self.chosen_us if self.chosen_us > 0 else float("nan")

    def to_json(self) -> dict:
        cfg = lambda c: None if c is None else tuning_db.config_to_json(c)  # noqa: E731
        return {"key": self.key, "kind": self.kind, "nodes": self.nodes, "status": self.status,
                "default": cfg(self.default), "chosen": cfg(self.chosen),
                "default_effective": self.default_text, "chosen_effective": self.chosen_text,
                "default_us": _num(self.default_us), "chosen_us": _num(self.chosen_us),
                "speedup": _num(self.speedup), "tried": self.tried,
                "rejected": [{"config": c, "reason": r} for c, r in self.rejected],
                "timings_us": self.timings}


def _num(x: float):
    return None if x != x else round(x, 3)


def collect(bound, threads: int) -> list[KernelSpec]:
    """The GEMM and group-1 conv kernels the CPU backend generates for ``bound`` (deduplicated
    by key), largest total work first."""
    from .backends.cpu import lower_gemm
    from .backends.cpu.gemm import VW
    from .backends.cpu.lowering import LOWERINGS, LowerCtx

    ctx = LowerCtx(bound, threads, None, None, {})
    specs: dict[str, KernelSpec] = {}
    variants: dict[str, list] = {}  # key -> the plan arguments of each node (epilogues differ)
    with lower_gemm.collect_kernels():
        for node in bound.graph.nodes:
            fn = LOWERINGS.get((node.domain, node.op_type))
            if fn is None or fn.__module__ != lower_gemm.__name__:
                continue
            if node.inputs and all(ctx.const(n) is not None for n in node.inputs if n):
                continue  # the backend folds it at build time
            try:
                fn(node, ctx)
                continue
            except lower_gemm.KernelRequest as req:
                kind, a = req.kind, req.plan_args
            except Exception:  # noqa: BLE001 - Unsupported: the node runs on the reference path
                continue
            if kind == "gemm":
                key = tuning_db.gemm_key(a["M"], a["K"], a["N"], a["threads"], VW)
                flops = 2.0 * a["M"] * a["K"] * a["N"]
            elif a["group"] == 1:
                key = tuning_db.conv_key(a["x_shape"], a["w_shape"], a["strides"], a["pads"],
                                         a["dilations"], a["threads"], VW)
                O, C, KH, KW = a["w_shape"]
                flops = 2.0 * _conv_probe(a).M * O * C * KH * KW
            else:
                continue  # depthwise: no tile config
            spec = specs.setdefault(key, KernelSpec(kind, key, a, [], 0.0))
            spec.nodes.append(node.name or node.outputs[0])
            spec.flops += flops
            variants.setdefault(key, []).append(a)
    for key, spec in specs.items():  # timed with the epilogue most of its nodes have
        reprs = [repr(sorted(v.items())) for v in variants[key]]
        spec.args = variants[key][max(range(len(reprs)), key=reprs.count)]
    return sorted(specs.values(), key=lambda s: -s.flops)


# -- building and checking candidates --------------------------------------------------------
def _conv_probe(a: dict, cfg=None):
    """A ConvPlan's geometry and (for cfg) effective blocking, without generating code."""
    from .backends.cpu.conv import ConvPlan
    from .backends.cpu.gemm import choose_config

    N, H, W, C = a["x_shape"]
    O, CG, KH, KW = a["w_shape"]
    SH, SW = a["strides"]
    PT, PL, PB, PR = a["pads"]
    DH, DW = a["dilations"]
    p = object.__new__(ConvPlan)
    OH = (H + PT + PB - DH * (KH - 1) - 1) // SH + 1
    OW = (W + PL + PR - DW * (KW - 1) - 1) // SW + 1
    p.x_shape, p.w_shape, p.threads = (N, H, W, C), (O, CG, KH, KW), a["threads"]
    p.M, p.K = N * max(OH, 0) * max(OW, 0), KH * KW * CG
    one = KH == KW == 1 and SH == SW == 1 and PT == PL == PB == PR == 0
    p.kind = "gemm" if one else "im2col"
    p._configure(cfg or choose_config(p.M, p.K, O))
    return p


def effective(spec: KernelSpec, cfg) -> tuple:
    """(MR, NR, KC, MC) as the plan will use them: two configs with the same are one kernel."""
    if spec.kind == "conv":
        p = _conv_probe(spec.args, cfg)
        return p.MR, p.NR, p.KC, p.MC
    M, K = spec.args["M"], spec.args["K"]
    kc = min(cfg.KC or max(K, 1), max(K, 1))
    mr = cfg.MR
    return mr, cfg.NR, kc, -(-max(1, min(cfg.MC or M, M)) // mr) * mr


def describe(spec: KernelSpec, cfg) -> str:
    mr, nr, kc, mc = effective(spec, cfg)
    return f"{mr}x{nr} KC={kc} MC={mc}"


class _Data:
    """Random operands of one kernel and the reference result (float64 registry kernels)."""

    def __init__(self, spec: KernelSpec, seed: int = 0):
        from .ops.registry import find

        rng = np.random.default_rng(seed)
        r = lambda *s: rng.standard_normal(s, dtype=np.float32)  # noqa: E731
        a = spec.args
        w64 = lambda v: None if v is None else v.astype(np.float64)  # noqa: E731
        if spec.kind == "gemm":
            M, K, N, ep = a["M"], a["K"], a["N"], a["epilogue"]
            self.A, self.B = r(M, K), r(K, N)
            self.bias = r(N) if ep.bias else None
            self.res = r(M, N) if ep.residual else None
            ref = find("FusedMatMul", "jitort", 1).kernel
            act = {"none": "", "relu": "Relu", "gelu_erf": "Gelu", "gelu_tanh": "GeluTanh"}[ep.activation]
            args = [w64(v) for v in (self.A, self.B, self.bias, self.res)]
            self.want = ref(*args, alpha=ep.alpha, activation=act)
            absd = [None if v is None else np.abs(v) for v in args]
            self.scale = ref(*absd, alpha=abs(ep.alpha), activation="")
        else:
            N, OH, OW, O = a["x_shape"][0], *_out_hw(a), a["w_shape"][0]
            self.x, self.W = r(*a["x_shape"]), r(*a["w_shape"])
            self.bias = r(O) if a["has_bias"] else None
            self.res = r(N, OH, OW, O) if a["has_residual"] else None
            ref = find("FusedConv", "jitort", 1).kernel
            kw = dict(dilations=list(a["dilations"]), group=a["group"], kernel_shape=list(a["w_shape"][2:]),
                      pads=list(a["pads"]), strides=list(a["strides"]), channels_last=1)
            args = [w64(v) for v in (self.x, self.W, self.bias, self.res)]
            self.want = ref(*args, activation=a["activation"], activation_params=list(a["activation_params"]), **kw)
            absd = [None if v is None else np.abs(v) for v in args]
            self.scale = ref(*absd, activation="", activation_params=[], **kw)


def _out_hw(a: dict) -> tuple[int, int]:
    _, H, W, _ = a["x_shape"]
    _, _, KH, KW = a["w_shape"]
    (SH, SW), (PT, PL, PB, PR), (DH, DW) = a["strides"], a["pads"], a["dilations"]
    return (H + PT + PB - DH * (KH - 1) - 1) // SH + 1, (W + PL + PR - DW * (KW - 1) - 1) // SW + 1


def build_runner(spec: KernelSpec, cfg, data: _Data) -> Callable[[], np.ndarray]:
    """A zero-argument function running ``spec``'s kernel with config ``cfg`` on ``data``
    (compiled in memory: candidates leave nothing in the cache); returns its output."""
    a = spec.args
    if spec.kind == "gemm":
        from .backends.cpu.gemm import GemmPlan

        plan = GemmPlan(a["M"], a["K"], a["N"], epilogue=a["epilogue"], threads=a["threads"], config=cfg)
        packed = plan.pack_b(data.B)
        out = np.empty((a["M"], a["N"]), np.float32)
        return lambda: plan(data.A, packed, out, bias=data.bias, residual=data.res)
    from .backends.cpu.lower_gemm import build_conv_plan

    plan = build_conv_plan(a, None, cfg)
    packed = plan.pack_weights(data.W, data.bias)
    out = np.empty(plan.y_shape, np.float32)
    return lambda: plan(data.x, packed, out=out, residual=data.res)


def check(got: np.ndarray, data: _Data) -> str:
    """"" when ``got`` matches the reference, else why not."""
    if got.shape != data.want.shape:
        return f"output shape {got.shape}, want {data.want.shape}"
    err = np.abs(got.astype(np.float64) - data.want)
    bound = RTOL * data.scale + ATOL
    bad = ~(err <= bound)  # NaN counts as bad
    if bad.any():
        i = np.unravel_index(int(np.argmax(np.where(bad, err / bound, 0))), got.shape)
        return (f"wrong output: {int(bad.sum())} of {got.size} elements off (at {tuple(int(v) for v in i)}: "
                f"{got[i]!r} vs {data.want[i]:.6g})")
    return ""


# -- timing ----------------------------------------------------------------------------------
def time_interleaved(runners: list, rounds: int = 7, seconds: float | None = None,
                     max_rounds: int = 101, target_s: float = 1e-3) -> list[float]:
    """Median seconds per call of each runner over interleaved rounds (the order rotates every
    round). A sample is ``inner`` calls making about ``target_s``. With ``seconds``: as many
    rounds as fit in it, at least ``rounds``, at most ``max_rounds``."""
    per = []
    for fn in runners:  # calibrate: how many calls make ~target_s
        t0 = time.perf_counter()
        fn()
        per.append(max(time.perf_counter() - t0, 1e-7))
    inner = [max(1, min(1000, int(target_s / t))) for t in per]
    if seconds is not None:
        round_s = sum(k * t for k, t in zip(inner, per))
        rounds = max(rounds, min(max_rounds, int(seconds / round_s)))
    samples = [[] for _ in runners]
    n = len(runners)
    for r in range(rounds):
        for j in range(n):
            i = (j + r) % n
            fn, k = runners[i], inner[i]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[i].append((time.perf_counter() - t0) / k)
    return [float(np.median(s)) for s in samples]


# -- the search --------------------------------------------------------------------------------
def _stage1(spec: KernelSpec, default) -> list:
    from .backends.cpu.gemm import VW, TileConfig, tile_configs

    if spec.kind == "gemm" and spec.args["M"] == 1:
        N = spec.args["N"]
        width = -(-max(N, 1) // VW) * VW
        return [TileConfig(1, m * VW, None, 1, f"gemv, {m} accumulators")
                for m in (2, 4, 8) if m * VW <= max(width, 2 * VW)]
    M, N = (spec.args["M"], spec.args["N"]) if spec.kind == "gemm" else \
        (_conv_probe(spec.args).M, spec.args["w_shape"][0])
    width = -(-max(N, 1) // VW) * VW
    tiles = []
    for c in tile_configs(VW):
        if c.MR > 1 and (c.MR, c.NR) not in [(t.MR, t.NR) for t in tiles]:
            tiles.append(c)
    out, seen = [], {(min(default.MR, M), default.NR)}
    for t in tiles:
        if (t.MR, t.NR) != (default.MR, default.NR):
            if t.NR > max(width, VW) or (min(t.MR, M), t.NR) in seen:
                continue  # padding work, or the same tile (a tile taller than M runs M rows)
            seen.add((min(t.MR, M), t.NR))
        mc = None if spec.kind == "conv" or M * (default.KC or 1) * 4 <= 512 * 1024 else 96 // t.MR * t.MR
        out.append(TileConfig(t.MR, t.NR, default.KC, mc, t.why))
    return out


def _stage2(spec: KernelSpec, ranked: list) -> list:
    """KC (and MC) variants of the best tile, KC variants of the runner-up."""
    from .backends.cpu.gemm import TileConfig

    M = spec.args["M"] if spec.kind == "gemm" else _conv_probe(spec.args).M
    out = []
    for n, c in enumerate(ranked[:2]):
        mcs = (c.MC,) if n or spec.kind == "conv" or M <= 96 else (None, 96 // c.MR * c.MR)
        for mc in mcs:
            out += [TileConfig(c.MR, c.NR, kc, mc, f"{c.why}; KC={kc}") for kc in _KCS]
    return out


def tune_kernel(spec: KernelSpec, max_candidates: int = MAX_CANDIDATES, deadline: float | None = None,
                candidates: Callable | None = None, stage_s: float = 1.5, duel_s: float = 3.0,
                progress=None) -> KernelTuneResult:
    """Tune one kernel (see the module docstring); nothing is stored here."""
    from .backends.cpu.gemm import choose_config

    M = spec.args["M"] if spec.kind == "gemm" else _conv_probe(spec.args).M
    K, N = (spec.args["K"], spec.args["N"]) if spec.kind == "gemm" else \
        (_conv_probe(spec.args).K, spec.args["w_shape"][0])
    default = choose_config(M, K, N)
    res = KernelTuneResult(spec.key, spec.kind, len(spec.nodes), default=default,
                           default_text=describe(spec, default))
    data = _Data(spec)
    runners: dict[tuple, tuple] = {}  # effective -> (cfg, runner)
    times: dict[tuple, float] = {}

    def add(cfgs) -> list[tuple]:
        new = []
        for cfg in cfgs:
            if len(runners) + len(res.rejected) >= max_candidates and runners:
                break
            if deadline is not None and time.monotonic() > deadline and runners:
                break
            try:
                eff = effective(spec, cfg)
            except Exception as exc:  # noqa: BLE001
                res.rejected.append((f"{cfg.MR}x{cfg.NR} KC={cfg.KC} MC={cfg.MC}", f"invalid: {exc}"))
                continue
            if eff in runners or any(r[0] == describe(spec, cfg) for r in res.rejected):
                continue
            try:
                fn = build_runner(spec, cfg, data)
                why = check(fn(), data)
            except Exception as exc:  # noqa: BLE001 - a candidate that cannot build or run loses
                why = f"failed: {type(exc).__name__}: {exc}"
            if why:
                res.rejected.append((describe(spec, cfg), why))
                if progress:
                    progress(f"  rejected {describe(spec, cfg)}: {why}")
                continue
            runners[eff] = (cfg, fn)
            new.append(eff)
        return new

    def timed(effs: list[tuple]) -> None:
        """Time ``effs`` together; ``times`` then holds these (one load, one comparison)."""
        ts = time_interleaved([runners[e][1] for e in effs], 7, stage_s, 41)
        times.clear()
        for e, t in zip(effs, ts):
            times[e] = t
            res.timings[describe(spec, runners[e][0])] = round(t * 1e6, 2)

    d_eff = effective(spec, default)
    add([default])
    if d_eff not in runners:
        res.status = "failed: the default config " + (res.rejected[-1][1] if res.rejected else "")
        return res
    if candidates is not None:
        timed(add(candidates(spec)) + [d_eff])
    else:
        timed(add(_stage1(spec, default)) + [d_eff])
        top = sorted(times, key=times.get)[:2]
        s2 = add(_stage2(spec, [runners[e][0] for e in top]))
        if s2:  # the new ones against the two best tiles and the default
            timed(s2 + [e for e in top if e not in s2] + ([d_eff] if d_eff not in top else []))
    res.tried = len(runners) + len(res.rejected)
    best = min(times, key=times.get)
    if best != d_eff:  # the duel: more rounds, the two alone
        t_def, t_best = time_interleaved([runners[d_eff][1], runners[best][1]], 15, duel_s)
    else:
        t_def = t_best = times[d_eff]
    res.default_us = t_def * 1e6
    if best != d_eff and t_def >= MARGIN * t_best:
        res.chosen, res.chosen_us, res.status = runners[best][0], t_best * 1e6, "tuned"
    else:
        res.chosen, res.chosen_us, res.status = default, t_def * 1e6, "default kept"
        if best != d_eff:
            res.timings["(duel) " + describe(spec, runners[best][0])] = round(t_best * 1e6, 2)
            res.status += f" (best other x{t_def / t_best:.3f}: {describe(spec, runners[best][0])})"
    res.chosen_text = describe(spec, res.chosen)
    return res


def tune_bound(bound, threads: int, cache_dir: str | None = None, budget_s: float | None = None,
               progress: Callable[[str], None] | None = None, force: bool = False,
               max_candidates: int = MAX_CANDIDATES, candidates: Callable | None = None) -> list[KernelTuneResult]:
    """Tune every GEMM / conv kernel of the optimized BoundGraph ``bound`` at ``threads``; store
    each result in the tuning database of ``cache_dir`` (as given to ``jitort.load``) as soon as
    it is known. Kernels already in the database are skipped unless ``force``. With ``budget_s``
    the kernels left when it runs out are skipped (and a kernel running then stops adding
    candidates): the largest total work is tuned first."""
    from . import config

    db = tuning_db.TuningDB(config.cache_root(cache_dir))
    stored = db.entries()
    deadline = None if budget_s is None else time.monotonic() + budget_s
    results = []
    for spec in collect(bound, threads):
        if not force and spec.key in stored:
            e = stored[spec.key]
            chosen = tuning_db.config_from_json(e["config"])
            try:
                default = tuning_db.config_from_json(e.get("default"))
            except ValueError:
                default = None
            r = KernelTuneResult(spec.key, spec.kind, len(spec.nodes), default, chosen,
                                 e.get("default_us", float("nan")), e.get("best_us", float("nan")),
                                 e.get("candidates", 0), status="in database",
                                 default_text=describe(spec, default) if default else "-",
                                 chosen_text=describe(spec, chosen))
            results.append(r)
            continue
        if deadline is not None and time.monotonic() > deadline:
            results.append(KernelTuneResult(spec.key, spec.kind, len(spec.nodes), status="skipped: budget"))
            continue
        if progress:
            progress(f"tuning {spec.key} ({len(spec.nodes)} node(s))")
        t0 = time.monotonic()
        r = tune_kernel(spec, max_candidates, deadline, candidates, progress=progress)
        results.append(r)
        if r.chosen is not None:
            ep = spec.args.get("epilogue")
            db.update({spec.key: tuning_db.make_entry(
                spec.kind, r.chosen, r.default, r.default_us, r.chosen_us, r.tried, len(r.rejected),
                chosen=r.chosen_text, default_effective=r.default_text,
                tuned_with=str(ep) if ep is not None else spec.args.get("activation", ""))})
        if progress:
            progress(f"  {r.status}: {r.chosen_text}, "
                     f"x{r.speedup:.3f} over the default, {r.tried} tried, {len(r.rejected)} rejected, "
                     f"{time.monotonic() - t0:.1f} s")
    return results


def tune_model(path, shapes: dict | None = None, cache_dir: str | None = None, threads: int | None = None,
               budget_s: float | None = None, progress=None, force: bool = False,
               max_candidates: int = MAX_CANDIDATES, seed: int = 0):
    """Load ``path``, bind and optimize it for random inputs of ``shapes`` (symbolic dims not
    given: 1) as the session would, and tune its kernels (``tune_bound``)."""
    from . import load
    from .cli import random_inputs
    from .inputs import to_value
    from .ir.infer import bind
    from .ir.types import type_of
    from .passes.pipeline import optimize

    model = load(path, backend="cpu", num_threads=threads, cache_dir=cache_dir)
    feeds = random_inputs(model, dict(shapes or {}), seed)
    types = {k: type_of(to_value(v, model._declared.get(k))) for k, v in feeds.items()}
    bound = optimize(bind(model.graph, types), model.opt_level).bound
    return tune_bound(bound, model.backend.threads, cache_dir, budget_s, progress, force, max_candidates)


def format_results(results: list[KernelTuneResult], db_path: str | None = None) -> str:
    rows = [("kernel", "nodes", "default", "chosen", "default us", "chosen us", "speedup", "tried",
             "rejected", "status")]
    for r in results:
        rows.append((r.key, str(r.nodes), r.default_text, r.chosen_text,
                     "-" if r.default_us != r.default_us else f"{r.default_us:.1f}",
                     "-" if r.chosen_us != r.chosen_us else f"{r.chosen_us:.1f}",
                     "-" if r.speedup != r.speedup else f"{r.speedup:.3f}x",
                     str(r.tried), str(len(r.rejected)), r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    for r in results:
        for c, why in r.rejected:
            lines.append(f"rejected {r.key} {c}: {why}")
    tuned = [r for r in results if r.status.startswith(("tuned", "default kept")) and r.speedup == r.speedup]
    if tuned:
        total_d = sum(r.default_us * r.nodes for r in tuned)
        total_c = sum(r.chosen_us * r.nodes for r in tuned)
        lines.append(f"{len(tuned)} kernel(s) tuned: {total_d / 1e3:.2f} ms -> {total_c / 1e3:.2f} ms "
                     f"per forward pass over their nodes (x{total_d / total_c:.3f})")
    if db_path:
        lines.append(f"tuning database: {db_path}")
    return "\n".join(lines)
