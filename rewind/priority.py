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
        current = int(_AUTOGROUP.read_text().split()[-1])
        if current < nice:
            _AUTOGROUP.write_text(str(nice))
            current = nice
    except (OSError, ValueError):  # not Linux, or a kernel without autogroup
        return None
    log.info("session priority lowered: autogroup nice %d", current)
    return current
