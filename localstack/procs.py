"""Process facts the local compute (Lambda host, ECS tasks) limits on."""
from __future__ import annotations

import os
from typing import Optional

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def group_rss_mb(pgid: int) -> Optional[float]:
    """Resident memory of every process in a process group, in MiB.

    A function or container is its whole process tree (the leader and what it
    starts), as a Lambda sandbox or a task's cgroup counts it; each is
    started in its own session, so the group is exactly that tree. None when
    the group has no process left.
    """
    total_pages = 0
    found = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            # The command name is in parentheses and may hold spaces: fields follow the last ')'.
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[2]) != pgid:  # state, ppid, pgrp
                continue
            with open(f"/proc/{entry.name}/statm", "rb") as f:
                total_pages += int(f.read().split()[1])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    return total_pages * PAGE_SIZE / (1024 * 1024) if found else None
