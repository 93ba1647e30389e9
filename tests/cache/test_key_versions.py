"""The versions part of the cache key: read from .dist-info names, the same as importlib.metadata."""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

from jitort.cache.key import installed_version, versions_text


@pytest.mark.parametrize("dist", ["numpy", "numba", "llvmlite", "onnx", "ml_dtypes", "triton", "torch", "yaml"])
def test_installed_version_agrees_with_importlib_metadata(dist):
    try:
        want = metadata.version(dist)
    except metadata.PackageNotFoundError:
        want = None
    assert installed_version(dist) == want


def test_a_package_that_is_not_there_has_no_version():
    assert installed_version("jitort_no_such_package_xyz") is None


def _fake_site(tmp_path, monkeypatch, dist_infos):
    pkg = tmp_path / "fakepkg_q"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in dist_infos:
        d = tmp_path / name
        d.mkdir()
        (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg_q\nVersion: {name.split('-')[1][:-10]}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fakepkg_q", None)


def test_the_dist_info_next_to_the_package_names_the_version(tmp_path, monkeypatch):
    _fake_site(tmp_path, monkeypatch, ["FakePkg.Q-1.2.3.dist-info"])  # normalized name match
    assert installed_version("fakepkg_q") == "1.2.3"


def test_two_dist_infos_fall_back_to_importlib_metadata(tmp_path, monkeypatch):
    _fake_site(tmp_path, monkeypatch, ["fakepkg_q-1.0.dist-info", "fakepkg_q-2.0.dist-info"])
    assert installed_version("fakepkg_q") == metadata.version("fakepkg_q")


def test_versions_text_names_the_core_packages():
    text = versions_text()
    for dist in ("numpy", "numba", "llvmlite", "onnx"):
        assert f"{dist}={metadata.version(dist)}" in text.split()
