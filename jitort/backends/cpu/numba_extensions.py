"""Numba's extension discovery, answered from the files it reads.

Before its first compile -- and before loading a function from its disk cache -- Numba runs
``numba.core.entrypoints.init_all()``, once per process: importlib.metadata lists every entry
point of every installed distribution (each one's ``entry_points.txt`` read and parsed; 143
distributions here) to find the ``numba_extensions`` group's ``init`` hooks, and Numba runs them.
That took 20-39 ms of every warm start here, where no distribution has such a hook.

``skip_discovery_if_none()`` reads the same files, the ``entry_points.txt`` of every
``*.dist-info`` / ``*.egg-info`` directory in the directories on ``sys.path``, without parsing
them (~2 ms). When none mentions ``numba_extensions`` it marks the discovery done, which is what
``init_all`` itself would have ended with. Otherwise Numba's ``init_all`` runs now, the hooks too;
so it does when distributions may come from where this does not look: a file (a zip) or an
``.egg`` on ``sys.path``, or a meta-path finder other than the standard path finder that finds
distributions.
"""

from __future__ import annotations

import os
import sys

GROUP = b"numba_extensions"


def skip_discovery_if_none() -> None:
    from numba.core import entrypoints

    if entrypoints._already_initialized:
        return
    if _might_have_extensions():
        entrypoints.init_all()
    else:
        entrypoints._already_initialized = True


def _might_have_extensions() -> bool:
    """False only when no distribution importlib.metadata would find declares the group."""
    import importlib.machinery

    standard = importlib.machinery.PathFinder
    if any(hasattr(f, "find_distributions") and f is not standard for f in sys.meta_path):
        return True
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        where = entry or "."
        if where.lower().endswith(".egg") or os.path.isfile(where):  # an egg's EGG-INFO, a zip: not read here
            return True
        if not os.path.isdir(where):  # missing, or a path-hook name: importlib.metadata finds nothing there
            continue
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            if name.lower().endswith((".dist-info", ".egg-info")) and _declares(os.path.join(where, name)):
                return True
    return False


def _declares(meta_dir: str) -> bool:
    try:
        with open(os.path.join(meta_dir, "entry_points.txt"), "rb") as f:
            return GROUP in f.read()
    except FileNotFoundError:
        return False
    except OSError:  # unreadable or a file: let importlib.metadata decide
        return os.path.isdir(meta_dir)
