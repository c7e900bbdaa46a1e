"""CPU time of the processes on this machine while a block runs, by group.

TPS ratios on a shared 2-core machine move by several points from run to run; CPU seconds per
transaction move far less, and say where the cost is (the database's backends, the walsender,
the sidecar). Read from /proc (user + system time): sampled every 0.2 s while the block runs,
because a backend exits with its connection, before the block ends, and its last sample is what
it used. A process that started during the block counts from zero.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

_TICK = os.sysconf("SC_CLK_TCK")


def _snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds so far) of every process we can read."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it exited meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        out[int(entry.name)] = (cmdline, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


class ProcessCPU:
    """with ProcessCPU(classify) as cpu: ...; then cpu.seconds is {group: CPU seconds}. classify
    names a process's group from its pid and command line, or None to leave it out."""

    def __init__(self, classify: Callable[[int, str], str | None], interval: float = 0.2) -> None:
        self._classify = classify
        self._interval = interval
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="process-cpu", daemon=True)
        self.seconds: dict[str, float] = {}

    def __enter__(self) -> ProcessCPU:
        first = _snapshot()
        self._start = {pid: used for pid, (_, used) in first.items()}
        self._last = dict(first)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._merge(_snapshot())
        totals: dict[str, float] = {}
        for pid, (cmdline, used) in self._last.items():
            group = self._classify(pid, cmdline)
            if group is not None:
                totals[group] = totals.get(group, 0.0) + used - self._start.get(pid, 0.0)
        self.seconds = totals

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._merge(_snapshot())

    def _merge(self, snapshot: dict[int, tuple[str, float]]) -> None:
        """Take the newer CPU time, but keep the command line seen before: an exiting process (a
        backend whose connection closed) still shows its time, with an empty command line."""
        for pid, (cmdline, used) in snapshot.items():
            if not cmdline and pid in self._last:
                cmdline = self._last[pid][0]
            self._last[pid] = (cmdline, used)
