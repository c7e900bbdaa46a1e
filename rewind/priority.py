"""How the sidecar yields CPU to the database it watches.

On Linux a nice value is per thread, and it only weighs against the other threads of the same
scheduling group. With autogroup scheduling (the kernel default without a CPU cgroup) that group
is the session, and every PostgreSQL backend leads a session of its own: a niced thread in a
session of its own competes with each backend as an equal. So the service lowers two things: the
threads that do the heavy work (against its own HTTP API and backup jobs), and, when it leads its
own session, as it does under a service manager, in a container or under `setsid`, the session's
group (against PostgreSQL). Started from a terminal, the session is the shell's and is left alone.
Under a CPU cgroup (systemd with CPUWeight=, Kubernetes limits) the cgroup's weight decides.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("rewind.priority")

_AUTOGROUP = Path("/proc/self/autogroup")
_AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")
_CGROUP = Path("/proc/self/cgroup")
_V2_ROOT_CONTROLLERS = Path("/sys/fs/cgroup/cgroup.subtree_control")


def in_root_cpu_group(cgroup: str, v2_root_controllers: str | None) -> bool:
    """Whether the kernel schedules this process in the root CPU group, the only one where
    autogroups apply. cgroup: /proc/self/cgroup; v2_root_controllers: the v2 root's
    cgroup.subtree_control (None if unreadable). A v1 hierarchy with the cpu controller decides
    by its path; under v2 a cgroup below the root counts once the root hands out the cpu
    controller."""
    v2_path = None
    for line in cgroup.splitlines():
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if ident == "0" and controllers == "":
            v2_path = path
        elif "cpu" in controllers.split(","):
            return path == "/"
    if v2_path is None or v2_path == "/":
        return True
    return v2_root_controllers is None or "cpu" not in v2_root_controllers.split()


def lower_thread(nice: int) -> None:
    """Lower the calling thread's priority; threads it starts inherit it."""
    if nice > 0:
        os.nice(nice)


def lower_session(nice: int) -> int | None:
    """Lower this process's session group to `nice` when the process leads the session and the
    kernel groups by session. Returns the group's nice value now, or None when there was nothing
    to lower (not a session leader, no autogroup)."""
    if nice <= 0 or os.getsid(0) != os.getpid():
        return None
    try:
        if _AUTOGROUP_ENABLED.read_text().strip() != "1":
            return None
        if not in_root_cpu_group(_CGROUP.read_text(), _read(_V2_ROOT_CONTROLLERS)):
            log.info("not lowering the session's priority: a CPU cgroup schedules this process, "
                     "so its weight decides (CPUWeight= under systemd)")
            return None
        current = autogroup_nice(_AUTOGROUP.read_text())
        if current is None:  # the boot-time default group, which cannot be reniced
            return None
        if current < nice:
            _AUTOGROUP.write_text(str(nice))
            current = nice
    except (OSError, ValueError):  # not Linux, or a kernel without autogroup
        return None
    log.info("session priority lowered: autogroup nice %d", current)
    return current


def autogroup_nice(text: str) -> int | None:
    """The nice value in a /proc/PID/autogroup file ("/autogroup-N nice V"). The file is empty
    for a process still in the default group it got at boot (no session was ever started above
    it since autogroups were enabled), which is not an autogroup the kernel lets one renice."""
    fields = text.split()
    return int(fields[-1]) if fields else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
