"""How the benchmarks measure: a stage's wall time, process CPU time, peak RSS and the cores other processes used
meanwhile; waiting for a quiet machine; a child process's wall, CPU and kernel-reported peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from photosift.core.errors import PhotosiftError

CORES = os.cpu_count() or 1


@dataclass
class Stage:
    name: str
    photos: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    note: str = ""
    other_cores: float = 0.0  # cores other processes kept busy during the stage
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def ms_per_photo(self) -> float:
        return 1000 * self.wall_s / self.photos if self.photos else 0.0

    @property
    def core_ms_per_photo(self) -> float:
        return 1000 * self.cpu_s / self.photos if self.photos else 0.0

    @property
    def cpu_util(self) -> float:
        return self.cpu_s / self.wall_s / CORES if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            photos_per_s=round(self.photos_per_s, 2),
            ms_per_photo=round(self.ms_per_photo, 2),
            core_ms_per_photo=round(self.core_ms_per_photo, 2),
            cpu_util=round(self.cpu_util, 3),
            wall_s=round(self.wall_s, 4),
            cpu_s=round(self.cpu_s, 4),
            peak_rss_mb=round(self.peak_rss_mb, 1),
            other_cores=round(self.other_cores, 2),
        )
        return d


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: psutil (the bench extra) or nothing
        try:
            import psutil

            return float(psutil.Process().memory_info().rss) / 2**20
        except ImportError:
            return 0.0


def system_busy_s() -> float:
    """CPU seconds all processes have used since boot (Linux /proc/stat), or 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time, process CPU time (all threads), peak RSS (sampled every 5 ms) of a block, and how many
    cores *other* processes used meanwhile (a benchmark on a busy machine says so instead of lying)."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.peak = self.other_cores = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    @contextmanager
    def measure(self) -> Iterator[Meter]:
        self.peak = rss_mb()
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        w0, c0, s0 = time.perf_counter(), time.process_time(), system_busy_s()
        try:
            yield self
        finally:
            self.wall = time.perf_counter() - w0
            self.cpu = time.process_time() - c0
            if s0 and self.wall > 0:
                self.other_cores = max(0.0, (system_busy_s() - s0 - self.cpu) / self.wall)
            self._stop.set()
            sampler.join()
            self.peak = max(self.peak, rss_mb())


SETTLE = {"max_wait_s": 0.0}


def wait_quiet(max_wait_s: float, busy_cores: float = 0.25, window_s: float = 0.5) -> float:
    """On a shared machine: wait (up to ``max_wait_s``) until other processes use < ``busy_cores``.

    Returns the cores others used in the last window (0 where /proc/stat is unknown)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        s0, c0 = system_busy_s(), time.process_time()
        time.sleep(window_s)
        others = max(0.0, (system_busy_s() - s0 - (time.process_time() - c0)) / window_s)
        if others < busy_cores or time.monotonic() >= deadline:
            return others


def measure_stage(name: str, photos: int, fn: Callable[[], Any], note: str = "") -> Stage:
    if SETTLE["max_wait_s"] > 0:
        wait_quiet(SETTLE["max_wait_s"])
    meter = Meter()
    with meter.measure():
        fn()
    return Stage(name, photos, meter.wall, meter.cpu, meter.peak, note, other_cores=meter.other_cores)


# -- subprocess measurements ----------------------------------------------------------------------------------
def photosift_command() -> list[str]:
    exe = Path(sys.executable).with_name("photosift")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "photosift"]


def _vm_hwm_mb(pid: int) -> float:
    """Peak RSS of a live process from /proc (VmHWM is per address space, so it starts afresh at exec)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def run_child_rusage(
    args: Sequence[str], env: dict[str, str] | None = None
) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one child process (POSIX: os.wait4 for its CPU time).

    Peak RSS is polled from /proc/PID/status (VmHWM) every 10 ms, not taken from ru_maxrss: Linux carries the
    parent's high-water mark into a forked child's ru_maxrss across exec, so a 1.5 GB benchmark process would
    report 1.5 GB for every child."""
    full_env = {**os.environ, **(env or {})}
    if not hasattr(os, "wait4"):
        t0 = time.perf_counter()
        done = subprocess.run(list(args), capture_output=True, check=False, env=full_env)
        if done.returncode != 0:
            raise PhotosiftError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr.decode()[-400:]}"
            )
        return time.perf_counter() - t0, 0.0, 0.0, done.stdout.decode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=out, stderr=err, env=full_env)
        peak = 0.0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _vm_hwm_mb(proc.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise PhotosiftError(f"{' '.join(args)} failed ({proc.returncode}): {err.read().decode()[-400:]}")
        return wall, ru.ru_utime + ru.ru_stime, peak, out.read().decode()
