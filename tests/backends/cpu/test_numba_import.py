"""numba_import (Numba imported without PyYAML, SciPy or importlib.metadata) and numba_extensions
(Numba's extension discovery skipped when no distribution declares an extension): each in a fresh
process, against what Numba does on its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest


def _run(code: str, cwd=None, env=None) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300, cwd=cwd, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def test_numba_is_imported_without_pyyaml_and_reads_a_config_file_later(tmp_path):
    pytest.importorskip("yaml")
    out = _run("""
        import os, sys
        import jitort.backends.cpu  # noqa: F401  (imports Numba)
        import numba.core.config as config
        assert "yaml" not in sys.modules, "PyYAML was imported with Numba"
        assert config._HAVE_YAML
        import yaml                                    # a later import gets PyYAML itself
        assert type(yaml).__name__ == "module" and hasattr(yaml, "safe_load") and yaml.__file__
        assert config.yaml.safe_load("a: 1") == {"a": 1}   # the stand-in answers from it
        with open(".numba_config.yaml", "w") as f:     # read at a reload, as Numba does
            f.write("developer_mode: 1\\n")
        config.reload_config()
        print(config.DEVELOPER_MODE)
    """, cwd=tmp_path)
    assert out.splitlines()[-1] == "1"


def test_a_config_file_present_at_import_is_read_by_numba_itself(tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / ".numba_config.yaml").write_text("developer_mode: 1\n")
    out = _run("""
        import sys
        import jitort.backends.cpu  # noqa: F401
        import numba
        print("yaml" in sys.modules, numba.config.DEVELOPER_MODE)
    """, cwd=tmp_path)
    assert out.splitlines()[-1] == "True 1"


def test_numba_is_imported_without_scipy_and_checks_the_installed_version():
    pytest.importorskip("scipy")
    out = _run("""
        import sys
        import jitort.backends.cpu  # noqa: F401  (imports Numba)
        assert "scipy" not in sys.modules, "SciPy was imported with Numba"
        from jitort.cache.key import installed_version
        import scipy                                   # a later import gets SciPy itself
        import scipy.linalg  # noqa: F401              (a package, submodules and all)
        assert scipy.__file__ and scipy.__version__ == installed_version("scipy")
        print("ok")
    """)
    assert out.splitlines()[-1] == "ok"
    # the version Numba checks is the stand-in's: one below 1.0 is refused as Numba refuses it
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import jitort.cache.key as key
        key.installed_version = lambda dist: "0.19.1" if dist == "scipy" else None
        import jitort.backends.cpu
    """)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Numba requires SciPy version 1.0 or greater. Got SciPy 0.19.1" in r.stderr


def test_numba_is_imported_without_importlib_metadata_which_a_discovery_still_gets():
    out = _run("""
        import sys
        import jitort.backends.cpu  # noqa: F401  (imports Numba)
        assert "importlib.metadata" not in sys.modules, "importlib.metadata was imported with Numba"
        from numba.core import entrypoints
        entrypoints._already_initialized = False
        entrypoints.init_all()                         # Numba's discovery, through the stand-in
        import importlib.metadata as md                # a later import gets the module itself
        assert md.__file__ and md.entry_points is entrypoints.importlib_metadata.entry_points
        print(md.version("numba") == __import__("numba").__version__)
    """)
    assert out.splitlines()[-1] == "True"


def test_without_extensions_the_discovery_is_skipped_with_numba_s_own_answer():
    out = _run("""
        import importlib.metadata as md
        from numba.core import entrypoints
        calls = []
        real = md.entry_points
        md.entry_points = lambda *a, **k: calls.append(1) or real(*a, **k)
        from jitort.backends.cpu.numba_extensions import _might_have_extensions
        from jitort.backends.cpu import backend  # noqa: F401  (prepare() runs)
        assert entrypoints._already_initialized
        declared = list(real().select(group="numba_extensions"))
        print(len(calls), _might_have_extensions(), bool(declared))
    """)
    assert out.splitlines()[-1] == "0 False False"  # this environment declares none


def test_a_declared_extension_hook_still_runs(tmp_path):
    dist = tmp_path / "numba_ext_probe-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: numba-ext-probe\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[numba_extensions]\ninit = numba_ext_probe:init\n")
    (tmp_path / "numba_ext_probe.py").write_text("RAN = []\n\ndef init():\n    RAN.append(1)\n")
    out = _run("""
        import sys
        from jitort.backends.cpu import backend  # noqa: F401  (prepare() runs Numba's discovery)
        import numba_ext_probe
        print(numba_ext_probe.RAN)
    """, env={"PYTHONPATH": str(tmp_path)})
    assert out.splitlines()[-1] == "[1]"


@pytest.mark.parametrize("where", ["zip", "egg"])
def test_distributions_from_where_the_scan_does_not_look_run_numba_s_discovery(tmp_path, where):
    path = tmp_path / ("deps.zip" if where == "zip" else "deps.egg")
    if where == "zip":
        path.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip archive
    else:
        path.mkdir()
    out = _run(f"""
        import sys
        sys.path.append({str(path)!r})
        from jitort.backends.cpu.numba_extensions import _might_have_extensions
        print(_might_have_extensions())
    """)
    assert out.splitlines()[-1] == "True"
