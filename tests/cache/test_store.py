"""The entry store: round trip, integrity checks, keys and explain, pruning, the directory check."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest

from jitort import config
from jitort.cache import key as keymod
from jitort.cache.fs import CacheDirError, atomic_write, ensure_private_dir
from jitort.cache.key import explain, make_key
from jitort.cache.store import STATS, CacheStore, parse_size
from jitort.ir.types import TensorType
from jitort.session import Signature


def sig(shape=(1, 128), dtype=np.int64, name="input_ids"):
    return Signature(((name, TensorType(np.dtype(dtype), tuple(shape))),))


def key(**kw):
    args = dict(model="sha256:abc", signature=sig(), backend="cpu", options={"opt_level": 3})
    args.update(kw)
    return make_key(**args)


@pytest.fixture
def store(tmp_path):
    return CacheStore(config.cache_root(str(tmp_path / "c")))


def obj():
    rng = np.random.default_rng(0)
    return {"big": rng.standard_normal((300, 70)).astype(np.float32),
            "small": np.arange(5), "alias": None, "text": "hello"}


def saved(store, k=None):
    k = k or key()
    o = obj()
    o["alias"] = o["big"]
    store.save(k, o, {"what": "test"})
    return k, o


def test_round_trip_maps_big_arrays(store):
    k, o = saved(store)
    e = store.load(k)
    assert e is not None and e.meta["info"] == {"what": "test"}
    got = e.obj
    np.testing.assert_array_equal(got["big"], o["big"])
    np.testing.assert_array_equal(got["small"], o["small"])
    assert type(got["big"]) is np.ndarray and got["big"].flags.writeable
    assert got["alias"] is got["big"]  # one file for one array, identity kept
    got["big"][0, 0] = 123.0  # copy-on-write: the file keeps its bytes
    np.testing.assert_array_equal(store.load(k).obj["big"], o["big"])
    assert oct(os.stat(e.path).st_mode & 0o777) == "0o700"


def test_absent_entry_is_none(store):
    assert store.load(key()) is None


def _entry_file(store, k, rel):
    return os.path.join(store.entry_dir(k.digest), rel)


def _array_file(store, k):
    meta = json.load(open(_entry_file(store, k, "meta.json")))
    return _entry_file(store, k, next(f for f in meta["files"] if f.startswith("arrays/")))


@pytest.mark.parametrize("damage", ["truncate", "flip_array", "flip_pickle", "delete_array",
                                    "meta_version", "meta_parts", "meta_garbage"])
def test_damaged_entry_is_discarded_with_a_warning(store, damage):
    k, _ = saved(store)
    assert store.load(k) is not None  # verified once: later loads trust unchanged files...
    if damage == "truncate":
        path = _array_file(store, k)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 7)
    elif damage in ("flip_array", "flip_pickle"):
        path = _array_file(store, k) if damage == "flip_array" else _entry_file(store, k, "graph.pkl")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x10]))
    elif damage == "delete_array":
        os.unlink(_array_file(store, k))
    else:
        path = _entry_file(store, k, "meta.json")
        meta = json.load(open(path))
        if damage == "meta_version":  # an older jitort's entry, checksum recomputed
            meta["format"] = "jitort-variant-0"
        elif damage == "meta_parts":  # another variant's metadata under this key
            meta["parts"]["signature"] = "input_ids:int64[2,128]"
        from jitort.cache.store import _meta_checksum
        meta["checksum"] = _meta_checksum(meta)
        text = json.dumps(meta) if damage != "meta_garbage" else "{not json"
        with open(path, "w") as f:  # ...but a write changes the stat signature
            f.write(text)
    before = STATS.corrupt
    with pytest.warns(RuntimeWarning, match="unusable"):
        assert store.load(k) is None
    assert STATS.corrupt == before + 1
    assert not os.path.exists(store.entry_dir(k.digest))  # deleted, so the next save rebuilds it
    saved(store, k)
    assert store.load(k) is not None


def test_edited_meta_without_checksum_is_refused(store):
    k, _ = saved(store)
    path = _entry_file(store, k, "meta.json")
    meta = json.load(open(path))
    meta["parts"]["versions"] = "numba=0.1"
    atomic_write(path, json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="checksum"):
        assert store.load(k) is None


def test_key_parts_and_explain(monkeypatch):
    base = key()
    assert base.digest == key().digest and len(base.digest) == 64
    changes = {
        "signature": key(signature=sig((1, 129))),
        "options": key(options={"opt_level": 2}),
        "model": key(model="sha256:abd"),
        "backend": key(backend="reference"),
    }
    dtype = key(signature=sig(dtype=np.int32))
    assert explain(base.parts, dtype.parts)[0][0] == "signature"
    for part, other in changes.items():
        assert other.digest != base.digest
        diff = explain(base.parts, other.parts)
        assert [d[0] for d in diff] == [part], diff
    keymod.jitort_text.cache_clear()
    monkeypatch.setattr(keymod, "source_hash", lambda: "f" * 64)
    edited = key()
    keymod.jitort_text.cache_clear()
    assert [d[0] for d in explain(base.parts, edited.parts)] == ["jitort"]


def test_source_hash_covers_every_source_file(tmp_path):
    h = keymod.source_hash()
    assert len(h) == 64 and h == keymod.source_hash()
    pkg = tmp_path / "pkg"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "k.py.j2").write_text("{{ body }}\n")
    base = keymod.tree_hash([str(pkg)])
    (pkg / "sub" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "notes.txt").write_text("not source")
    assert keymod.tree_hash([str(pkg)]) == base  # bytecode and other files do not count
    (pkg / "sub" / "k.py.j2").write_text("{{ body }} \n")
    edited = keymod.tree_hash([str(pkg)])
    assert edited != base
    (pkg / "sub" / "k.py.j2").rename(pkg / "k.py.j2")
    assert keymod.tree_hash([str(pkg)]) != edited  # a move counts too


def test_source_hash_is_remembered_until_a_file_or_directory_changes(tmp_path, monkeypatch):
    pkg, memo = tmp_path / "pkg", str(tmp_path / "memo.json")
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    full = lambda: keymod.tree_hash([str(pkg)])  # noqa: E731  (never remembered)
    base = keymod.tree_hash([str(pkg)], memo=memo)
    assert base == full() and not os.path.exists(memo)  # files this young are not remembered
    monkeypatch.setattr(keymod, "_SETTLED_S", 0.0)
    assert keymod.tree_hash([str(pkg)], memo=memo) == base and os.path.exists(memo)
    with open(memo) as f:
        rec = json.load(f)
    rec["digest"] = "a" * 64  # proves a later call answers from the memo, reading no file
    with open(memo, "w") as f:
        json.dump(rec, f)
    assert keymod.tree_hash([str(pkg)], memo=memo) == "a" * 64
    assert keymod.tree_hash([str(tmp_path)], memo=memo) == keymod.tree_hash([str(tmp_path)])  # other roots
    keymod.tree_hash([str(pkg)], memo=memo)
    tick = lambda: time.sleep(0.05)  # noqa: E731  (past the file system's timestamp resolution)
    tick()
    st = os.stat(pkg / "a.py")  # an edit of the same size with its mtime put back: ctime moves
    (pkg / "a.py").write_text("x = 3\n")
    os.utime(pkg / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = keymod.tree_hash([str(pkg)], memo=memo)
    assert edited == full() != base
    tick()
    (pkg / "sub" / "c.py").write_text("")  # a new file: its directory's mtime moves
    added = keymod.tree_hash([str(pkg)], memo=memo)
    assert added == full() != edited
    tick()
    (pkg / "sub" / "c.py").rename(pkg / "sub" / "d.py")
    assert keymod.tree_hash([str(pkg)], memo=memo) == full() != added
    with open(memo, "w") as f:
        f.write("{not json")
    assert keymod.tree_hash([str(pkg)], memo=memo) == full()  # a damaged memo: hashed again


def test_prune_drops_least_recently_used(store):
    keys = [key(signature=sig((1, n))) for n in (1, 2, 3)]
    for i, k in enumerate(keys):
        saved(store, k)
        os.utime(os.path.join(store.entry_dir(k.digest), "used"), (1000 + i, 1000 + i))
    store.load(keys[0])  # now the most recent
    one = store.entries()[0]["size"]
    removed = store.prune(max_size=2 * one + one // 2)
    assert removed == [keys[1].digest]
    assert {e["key"] for e in store.entries()} == {keys[0].digest, keys[2].digest}
    assert store.prune(max_size=0) and store.entries() == []


def test_size_cap_prunes_on_save(tmp_path):
    store = CacheStore(config.cache_root(str(tmp_path / "c")), max_size=1)
    k1, _ = saved(store, key(signature=sig((1, 1))))
    k2, _ = saved(store, key(signature=sig((1, 2))))
    assert [e["key"] for e in store.entries()] == [k2.digest]  # the new one is kept


def test_parse_size():
    assert parse_size("2G") == 2 << 30 and parse_size("500M") == 500 << 20 and parse_size("1024") == 1024
    with pytest.raises(ValueError, match="500M"):
        parse_size("lots")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_dir_writable_by_others_is_refused(tmp_path, mode):
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, mode)
    with pytest.raises(CacheDirError, match="writable by"):
        ensure_private_dir(str(d))
    import jitort
    from tests.helpers import add_relu_model
    with pytest.raises(CacheDirError, match="chmod go-w"):
        jitort.load(add_relu_model().SerializeToString(), cache_dir=str(d))


def test_new_dir_is_private(tmp_path):
    d = ensure_private_dir(str(tmp_path / "a" / "b"))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "f.json"
    atomic_write(str(p), "one")
    atomic_write(str(p), b"two")
    assert p.read_text() == "two" and os.listdir(tmp_path) == ["f.json"]
