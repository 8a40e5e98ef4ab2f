"""Where the CPU went during a measurement, from /proc, and where a py-spy profile's samples went.

Two cores are shared by the load generator, the server under test, Postgres and Redis (and
whatever else runs on the machine), so every figure comes with who used the cores meanwhile.
Counting from /proc rather than sampling ``ps`` gives exact ticks over exactly the window.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psycopg
import redis

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_EVERYONE = "\0every process"


def _ticks(pid: int | str) -> int | None:
    """User + system CPU ticks of a process (all threads) or of "pid/task/tid"; None once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (Celery's pool, for instance)."""
    parents = {pid: _ppid(pid) for pid in all_pids()}
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def postgres_groups(postmaster: int, database: str) -> dict[str, list[int]]:
    """Postgres processes in three groups: the benchmark database's backends (autovacuum workers
    on it included); the server-wide ones (postmaster, WAL writer, checkpointer, background
    writer, launchers), which work for every database; and other databases' backends, which on a
    shared machine are somebody else's load.

    A backend's title is "postgres: [cluster: ]user database host(port) state", an autovacuum
    worker's "postgres: [cluster: ]autovacuum worker database", a server-wide process's has no
    database in it.
    """
    backends, server, others = [], [], []
    for pid in descendants(postmaster):
        words = _cmdline(pid).split()
        if pid == postmaster:
            server.append(pid)
        elif database in words:
            backends.append(pid)
        elif "autovacuum worker" in " ".join(words) or any(_is_client_address(w) for w in words):
            others.append(pid)
        else:
            server.append(pid)
    return {"postgres backends": backends, "postgres wal/bg": server, "postgres other databases": others}


def _is_client_address(word: str) -> bool:
    """ "127.0.0.1(52622)" or "[local]": the title is a client backend's."""
    return word == "[local]" or (word.endswith(")") and "(" in word)


def postmaster_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    backend = int(row[0]) if row else 0
    parent = _ppid(backend)
    if parent is None:
        raise RuntimeError("cannot see the Postgres server's processes (is it on this machine?)")
    return parent


def redis_pid(broker_url: str) -> int | None:
    info = redis.Redis.from_url(broker_url).info("server")
    pid = info.get("process_id")
    return int(pid) if pid else None


def _system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def thread_names(pid: int) -> dict[int, str]:
    """Thread id -> Python thread name, from ``py-spy dump`` when it is installed, else the OS name.

    Python does not name OS threads, so the names ("MainThread", "inbox-writer-0") come from
    py-spy, which pauses the process for a moment: call this before the measured window.
    """
    names = {int(tid): _comm(pid, int(tid)) for tid in _tids(pid)}
    py_spy = VENV_BIN / "py-spy"
    if py_spy.exists():
        dump = subprocess.run(
            [str(py_spy), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
        ).stdout
        for match in re.finditer(r'^Thread (\d+) \([a-z]+\): "(.+)"$', dump, re.MULTILINE):
            names[int(match.group(1))] = match.group(2)
    return names


def _tids(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _comm(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return str(tid)


class CpuMeter:
    """CPU used by named groups of processes between ``start()`` and ``stop()``, from /proc.

    ``groups`` maps a name to a function returning the group's current pids; it is asked at both
    ends, so processes that appear during the window (a new pool child, a new backend) count too.
    ``threads`` optionally splits one group's process by thread: {group name: (pid, names)}.
    """

    def __init__(
        self,
        groups: dict[str, Callable[[], Iterable[int]]],
        threads: dict[str, tuple[int, dict[int, str]]] | None = None,
    ) -> None:
        self._groups = groups
        self._threads = threads or {}
        self._before: dict[str, dict[int, int]] = {}
        self._threads_before: dict[str, dict[int, int]] = {}
        self._system_before = (0, 0)
        self._started = 0.0
        self.wall = 0.0
        self.usage: dict[str, float] = {}
        self.thread_usage: dict[str, dict[str, float]] = {}
        self.others: list[tuple[float, int, str]] = []
        self.own = 0.0
        self._own_before = 0
        self.system_busy = 0.0
        # The same in CPU seconds over the window, to divide by the work done in it.
        self.cpu_seconds: dict[str, float] = {}
        self.own_seconds = 0.0
        self.busy_seconds = 0.0

    def _snapshot(self) -> dict[str, dict[int, int]]:
        snap: dict[str, dict[int, int]] = {}
        for name, pids in self._groups.items():
            snap[name] = {pid: t for pid in pids() if (t := _ticks(pid)) is not None}
        snap[_EVERYONE] = {pid: t for pid in all_pids() if (t := _ticks(pid)) is not None}
        return snap

    def _thread_snapshot(self) -> dict[str, dict[int, int]]:
        return {
            name: {int(tid): t for tid in _tids(pid) if (t := _ticks(f"{pid}/task/{tid}")) is not None}
            for name, (pid, _names) in self._threads.items()
        }

    def start(self) -> None:
        self._own_before = _ticks(os.getpid()) or 0
        self._before = self._snapshot()
        self._threads_before = self._thread_snapshot()
        self._system_before = _system_ticks()
        self._started = time.monotonic()

    def stop(self) -> None:
        after = self._snapshot()
        threads_after = self._thread_snapshot()
        busy, total = _system_ticks()
        self.wall = time.monotonic() - self._started
        for name, ticks in after.items():
            before = self._before.get(name, {})
            used = sum(t - before.get(pid, 0) for pid, t in ticks.items())
            if name != _EVERYONE:
                self.usage[name] = self._pct(used)
                self.cpu_seconds[name] = used / CLK_TCK
        for name, ticks in threads_after.items():
            labels = self._threads[name][1]
            split: Counter[str] = Counter()
            for tid, t in ticks.items():
                split[labels.get(tid, str(tid))] += t - self._threads_before[name].get(tid, 0)
            self.thread_usage[name] = {label: self._pct(used) for label, used in split.items()}
        # The machine may be shared: name the busiest processes outside our groups.
        ours = {pid for name, ticks in after.items() if name != _EVERYONE for pid in ticks}
        before_all = self._before[_EVERYONE]
        strangers = [
            (self._pct(t - before_all.get(pid, 0)), pid)
            for pid, t in after[_EVERYONE].items()
            if pid not in ours and pid != os.getpid()
        ]
        self.others = [
            (pct, pid, _cmdline(pid)[:60] or f"[pid {pid}]")
            for pct, pid in sorted(strangers, reverse=True)[:3]
        ]
        own = _ticks(os.getpid())
        self.own = 0.0 if own is None else self._pct(own - self._own_before)
        self.own_seconds = 0.0 if own is None else (own - self._own_before) / CLK_TCK
        cores = os.cpu_count() or 1
        busy_delta = busy - self._system_before[0]
        total_delta = max(1, total - self._system_before[1])
        self.system_busy = 100.0 * cores * busy_delta / total_delta
        self.busy_seconds = self.system_busy / 100.0 * self.wall

    def rest_seconds(self) -> float:
        """CPU seconds of the machine that no group and not this process used: other people's work."""
        return max(0.0, self.busy_seconds - sum(self.cpu_seconds.values()) - self.own_seconds)

    def _pct(self, ticks: int) -> float:
        return 100.0 * ticks / CLK_TCK / self.wall

    def report(self) -> list[str]:
        """Lines of "% of one core" per group; the machine has ``cores * 100`` to give."""
        cores = os.cpu_count() or 1
        named = sum(self.usage.values())
        lines = [f"    {'process group':<26}{'CPU % of one core':>18}{'share of busy':>15}"]
        busy = max(self.system_busy, 1e-9)
        for name, pct in sorted(self.usage.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {name:<26}{pct:>17.0f}%{100 * pct / busy:>14.0f}%")
            for label, tpct in sorted(self.thread_usage.get(name, {}).items(), key=lambda kv: -kv[1]):
                if tpct >= 0.5:
                    lines.append(f"      {'thread ' + label:<24}{tpct:>17.0f}%")
        if self.own >= 1:
            lines.append(f"    {'this benchmark':<26}{self.own:>17.0f}%{100 * self.own / busy:>14.0f}%")
        other = max(0.0, self.system_busy - named - self.own)
        lines.append(f"    {'everything else':<26}{other:>17.0f}%{100 * other / busy:>14.0f}%")
        for pct, pid, cmd in self.others:
            if pct >= 5:
                lines.append(f"      of which {pct:.0f}%: pid {pid} {cmd}")
        if other > 25:
            lines.append(
                "    NOTE: 'everything else' is processes this benchmark did not start (short-lived ones"
                " are not named); the machine was shared, so the figures above understate."
            )
        lines.append(
            f"    {'machine busy':<26}{self.system_busy:>17.0f}%   of {cores * 100}% "
            f"({cores} cores; idle {max(0.0, cores * 100 - self.system_busy):.0f}%)"
        )
        return lines


# --------------------------------------------------------------------------- profiles


def _frame_key(frame: str) -> str:
    """'function (/path/pkg/module.py:123)' -> 'function (pkg/module.py)': one key per function."""
    name, _, location = frame.partition(" (")
    parts = location.rstrip(")").split(":")[0].split("/")
    return f"{name} ({'/'.join(parts[-2:])})"


def _is_application(frame: str) -> bool:
    # py-spy prints paths relative to the working directory or site-packages: "(worker/inbox/drain.py:42)"
    return any(marker in frame for marker in ("(worker/", "(webhooks/", "/main/worker/", "/main/webhooks/"))


def summarize_pyspy(
    path: Path, *, what: str, by: str, skip: Callable[[str], bool] = lambda _: False
) -> list[str]:
    """Where the samples of a ``py-spy record --format raw`` file go: per thread or process, the
    functions with the most self time, and the application's own functions (worker/, webhooks/)
    with the most inclusive time, which is what points at the code to change.

    ``skip`` drops whole stacks by their leading process/thread frame (Celery's idle main process).
    """
    if not path.exists():
        return ["  py-spy produced no samples"]
    owners: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        # With --subprocesses a child's stack starts with its parent's "process" frame, then its own.
        processes = [f for f in frames if f.startswith("process ")]
        threads = [f for f in frames if f.startswith("thread ")]
        calls = [f for f in frames if not f.startswith(("process ", "thread "))]
        owner = " / ".join(m[:70] for m in processes[-1:] + threads) or "?"
        if skip(owner) or not calls:
            continue
        count = int(count_text)
        total += count
        owners[owner] += count
        self_time[_frame_key(calls[-1])] += count
        for key in {_frame_key(f) for f in calls if _is_application(f)}:
            inclusive[key] += count
    if not total:
        return ["  py-spy produced no samples"]
    out = [f"  {what}: {total}", f"  by {by}:"]
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in owners.most_common(6)]
    out.append("  top self time:")
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in self_time.most_common(15)]
    out.append("  application functions, inclusive time:")
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(20)]
    return out


def machine_busy(seconds: float = 1.0) -> float:
    """How busy the machine is right now, in % of one core: another workload skews every figure."""
    busy0, total0 = _system_ticks()
    time.sleep(seconds)
    busy1, total1 = _system_ticks()
    return 100.0 * (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)
