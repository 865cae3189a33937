"""The C heap keeps a meta-step's freed tensors' pages for the next step (`metaheac.runtime.heap`)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# In a fresh process: after earlier tests' thread pools the main thread may allocate from another glibc
# arena, whose heaps are given back on their own rules, and the count would say nothing of the setting.
CHURN = """
import resource, torch
from metaheac.runtime.heap import keep_freed_memory
assert keep_freed_memory()
def churn():  # what a meta-step does to the heap: tens of MiB of tensors written, then freed
    tensors = [torch.ones(6 << 20) for _ in range(4)]  # 4 x 24 MiB
    del tensors
for _ in range(4):  # the heap grows to its size for this churn
    churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults() -> int:
    return int(subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="sets glibc's malloc thresholds")
def test_freed_tensors_keep_their_pages() -> None:
    # glibc's defaults mostly give half the 96 MiB back after each round and fault it in again (4 x 12,288
    # pages); in some runs they keep it (where the heap lands decides), so only the setting's side is checked.
    assert page_faults() < 3_000
