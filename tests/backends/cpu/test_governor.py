"""The thread governor: a multi-threaded plan drops to 1 thread when that is faster and probes
its full thread count again later; results do not depend on the thread count used."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import jitort
from jitort.backends.cpu import governor as gov
from jitort.backends.cpu.governor import ThreadGovernor


def feed(g, times: dict, n: int, clock: list):
    """``n`` calls whose duration depends on the thread count chosen; returns the counts used."""
    used = []
    for _ in range(n):
        k = g.choose()
        used.append(k)
        clock[0] += times[k]  # the call runs, then it is recorded
        g.record(k, times[k])
    return used


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(gov.time, "monotonic", lambda: now[0])
    return now


def test_learns_then_keeps_the_faster(clock):
    g = ThreadGovernor(2)
    used = feed(g, {2: 0.010, 1: 0.018}, 2 * gov._LEARN, clock)
    assert used == [2, 1] * gov._LEARN and g.mode == 2
    assert feed(g, {2: 0.010, 1: 0.018}, 20, clock) == [2] * 20


def test_contention_drops_to_one_thread_and_recovers(clock):
    g = ThreadGovernor(2)
    feed(g, {2: 0.010, 1: 0.018}, 2 * gov._LEARN, clock)
    used = feed(g, {2: 0.200, 1: 0.018}, 4, clock)  # a busy machine: every join waits
    assert used[:2] == [2, 2] and g.mode == 1 and used[2:] == [1, 1]
    # while busy: probes back off (0.1 s, 0.2 s, 0.4 s ... up to 2 s) and lose
    used = feed(g, {2: 0.200, 1: 0.018}, 300, clock)
    probes = used.count(2)
    assert 2 <= probes <= 12 and g.mode == 1 and g.backoff == gov._PROBE_MAX
    # quiet again: the next probe wins and the plan goes back to 2 threads
    clock[0] += 5
    used = feed(g, {2: 0.010, 1: 0.018}, 5, clock)
    assert used[0] == 2 and g.mode == 2 and used == [2] * 5 and g.backoff is None


def test_a_short_model_recovers_within_tens_of_calls(clock):
    """The first wait before a probe is 32 calls of the best 1-thread time (0.3 ms here: ~10 ms),
    not a fixed 0.1 s (330 calls); sustained contention still backs the probes off."""
    g = ThreadGovernor(2)
    quiet, busy = {2: 0.00015, 1: 0.0003}, {2: 0.004, 1: 0.0003}
    feed(g, quiet, 2 * gov._LEARN, clock)
    assert g.mode == 2
    feed(g, busy, 2, clock)  # two slow calls in a row: contention
    assert g.mode == 1 and g.backoff == pytest.approx(gov._PROBE_CALLS * 0.0003, rel=0.05)  # best times decay 1% a call
    used = feed(g, quiet, 40, clock)
    assert g.mode == 2 and used.index(2) in range(30, 36) and used[-5:] == [2] * 5
    # busy for 2 s of 1-thread calls: the waits double (~15 ms, 30 ms, ...), a handful of probes
    feed(g, busy, 2, clock)
    used = feed(g, busy, 6600, clock)
    assert g.mode == 1 and 4 <= used.count(2) <= 9 and 0.5 < g.backoff <= gov._PROBE_MAX


def test_one_slow_call_is_noise(clock):
    g = ThreadGovernor(2)
    feed(g, {2: 0.010, 1: 0.018}, 2 * gov._LEARN, clock)
    feed(g, {2: 0.050, 1: 0.018}, 1, clock)  # one spike
    assert g.mode == 2
    assert feed(g, {2: 0.010, 1: 0.018}, 5, clock) == [2] * 5


def test_one_thread_kept_when_threads_do_not_help(clock):
    g = ThreadGovernor(4)
    feed(g, {4: 0.0012, 1: 0.0010}, 2 * gov._LEARN, clock)
    assert g.mode == 1


def _model(tmp_path):
    from tests.cache.test_processes import make_model

    return make_model(tmp_path / "m.onnx")


def test_results_identical_at_any_thread_count(tmp_path):
    m = jitort.load(_model(tmp_path), num_threads=2, cache_dir=str(tmp_path / "c"))
    before = numba.get_num_threads()
    x = np.random.default_rng(3).standard_normal((301, 48)).astype(np.float32)
    outs = []
    for _ in range(12):  # learning alternates 2 and 1 threads
        outs.append(m(x=x)[0])
    plan = next(iter(m._variants.values())).plan
    assert plan.governor is not None and plan.governor.calls == 12
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    assert numba.get_num_threads() == before  # the caller's setting is restored after each call


def test_single_thread_plan_has_no_governor(tmp_path, monkeypatch):
    m = jitort.load(_model(tmp_path), num_threads=1, cache_dir=str(tmp_path / "c"))
    m(x=np.ones((3, 48), np.float32))
    assert next(iter(m._variants.values())).plan.governor is None
    monkeypatch.setattr(jitort.config, "ADAPTIVE_THREADS", False)
    m2 = jitort.load(_model(tmp_path), num_threads=2, cache_dir=str(tmp_path / "c"), cache=False)
    m2(x=np.ones((3, 48), np.float32))
    assert next(iter(m2._variants.values())).plan.governor is None


def test_a_noisy_learning_phase_is_corrected_after_a_few_calls(clock):
    """Learning saw slow T-thread calls (a background cache write, say) and picked 1 thread:
    T threads are tried again after _EARLY_PROBE calls, before the first timed probe is due."""
    g = ThreadGovernor(2)
    feed(g, {2: 0.050, 1: 0.018}, 2 * gov._LEARN, clock)
    assert g.mode == 1
    used = feed(g, {2: 0.003, 1: 0.018}, gov._EARLY_PROBE + 3, clock)  # 0.003 * 7 < 0.1 s
    assert used[:gov._EARLY_PROBE] == [1] * gov._EARLY_PROBE and used[gov._EARLY_PROBE] == 2
    assert g.mode == 2 and used[gov._EARLY_PROBE:] == [2] * 3


def test_the_early_probe_happens_once(clock):
    """A lost early probe leaves the time-based backoff in charge (no probe every few calls)."""
    g = ThreadGovernor(2)
    feed(g, {2: 0.050, 1: 0.018}, 2 * gov._LEARN, clock)
    used = feed(g, {2: 0.050, 1: 0.001}, 40, clock)  # 40 ms in all: no timed probe due yet
    assert used.count(2) == 1 and g.mode == 1
