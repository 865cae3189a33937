"""How many CPUs this process may use: a container's CPU limit (its cgroup), not the node's cores, which
is what torch sees. A pod given 2 CPUs on a 64-core node would otherwise run 64 threads, each waiting
for the others (intra-op spin) or for the scheduler's quota."""

from __future__ import annotations

import math
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cpu_limit(cgroup: Path = CGROUP) -> float | None:
    """CPUs of the cgroup's quota (v2 `cpu.max`, else v1 `cpu/cpu.cfs_quota_us`), None when unlimited."""
    try:
        if (cgroup / "cpu.max").exists():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = cgroup / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists():
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):  # unreadable or unexpected: no limit known
        return None
    return None


def use_cpu_limit(cgroup: Path = CGROUP) -> int:
    """Set torch's threads to the CPU limit (rounded up) where it is below them; returns torch's threads."""
    import torch  # the CLI imports a step's libraries only when it runs

    limit = cpu_limit(cgroup)
    if limit is not None and math.ceil(limit) < torch.get_num_threads():
        torch.set_num_threads(max(1, math.ceil(limit)))
    return torch.get_num_threads()
