"""`jitort warmup` and `jitort cache ...`: list, info, explain, prune, clear, export/import (and
the archive checks: '..' paths, links, absolute paths, damaged entries are refused)."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest

import jitort
from jitort.cli import main
from tests.cache.test_processes import make_model


@pytest.fixture
def warmed(tmp_path, capsys):
    model = make_model(tmp_path / "m.onnx")
    cache = str(tmp_path / "cache")
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps([{"x": "2x48"}, {"x": [3, 48]}]))
    assert main(["warmup", model, "--shapes-from", str(shapes), "--cache-dir", cache, "--threads", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("compiled") == 2, out
    return model, cache


def keys(cache):
    from jitort.cache.store import CacheStore

    return sorted(e["key"] for e in CacheStore(cache).entries())


def test_warmup_then_load_is_warm(warmed, capsys):
    model, cache = warmed
    assert len(keys(cache)) == 2
    assert main(["warmup", model, "--shape", "x=2x48", "--cache-dir", cache, "--threads", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("cached")
    m = jitort.load(model, cache_dir=cache, num_threads=1)
    m(x=np.ones((3, 48), np.float32))
    assert m.stats.cache_hits == 1 and m.stats.optimized == 0


def test_warmup_python_api_and_errors(tmp_path):
    model = make_model(tmp_path / "m.onnx")
    res = jitort.warmup(model, [{"x": (4, 48)}], cache_dir=str(tmp_path / "c"), num_threads=1)
    assert [r.status for r in res] == ["compiled"] and len(res[0].key) == 64
    with pytest.raises(jitort.JitortError, match="does not have"):
        jitort.warmup(model, [{"y": (4, 48)}], cache_dir=str(tmp_path / "c"))
    with pytest.raises(jitort.JitortError, match="cuda"):
        jitort.warmup(model, [{"x": (4, 48)}], device="cuda")
    with pytest.raises(jitort.JitortError, match="list of ints"):
        jitort.warmup(model, [{"x": "4xq"}])


def test_list_info_explain(warmed, capsys):
    model, cache = warmed
    k1, k2 = keys(cache)
    assert main(["cache", "--cache-dir", cache, "list"]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and "x:float32[2,48]" in out and "x:float32[3,48]" in out
    assert main(["cache", "--cache-dir", cache, "info", k1[:10]]) == 0
    out = capsys.readouterr().out
    assert "ok (checksums verified)" in out and "signature" in out and k1 in out
    assert main(["cache", "--cache-dir", cache, "explain", k1[:10]]) == 0
    out = capsys.readouterr().out
    for part in ("model", "signature", "device", "options", "jitort", "versions"):
        assert part in out
    assert main(["cache", "--cache-dir", cache, "explain", k1[:10], k2[:10]]) == 0
    out = capsys.readouterr().out
    assert "differ in 1 part(s): signature" in out
    assert main(["cache", "--cache-dir", cache, "explain", k1[:10], "--model", model, "--shape", "x=2x48",
                 "--threads", "1"]) in (0,)
    out = capsys.readouterr().out
    sig = [e for e in (k1, k2) if "2,48" in open(os.path.join(cache, "entries", e[:2], e, "meta.json")).read()]
    if sig[0] == k1:
        assert "same key" in out, out
    else:
        assert "signature" in out
    assert main(["cache", "--cache-dir", cache, "info", "zzzz"]) == 1
    assert "no cache entry" in capsys.readouterr().err


def test_info_reports_corruption(warmed, capsys):
    _model, cache = warmed
    k = keys(cache)[0]
    d = os.path.join(cache, "entries", k[:2], k)
    with open(os.path.join(d, "graph.pkl"), "ab") as f:
        f.write(b"x")
    assert main(["cache", "--cache-dir", cache, "info", k[:10]]) == 0
    assert "CORRUPT" in capsys.readouterr().out


def test_prune_and_clear(warmed, capsys):
    _model, cache = warmed
    assert main(["cache", "--cache-dir", cache, "prune", "--max-size", "1"]) == 0
    assert "removed 2" in capsys.readouterr().out and keys(cache) == []
    assert main(["cache", "--cache-dir", cache, "prune", "--max-size", "lots"]) == 1
    assert main(["cache", "--cache-dir", cache, "clear"]) == 0
    assert not os.path.exists(os.path.join(cache, "kernels"))


def test_export_import_round_trip(warmed, tmp_path, capsys):
    model, cache = warmed
    archive = str(tmp_path / "warm.tar.gz")
    assert main(["cache", "--cache-dir", cache, "export", archive]) == 0
    fresh = str(tmp_path / "fresh")
    assert main(["cache", "--cache-dir", fresh, "import", archive]) == 0
    assert "imported 2 entries" in capsys.readouterr().out
    assert keys(fresh) == keys(cache)
    m = jitort.load(model, cache_dir=fresh, num_threads=1)
    y = m(x=np.ones((2, 48), np.float32))[0]
    assert m.stats.cache_hits == 1 and m.stats.optimized == 0
    ref = jitort.load(model, backend="reference")(x=np.ones((2, 48), np.float32))[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    assert main(["cache", "--cache-dir", fresh, "import", archive]) == 0  # again: nothing new
    assert "imported 0 entries" in capsys.readouterr().out


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("member,why", [
    (_file("entries/ab/../../../evil.py"), "escapes"),
    (_file("../evil.py"), "escapes"),
    (_file("/tmp/evil.py"), "absolute"),
    (_link("kernels/jitort_gemm_x.py", "/etc/passwd"), "link"),
    (_link("kernels/hard.py", "kernels/a.py", tarfile.LNKTYPE), "link"),
    (_file("bin/evil.py"), "outside"),
])
def test_crafted_archive_is_refused(tmp_path, capsys, member, why):
    archive = str(tmp_path / "bad.tar.gz")
    _tar(archive, [_file("kernels/a.py", b"x = 1\n"), member])
    cache = str(tmp_path / "c")
    assert main(["cache", "--cache-dir", cache, "import", archive]) == 1
    assert why in capsys.readouterr().err
    assert not os.path.exists(os.path.join(cache, "kernels", "a.py"))  # nothing imported
    assert not os.path.exists(str(tmp_path / "evil.py"))


def test_archive_with_damaged_entry_is_refused(warmed, tmp_path, capsys):
    _model, cache = warmed
    k = keys(cache)[0]
    with open(os.path.join(cache, "entries", k[:2], k, "graph.pkl"), "ab") as f:
        f.write(b"\0")
    archive = str(tmp_path / "a.tar.gz")
    assert main(["cache", "--cache-dir", cache, "export", archive]) == 0
    fresh = str(tmp_path / "fresh")
    assert main(["cache", "--cache-dir", fresh, "import", archive]) == 1
    assert "fails validation" in capsys.readouterr().err and keys(fresh) == []


def test_not_an_archive(tmp_path, capsys):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"not a tar")
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "import", str(bad)]) == 1
    assert "not a readable cache archive" in capsys.readouterr().err


def test_world_writable_cache_dir_refused_by_cli(tmp_path, capsys):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)
    assert main(["cache", "--cache-dir", str(d), "list"]) == 1
    assert "writable by everyone" in capsys.readouterr().err
