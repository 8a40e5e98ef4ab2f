"""CPU and memory of named processes over time, from /proc: is a long run flat, or growing?

``_cpu.CpuMeter`` gives one figure per group over a window; a steady-state run also needs the
series (CPU % and resident memory every few seconds) and each process's peak (``VmHWM``), so
that a leak or a slowly rising cost shows as a trend rather than vanishing into an average.

Postgres processes map the shared buffers, so their ``VmRSS`` counts every page of shared
memory they have touched, the same pages again in each backend; for groups named in
``private_memory`` the series shows ``RssAnon`` (memory of their own) instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    ticks: int  # user + system CPU ticks since the process (or thread) began
    rss_kb: int
    anon_kb: int
    hwm_kb: int  # peak resident set


def read(path: str) -> Reading | None:
    """One process ("1234") or thread ("1234/task/1240"); None once it has gone."""
    try:
        stat = Path(f"/proc/{path}/stat").read_text()
        status = Path(f"/proc/{path}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    memory = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            memory[key] = int(value.split()[0])
    return Reading(
        int(fields[11]) + int(fields[12]),
        memory.get("VmRSS", 0),
        memory.get("RssAnon", 0),
        memory.get("VmHWM", 0),
    )


@dataclass
class Row:
    at: float  # time.monotonic()
    seconds: float  # since the previous row
    cpu: dict[str, float] = field(default_factory=dict)  # column -> % of one core
    rss_mb: dict[str, float] = field(default_factory=dict)


class ProcessSeries:
    """Samples groups of processes (``groups``: name -> current pids) and threads of this process.

    Groups in ``split`` get one column per process ("worker pool 4312"), the others one column
    for all their processes together. ``threads`` name threads of this process (name -> native
    thread id, or None while there is none); they have CPU but no memory of their own.
    """

    def __init__(
        self,
        groups: dict[str, Callable[[], Iterable[int]]],
        *,
        split: Iterable[str] = (),
        private_memory: Iterable[str] = (),
        threads: dict[str, Callable[[], int | None]] | None = None,
    ) -> None:
        self.groups = groups
        self.split = set(split)
        self.private_memory = set(private_memory)
        self.threads = threads or {}
        self.rows: list[Row] = []
        self.peak_kb: dict[str, int] = {}  # column -> highest VmHWM of any of its processes
        self.columns: list[str] = []
        self._before: dict[str, int] = {}  # "pid" or "self/task/tid" -> ticks
        self._started = False
        self._last = time.monotonic()

    def start(self) -> None:
        self._last = time.monotonic()
        self._take()
        self._started = True

    def sample(self) -> Row:
        now = time.monotonic()
        row = Row(now, now - self._last)
        self._last = now
        for column, (cpu_ticks, rss) in self._take().items():
            row.cpu[column] = 100.0 * cpu_ticks / CLK_TCK / max(row.seconds, 1e-9)
            if rss is not None:
                row.rss_mb[column] = rss / 1024
        self.rows.append(row)
        return row

    def _baseline(self, reading: Reading) -> int:
        # Before the start everything is baseline; after it, a process (or thread) not seen
        # before began within the interval, so all of its ticks belong to it.
        return 0 if self._started else reading.ticks

    def _take(self) -> dict[str, tuple[int, int | None]]:
        """column -> (ticks since the previous sample, resident kB or None for a thread)."""
        out: dict[str, tuple[int, int | None]] = {}
        after: dict[str, int] = {}
        for name, pids in self.groups.items():
            for pid in pids():
                reading = read(str(pid))
                if reading is None:
                    continue
                column = f"{name} {pid}" if name in self.split else name
                used = reading.ticks - self._before.get(str(pid), self._baseline(reading))
                after[str(pid)] = reading.ticks
                memory = reading.anon_kb if name in self.private_memory else reading.rss_kb
                ticks, rss = out.get(column, (0, 0))
                out[column] = (ticks + used, (rss or 0) + memory)
                self.peak_kb[column] = max(self.peak_kb.get(column, 0), reading.hwm_kb)
        for name, tid in self.threads.items():
            native = tid()
            if native is None:
                out.setdefault(name, (0, None))
                continue
            key = f"self/task/{native}"
            reading = read(key)
            if reading is None:
                out.setdefault(name, (0, None))
                continue
            used = reading.ticks - self._before.get(key, self._baseline(reading))
            after[key] = reading.ticks
            out[name] = (out.get(name, (0, None))[0] + used, None)
        self._before = after
        for column in out:
            if column not in self.columns:
                self.columns.append(column)
        return out
