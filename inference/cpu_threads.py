"""How many CPU threads an in-process engine should run: the cores other processes leave free.

Why: a decode step of the embedded model is a few hundred small kernels, each split over the
engine's threads and closed by a barrier. When one of those threads shares its core with
another busy process, the kernel scheduler runs it only now and then, and every barrier waits
for it: with the test suite running on 2 cores, a greedy ``sllmbo recommend`` took 41 s on
llama.cpp against 1.9 s on quiet cores ([16/16]). So the engines measure what other processes
used of the cores this process may run on since the last look (``/proc/stat`` minus this
process's own CPU time) and run one thread per core left free, chosen again before each call
(``python -m sllmbo.eval.bench_inference --busy-cores-only`` measures it).

The thread count moves the last digits of llama.cpp's and torch's arithmetic (how a reduction
is split), so a near-tie token of a greedy or seeded answer can differ between a quiet and a
busy machine, as it already differed between machines with other core counts.
``$SLLMBO_THREADS`` (or an engine's ``n_threads``) pins the count where answers must repeat
exactly whatever else runs.

Nothing here imports torch or llama.cpp; ``choose_threads`` is the policy as a pure function.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from sllmbo.core.errors import BackendError

#: A core counts as free when other processes leave at least this share of it idle.
FREE_SHARE = 0.7
#: Seconds of CPU accounting a measurement needs (``/proc/stat`` counts in 10 ms ticks).
MIN_WINDOW_S = 0.1
#: Pins every engine's thread count (a positive integer) instead of measuring.
THREADS_ENV = "SLLMBO_THREADS"
#: ``/proc/stat``'s tick rate (USER_HZ; 100 on every Linux ABI).
TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> list[int]:
    """The CPUs this process may run on (its affinity; every CPU where that is unknown)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def choose_threads(usable: int, busy_elsewhere: float) -> int:
    """Threads for ``usable`` cores of which other processes keep ``busy_elsewhere`` cores'
    worth busy: one per core left at least ``FREE_SHARE`` idle, at least 1.

    >>> choose_threads(2, 0.0), choose_threads(2, 0.25), choose_threads(2, 1.0)
    (2, 2, 1)
    """
    free = usable - max(0.0, busy_elsewhere)
    return max(1, min(usable, math.floor(free + 1 - FREE_SHARE + 1e-9)))


@dataclass(frozen=True)
class CpuSample:
    """Busy CPU seconds of the usable cores, this process's CPU seconds, and when."""

    busy_s: float
    own_s: float
    at: float


def read_sample(cores: list[int]) -> CpuSample | None:
    """Now's counters, or None where ``/proc/stat`` cannot be read (not Linux)."""
    wanted = {f"cpu{c}" for c in cores}
    busy = 0
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                name, *fields = line.split()
                if name not in wanted:
                    continue
                # user nice system idle iowait irq softirq steal (guest is inside user)
                ticks = [int(f) for f in fields[:8]]
                busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError, IndexError):
        return None
    return CpuSample(busy / TICKS_PER_S, time.process_time(), time.monotonic())


def busy_elsewhere(before: CpuSample, after: CpuSample) -> float | None:
    """Cores' worth of CPU other processes used between two samples; None when the window is
    shorter than ``MIN_WINDOW_S``."""
    wall = after.at - before.at
    if wall < MIN_WINDOW_S:
        return None
    others = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, others / wall)


class ThreadChooser:
    """Threads for the next call of an engine, from the cores free since the last choice.

    Args:
        fixed: always this many threads (a user's choice); None: ``$SLLMBO_THREADS`` where it
            is set, else measure.
    """

    def __init__(self, fixed: int | None = None) -> None:
        if fixed is None and os.environ.get(THREADS_ENV, "").strip():
            raw = os.environ[THREADS_ENV].strip()
            if not raw.isdigit() or int(raw) < 1:
                raise BackendError(f"${THREADS_ENV} must be a positive integer, got {raw!r}",
                                   hint="unset it to use the cores other processes leave free")
            fixed = int(raw)
        if fixed is not None and fixed < 1:
            raise BackendError(f"n_threads must be >= 1, got {fixed}")
        self.fixed = fixed
        self.cores = usable_cores()
        self._last = read_sample(self.cores) if fixed is None else None
        self._choice = len(self.cores) if fixed is None else fixed
        #: Cores' worth other processes kept busy in the last window measured.
        self.last_busy_elsewhere: float | None = None

    def choose(self) -> int:
        """Threads to run now. Windows shorter than ``MIN_WINDOW_S`` keep the last choice and
        grow until they are long enough; the first choice waits for its window."""
        if self.fixed is not None or self._last is None:
            return self._choice
        if self.last_busy_elsewhere is None:
            time.sleep(max(0.0, self._last.at + MIN_WINDOW_S + 0.005 - time.monotonic()))
        now = read_sample(self.cores)
        if now is None:
            return self._choice
        busy = busy_elsewhere(self._last, now)
        if busy is None:
            return self._choice
        self._last = now
        self.last_busy_elsewhere = busy
        self._choice = choose_threads(len(self.cores), busy)
        return self._choice


#: Load average, per usable core, from which OpenMP workers stop spinning.
OVERSUBSCRIBED_LOAD = 2.0


def omp_wait_policy(load: float | None = None, cores: int | None = None) -> dict[str, str]:
    """OpenMP settings for a process about to load its runtime (llama.cpp's, torch's):
    ``OMP_WAIT_POLICY=PASSIVE`` where the machine is oversubscribed (a 1-minute load average
    of at least ``OVERSUBSCRIBED_LOAD`` per usable core), else nothing (libgomp's default,
    whose workers spin briefly at each barrier). Measured on 2 cores: quiet, passive workers
    made a one-token decode step 40 ms against 14 ms; at load 7, spinning workers made a step
    130 ms against 25 ms."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not Unix
            return {}
    if cores is None:
        cores = len(usable_cores())
    return {"OMP_WAIT_POLICY": "PASSIVE"} if load >= OVERSUBSCRIBED_LOAD * max(1, cores) else {}
