"""The engines' thread policy: one thread per core that other processes leave free.

The policy and the accounting are pure functions over CPU counters; the chooser is driven here
by scripted counters, so these tests do not depend on what else the machine runs.
"""

from __future__ import annotations

import pytest

from sllmbo.core.errors import BackendError
from sllmbo.inference import cpu_threads
from sllmbo.inference.cpu_threads import (
    CpuSample,
    ThreadChooser,
    busy_elsewhere,
    choose_threads,
    omp_wait_policy,
)


@pytest.mark.parametrize(("usable", "busy", "threads"), [
    (2, 0.0, 2),    # quiet: every core
    (2, 0.25, 2),   # a light background job leaves its core mostly idle
    (2, 0.5, 1),    # half a core taken: that core's thread would stall the barriers
    (2, 1.0, 1),    # one process saturating one core (the [16/16] figure)
    (2, 3.4, 1),    # the test suite on 2 cores: still one thread, never zero
    (4, 1.0, 3),
    (4, 2.2, 2),    # 0.8 of a core idle counts as free
    (1, 0.0, 1),
    (2, -0.1, 2),   # tick rounding can make the estimate slightly negative
])
def test_one_thread_per_core_left_free(usable, busy, threads):
    assert choose_threads(usable, busy) == threads


def test_busy_elsewhere_leaves_out_this_process_own_cpu_time():
    before = CpuSample(busy_s=100.0, own_s=5.0, at=10.0)
    after = CpuSample(busy_s=101.8, own_s=5.9, at=11.0)  # 1.8 core-s busy, 0.9 of them ours
    assert busy_elsewhere(before, after) == pytest.approx(0.9)
    assert busy_elsewhere(before, CpuSample(100.5, 5.9, 11.0)) == 0.0  # never negative


def test_a_window_too_short_to_count_ticks_measures_nothing():
    before = CpuSample(busy_s=100.0, own_s=5.0, at=10.0)
    assert busy_elsewhere(before, CpuSample(100.05, 5.0, 10.0 + cpu_threads.MIN_WINDOW_S / 2)) is None


def test_the_chooser_follows_the_load_and_keeps_its_choice_between_short_windows(monkeypatch):
    monkeypatch.delenv("SLLMBO_THREADS", raising=False)  # conftest pins it for other tests
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: [0, 1])
    samples = iter([CpuSample(0.0, 0.0, 0.0),    # at creation
                    CpuSample(0.1, 0.0, 1.0),    # quiet second: 2 threads
                    CpuSample(1.2, 0.1, 2.0),    # another process took a core: 1 thread
                    CpuSample(1.21, 0.1, 2.01),  # 10 ms later: too short, keep 1
                    CpuSample(1.3, 0.1, 3.0)])   # quiet again: 2
    monkeypatch.setattr(cpu_threads, "read_sample", lambda cores: next(samples))
    chooser = ThreadChooser()
    assert [chooser.choose() for _ in range(4)] == [2, 1, 1, 2]
    assert chooser.last_busy_elsewhere == pytest.approx(0.1)


def test_a_fixed_thread_count_is_kept_and_must_be_positive(monkeypatch):
    monkeypatch.delenv("SLLMBO_THREADS", raising=False)
    assert ThreadChooser(fixed=3).choose() == 3
    with pytest.raises(BackendError, match="n_threads must be >= 1, got 0"):
        ThreadChooser(fixed=0)
    monkeypatch.setenv("SLLMBO_THREADS", "1")
    assert ThreadChooser().choose() == 1  # pinned: answers repeat whatever else runs
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("SLLMBO_THREADS", bad)
        with pytest.raises(BackendError, match="SLLMBO_THREADS must be a positive integer"):
            ThreadChooser()


def test_the_counters_read_on_linux_and_move_forward():
    first = cpu_threads.read_sample(cpu_threads.usable_cores())
    if first is None:
        pytest.skip("no /proc/stat here")
    sum(i * i for i in range(200_000))
    second = cpu_threads.read_sample(cpu_threads.usable_cores())
    assert second is not None and second.own_s > first.own_s and second.busy_s >= first.busy_s


def test_openmp_workers_spin_unless_the_machine_is_oversubscribed():
    assert omp_wait_policy(load=0.0, cores=2) == {}  # quiet: libgomp's brief spin, 2.7x a step
    assert omp_wait_policy(load=2.5, cores=2) == {}  # busy but not oversubscribed
    assert omp_wait_policy(load=4.0, cores=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert omp_wait_policy(load=7.1, cores=2) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert omp_wait_policy(load=2.0, cores=1) == {"OMP_WAIT_POLICY": "PASSIVE"}
