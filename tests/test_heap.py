"""The C heap keeps a meta-step's freed tensors' pages for the next step (`metaheac.runtime.heap`)."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from metaheac.runtime.heap import keep_freed_memory


def churn() -> None:
    """What a meta-step does to the heap: tens of MiB of tensors written, then freed."""
    tensors = [torch.ones(6 << 20) for _ in range(4)]  # 4 x 24 MiB
    del tensors


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="sets glibc's malloc thresholds")
def test_freed_tensors_keep_their_pages() -> None:
    assert keep_freed_memory()
    churn()  # the heap grows once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        churn()
    # glibc's defaults give the 96 MiB back after each round and fault ~24,000 pages in again (5 x 24,576).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 12_000
