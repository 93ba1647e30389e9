"""Ship a warmed cache as one file: ``jitort cache export FILE`` / ``jitort cache import FILE``.

The archive is a gzip'd tar of the cache's ``entries/``, ``kernels/``, ``models/`` and
``tuning/`` (locks, temp files and the byte-compiled kernel modules stay behind: a ``.pyc`` is
rebuilt from its source where it is used, and one in an archive is not imported). Import is strict, because a cache holds code
that will run: every member must be a regular file or a directory whose name stays inside one of
those four folders (no absolute paths, no ``..``, no links, devices or fifos); every entry must
pass the same integrity checks a load does; anything wrong refuses the whole archive and leaves
the cache untouched. Only import archives you would run code from.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile

from ..errors import JitortError
from .store import CorruptEntry, read_meta, remove_tree, verify_files

TOP = ("entries", "kernels", "models", "tuning")


class ArchiveError(JitortError):
    """The archive cannot be imported (the message says which member and why)."""


def export_cache(root: str, path: str) -> int:
    """Write the cache under ``root`` to ``path`` (.tar.gz); returns the number of files."""
    n = 0
    tmp = f"{path}.{os.getpid()}.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for top in TOP:
            base = os.path.join(root, top)
            for d, dirs, files in os.walk(base):
                dirs[:] = sorted(x for x in dirs if not x.endswith(".tmp"))
                for f in sorted(files):
                    full = os.path.join(d, f)
                    if f.endswith((".tmp", ".lock", ".pyc")) or os.path.islink(full):
                        continue
                    tar.add(full, arcname=os.path.relpath(full, root), recursive=False)
                    n += 1
    os.replace(tmp, path)
    return n


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member {name!r} has an absolute path: refused")
    if ".." in parts:
        raise ArchiveError(f"archive member {name!r} escapes the cache directory ('..'): refused")
    if not (m.isfile() or m.isdir()):
        kind = "a link" if (m.issym() or m.islnk()) else "not a regular file"
        raise ArchiveError(f"archive member {name!r} is {kind}: refused")
    if parts[0] not in TOP:
        raise ArchiveError(f"archive member {name!r} is outside {', '.join(TOP)}: refused")


def import_cache(root: str, path: str) -> dict:
    """Add the archive's entries, kernels, model records and tuning databases to the cache under
    ``root`` (existing files are kept). Returns counts: {"entries": in the archive, all
    validated; "new_entries": added; "files": other files added}."""
    try:
        tar = tarfile.open(path, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ArchiveError(f"{path} is not a readable cache archive: {exc}") from exc
    with tar:
        members = tar.getmembers()
        for m in members:
            _check_member(m)
        stage = tempfile.mkdtemp(prefix=".import.", dir=root)
        try:
            for m in members:  # members are checked: plain files/dirs under TOP only
                if m.name.endswith(".pyc"):
                    continue
                if m.isdir():
                    os.makedirs(os.path.join(stage, m.name), mode=0o700, exist_ok=True)
                    continue
                dst = os.path.join(stage, m.name)
                os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
                with tar.extractfile(m) as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.chmod(dst, 0o600)
                os.utime(dst, (m.mtime, m.mtime))  # Numba's cache index checks source stamps
            entries = _validate_entries(stage)
            new_entries, files = _merge(stage, root)
        finally:
            remove_tree(stage)
    return {"entries": entries, "new_entries": new_entries, "files": files}


def _validate_entries(stage: str) -> int:
    base = os.path.join(stage, "entries")
    n = 0
    for shard in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        sd = os.path.join(base, shard)
        for key in sorted(os.listdir(sd)) if os.path.isdir(sd) else ():
            d = os.path.join(sd, key)
            try:
                if shard != key[:2]:
                    raise CorruptEntry(f"it is filed under {shard}/")
                meta = read_meta(d)
                os.path.exists(os.path.join(d, "verified.json")) and os.unlink(os.path.join(d, "verified.json"))
                verify_files(d, meta)
                extra = _extra_files(d, meta)
                if extra:
                    raise CorruptEntry(f"files meta.json does not list: {extra[:3]}")
            except CorruptEntry as exc:
                raise ArchiveError(f"archive entry {key[:16]} fails validation: {exc}; nothing imported") from None
            n += 1
    return n


def _extra_files(d: str, meta: dict) -> list[str]:
    allowed = set(meta["files"]) | {"meta.json", "verified.json", "used"}
    out = []
    for root, _dirs, files in os.walk(d):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), d)
            if rel not in allowed:
                out.append(rel)
    return out


def _merge(stage: str, root: str) -> tuple[int, int]:
    """Move staged files into the cache; an entry moves whole (atomic rename), files one by one;
    nothing already there is replaced. Returns (entries added, other files added)."""
    n = n_entries = 0
    for top in TOP:
        base = os.path.join(stage, top)
        if not os.path.isdir(base):
            continue
        if top == "entries":
            for shard in os.listdir(base):
                for key in os.listdir(os.path.join(base, shard)):
                    dst = os.path.join(root, "entries", shard, key)
                    if os.path.exists(dst):
                        continue
                    os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
                    os.rename(os.path.join(base, shard, key), dst)
                    open(os.path.join(dst, "used"), "ab").close()
                    n_entries += 1
            continue
        for d, _dirs, files in os.walk(base):
            for f in files:
                src = os.path.join(d, f)
                dst = os.path.join(root, os.path.relpath(src, stage))
                if os.path.exists(dst):
                    continue
                os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
                os.replace(src, dst)
                n += 1
    return n_entries, n
