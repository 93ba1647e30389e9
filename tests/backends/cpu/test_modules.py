"""Generated kernel modules: written once, imported by name, a damaged file rewritten, every
lookup recorded for the cache entry's metadata."""

from __future__ import annotations

import sys

import pytest

from jitort.backends.cpu.modules import load_module, note, recording

SRC = "def f(x):\n    return x * 3\n"


def test_write_import_and_reuse(tmp_path):
    name = "jitort_test_mod_a1"
    sys.modules.pop(name, None)
    with recording() as names:
        mod = load_module(SRC, name, str(tmp_path))
        assert mod.f(2) == 6 and sys.modules[name] is mod
        assert load_module(SRC, name, str(tmp_path)) is mod  # already imported: the same module
        note("jitort_other")
    assert names == [name, "jitort_other"]
    assert (tmp_path / f"{name}.py").read_text() == SRC
    sys.modules.pop(name, None)


def test_damaged_module_file_is_rewritten(tmp_path):
    name = "jitort_test_mod_b2"
    sys.modules.pop(name, None)
    (tmp_path / f"{name}.py").write_text("def f(x):\n    return x * 4  # tampered\n")
    with pytest.warns(RuntimeWarning, match="rewritten"):
        mod = load_module(SRC, name, str(tmp_path))
    assert mod.f(2) == 6 and (tmp_path / f"{name}.py").read_text() == SRC
    sys.modules.pop(name, None)


def test_in_memory_module_is_not_registered():
    mod = load_module(SRC, "jitort_test_mod_c3", None)
    assert mod.f(1) == 3 and "jitort_test_mod_c3" not in sys.modules


def test_nested_recordings_pass_names_up():
    with recording() as outer:
        note("a")
        with recording() as inner:
            note("b")
        assert inner == ["b"]
    assert outer == ["a", "b"]
