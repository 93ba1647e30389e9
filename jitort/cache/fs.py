"""File-system primitives of the cache: atomic writes, per-key locks, a directory check.

    atomic_write(path, data)          # temp file in the same directory + fsync + rename
    with file_lock(path):             # an exclusive fcntl lock; released if the process dies
        ...
    fd = acquire_lock(path); ...; release_lock(fd)   # the same, released from any thread
    ensure_private_dir(path)          # create 0700, refuse a dir other users can write to

A cache directory holds executable code (generated kernel modules, pickled plans), so one that
another user can write to is refused: anything they put there would run in our process.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time

from ..errors import JitortError


class CacheDirError(JitortError):
    """The cache directory cannot be used safely."""


def atomic_write(path: str, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one (never a
    part: the rename is atomic). No fsync: a process that dies mid-write leaves only a temp file;
    a power loss may lose the entry, which the integrity checks then catch and rebuild."""
    if isinstance(data, str):
        data = data.encode()
    d = os.path.dirname(path) or "."
    os.makedirs(d, mode=0o700, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def acquire_lock(path: str, timeout: float | None = None) -> int:
    """An exclusive lock on ``path`` (created if missing), as an open file descriptor: close it
    (:func:`release_lock`, from any thread) to release. Waits ``timeout`` seconds at most (then
    TimeoutError), else as long as the holder needs (a compile). The OS drops the lock if the
    holder dies, so a crashed compile never blocks the others for good."""
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise TimeoutError(f"could not lock {path} within {timeout} s") from exc
                time.sleep(0.02)
    except BaseException:
        os.close(fd)
        raise


def release_lock(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def file_lock(path: str, timeout: float | None = None):
    """``with file_lock(path):`` -- :func:`acquire_lock` for the block."""
    fd = acquire_lock(path, timeout)
    try:
        yield
    finally:
        release_lock(fd)


def ensure_private_dir(path: str) -> str:
    """Create ``path`` (mode 0700) if missing; refuse it when another user owns it or may write
    to it (group- or world-writable). Returns the absolute path."""
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise CacheDirError(f"cannot create the cache directory {path}: {exc.strerror}") from exc
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirError(f"cache path {path} is not a directory")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CacheDirError(f"cache directory {path} belongs to uid {st.st_uid}, not to this user "
                            f"(uid {os.getuid()}); it holds executable code, so jitort will not use it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "everyone" if st.st_mode & stat.S_IWOTH else "its group"
        raise CacheDirError(f"cache directory {path} is writable by {who} (mode "
                            f"{stat.S_IMODE(st.st_mode):04o}); it holds executable code, so jitort "
                            f"refuses it: run `chmod go-w {path}` or choose another cache_dir")
    return path


def tree_size(path: str) -> int:
    """Bytes of the regular files under ``path``."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total
