"""The persistent cache of compiled variants: key (key.py), store (store.py), file-system
primitives (fs.py), the machine (device.py)."""


def wait_for_saves(timeout: float | None = None) -> bool:
    """Wait until the compiled variants this process is writing to the disk cache are there
    (they are written in the background after a first call; the interpreter also waits at exit)."""
    from .variants import wait_for_saves as _wait

    return _wait(timeout)
