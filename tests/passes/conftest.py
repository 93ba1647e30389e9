"""The optimizer's tests compare optimized graphs with unoptimized ones on the reference backend,
the oracle: they test the passes, not the kernels (the CPU backend's own tests, including a fuzz
run through it, live in tests/backends/cpu/)."""

import pytest


@pytest.fixture(autouse=True)
def _reference_backend(monkeypatch):
    from jitort import config

    monkeypatch.setattr(config, "BACKEND", "reference")
