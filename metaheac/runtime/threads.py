"""Worker threads that each run torch on one thread. On 2 cores, one batch of small products split over
torch's threads keeps them waiting on each other (~1.2x one thread); independent batches on one-thread
workers keep both busy (~1.9x, `online.shard.score_shard`)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch


@contextmanager
def one_thread_workers(workers: int | None = None) -> Iterator[ThreadPoolExecutor]:
    """A pool of `workers` threads (default: torch's thread count), each running torch on one thread.
    torch's thread count is put back on exit: a worker's setting can reach the caller's."""
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers or threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)
