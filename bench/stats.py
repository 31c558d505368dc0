"""Latency summaries and the per-process CPU/RSS sampler."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field

import psutil


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None for no values)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize_ms(values_s: list[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99/max and mean of a list of durations in seconds, in milliseconds."""
    ordered = sorted(values_s)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p95_ms": ms(percentile(ordered, 95)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1] if ordered else None),
        "mean_ms": ms(sum(ordered) / len(ordered) if ordered else None),
    }


@dataclass
class ProcSample:
    cpu_s: float
    rss: int


@dataclass
class Watched:
    """One server process (with its children, e.g. Celery's prefork pool) under the sampler."""

    name: str
    proc: psutil.Process
    samples: list[tuple[float, ProcSample]] = field(default_factory=list)
    children: bool = True

    def family(self) -> list[psutil.Process]:
        if not self.children:
            return [self.proc]
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return []

    def sample(self) -> ProcSample | None:
        cpu = 0.0
        rss = 0
        alive = False
        for proc in self.family():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
                alive = True
            except psutil.Error:
                continue
        return ProcSample(cpu, rss) if alive else None


class Sampler:
    """Samples CPU time and RSS of named processes once a second; summarises any time window."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.watched: dict[str, Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self.system: list[tuple[float, float]] = []  # (t, system-wide CPU percent of all cores)
        self.db_connections: list[tuple[float, int]] = []

    def watch(self, name: str, pid: int, children: bool = True) -> None:
        with contextlib.suppress(psutil.Error):
            self.watched[name] = Watched(name, psutil.Process(pid), children=children)

    def sample_now(self) -> None:
        now = time.monotonic()
        for watched in self.watched.values():
            sample = watched.sample()
            if sample is not None:
                watched.samples.append((now, sample))
        self.system.append((now, psutil.cpu_percent(interval=None)))

    async def _loop(self) -> None:
        psutil.cpu_percent(interval=None)
        while True:
            self.sample_now()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def rss(self, names: list[str]) -> int:
        """Current RSS (bytes) summed over the named processes and their children."""
        total = 0
        for name in names:
            watched = self.watched.get(name)
            sample = watched.sample() if watched else None
            total += sample.rss if sample else 0
        return total

    def window(self, start: float, end: float) -> dict[str, dict[str, float]]:
        """Per process: CPU used in [start, end] as a percentage of one core, peak RSS (MiB)."""
        out: dict[str, dict[str, float]] = {}
        for name, watched in self.watched.items():
            inside = [(t, s) for t, s in watched.samples if start <= t <= end]
            if len(inside) < 2:
                continue
            (t0, s0), (t1, s1) = inside[0], inside[-1]
            out[name] = {
                "cpu_pct_of_one_core": round(100 * (s1.cpu_s - s0.cpu_s) / max(t1 - t0, 1e-9), 1),
                "cpu_s": round(s1.cpu_s - s0.cpu_s, 2),
                "rss_mib_peak": round(max(s.rss for _, s in inside) / 2**20, 1),
            }
        system = [pct for t, pct in self.system if start <= t <= end]
        if system:
            out["machine"] = {"cpu_pct_of_all_cores": round(sum(system) / len(system), 1)}
        return out
