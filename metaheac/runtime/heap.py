"""The C heap of a process that allocates and frees the same tens of megabytes again and again (meta-steps).

glibc's malloc hands the free memory at the top of its heap back to the system once it passes a trim
threshold (by default twice the mmap threshold, which follows the largest block freed, at most 32 MiB on
64-bit), and the next step's tensors fault the same pages in again: at the Tencent shapes 14,000-19,000
page faults a meta-step, ~10% of its time on 2 cores (bench/README.md, "Thirteenth round"). Fixing both
thresholds keeps that churn inside the heap. Blocks over 32 MiB (tables, users) are still mapped apart and
returned when freed, so a process holds about `TRIM_THRESHOLD` more than it uses at most.
"""

from __future__ import annotations

import ctypes
import functools
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit, where the dynamic threshold stops anyway
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process (once); False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the process's own symbols: the glibc it runs on
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
