"""What a compiled kernel depends on about the machine: the CPU as LLVM sees it.

    cpu_device()  -> {"arch": "x86_64", "cpu": "icelake-server", "features": "+avx512f,...", ...}
    device_tag()  -> "cpu-icelake-server-1a2b3c4d"   (a file-name-safe id for tuning databases)

Numba compiles for the host CPU (its name and feature string), so a kernel cached on an AVX-512
machine must not be loaded on an AVX2 one; the cache key and the tuning database carry this.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import re


@functools.lru_cache(maxsize=None)
def cpu_device() -> dict:
    import llvmlite.binding as llb

    feats = llb.get_host_cpu_features()
    enabled = ",".join(sorted(k for k, v in feats.items() if v))
    return {"kind": "cpu", "arch": platform.machine(), "cpu": llb.get_host_cpu_name(),
            "features": enabled}


@functools.lru_cache(maxsize=None)
def device_tag() -> str:
    d = cpu_device()
    h = hashlib.sha256(repr(sorted(d.items())).encode()).hexdigest()[:8]
    return f"cpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', d['cpu'])}-{h}"
