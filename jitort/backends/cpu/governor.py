"""How many of its threads a multi-threaded plan uses for the next call: all of them, or one.

A parallel kernel on Numba's OpenMP pool ends in a join: the caller waits until every worker has
run its chunk. When another process holds a core, a worker can wait a whole scheduler tick
(4 ms here) before it runs, at every join. Measured here with one busy process on the 2 cores:
a 4x1024 MLP forward at batch 1 took 41-59 ms at 2 threads and 0.66 ms at 1 thread
(onnxruntime's pool, whose caller runs unclaimed work itself, stays near 0.7 ms).

So a plan built for T > 1 threads times its calls and runs them at 1 thread (numba's
``set_num_threads(1)``, thread-local: every kernel's T chunks then run in the caller, in the
same order, so results are bitwise the same) whenever that is faster:

* the first calls alternate T and 1 threads to learn the best time of each; when they pick
  1 thread, T threads are probed again after a few calls, not only after the first backoff:
  two samples are little to go on (the first process of a benchmark learned while its own
  cache entry was being written in the background, picked 1 thread for MobileNetV2 at 5.4 ms
  a call instead of 3.1 at 2, and its 20 calls ended before the 0.1 s probe);
* at T threads, two calls in a row slower than 1.25x the best 1-thread time switch to 1 thread
  (one slow call is noise: a spike would otherwise park a plan at 1 thread until its next probe);
* at 1 thread, one call in a while probes T threads again and switches back when it beats 0.9x
  the best 1-thread time. The first probe comes after 32 calls' worth of time (the best 1-thread
  time x 32, at least 2 ms, at most 0.1 s), and the wait doubles while probes lose, up to 2 s: a
  probe that loses costs about one slow call, so the overhead stays a few percent of the calls
  even for a 0.15 ms model, which a fixed 0.1 s first wait kept at 1 thread for ~350 calls
  after every spike (measured: a 4x1024 MLP at batch 1, 2 threads, 0.28 ms a call at 1 thread,
  0.145 at 2).

Best times decay upward slowly (1% a call), so a plan whose work got slower (a colder cache, a
busier memory bus) relearns instead of chasing a stale minimum.
"""

from __future__ import annotations

import threading
import time

import numba

_LEARN = 2  # calls per mode while learning (alternating)
_SWITCH_DOWN = 1.25
_SLOW_CALLS = 2  # consecutive slow calls at T threads before dropping to 1
_SWITCH_UP = 0.9
_PROBE_MIN, _PROBE_MAX = 0.1, 2.0  # the first wait before a probe at most, any wait at most
_PROBE_FLOOR = 0.002  # the first wait at least
_PROBE_CALLS = 32  # the first wait in calls (of the best 1-thread time)
_EARLY_PROBE = 4  # calls after learning picked 1 thread before T threads are tried once more
_DECAY = 1.01


class ThreadGovernor:
    def __init__(self, threads: int):
        self.threads = threads
        self.best = {threads: float("inf"), 1: float("inf")}
        self.mode = threads
        self.calls = 0
        self.next_probe = 0.0
        self.backoff = None  # the wait before the next probe; None: the first one, set on dropping to 1
        self.switches = 0
        self.slow = 0
        self.probe_call = float("inf")  # a probe at this call count (after learning), else by time
        self._lock = threading.Lock()

    def choose(self) -> int:
        """Threads for the next call."""
        if self.calls < 2 * _LEARN:
            return self.threads if self.calls % 2 == 0 else 1
        if self.mode == 1 and (time.monotonic() >= self.next_probe or self.calls >= self.probe_call):
            return self.threads  # a probe
        return self.mode

    def record(self, used: int, seconds: float) -> None:
        with self._lock:
            self.calls += 1
            for k in self.best:
                self.best[k] *= _DECAY
            self.best[used] = min(self.best[used], seconds)
            one, many = self.best[1], self.best[self.threads]
            if self.calls <= 2 * _LEARN:
                if self.calls == 2 * _LEARN:
                    self._set(self.threads if many < one else 1)
                    if self.mode == 1:
                        self.probe_call = self.calls + _EARLY_PROBE
                return
            if used == self.threads:
                if self.mode == 1:  # a probe
                    self.probe_call = float("inf")
                    if seconds < _SWITCH_UP * one:
                        self._set(self.threads)
                    else:
                        self.backoff = min(self.backoff * 2, _PROBE_MAX)
                        self.next_probe = time.monotonic() + self.backoff
                elif seconds > _SWITCH_DOWN * one:
                    self.slow += 1
                    if self.slow >= _SLOW_CALLS:  # contention is sustained; a lone spike is noise
                        self._set(1)
                else:
                    self.slow = 0
            elif self.mode == self.threads:  # a 1-thread call outside learning: nothing to do
                pass

    def _set(self, mode: int) -> None:
        if mode != self.mode:
            self.switches += 1
        self.mode = mode
        self.slow = 0
        if mode == 1:
            if self.backoff is None:
                self.backoff = min(_PROBE_MIN, max(_PROBE_FLOOR, _PROBE_CALLS * self.best[1]))
            self.next_probe = time.monotonic() + self.backoff
        else:
            self.backoff = None

    def run(self, fn, *args):
        """``fn(*args)`` with the chosen thread count, timed and recorded."""
        n = self.choose()
        prev = numba.get_num_threads()
        # Only a 1-thread call sets Numba's (thread-local) count: a T-thread call runs as if
        # there were no governor.
        change = n != prev and not (n == self.threads and prev >= n)
        if change:
            numba.set_num_threads(n)
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.record(n, time.perf_counter() - t0)
            if change:
                numba.set_num_threads(prev)
