"""Worker pools that keep 2 cores busy without oversubscribing them.

On 2 cores, one batch of small products split over torch's threads keeps them waiting on each other (~1.2x one
thread); independent batches on one-thread workers keep both busy (~1.9x, `online.shard.score_shard`). The
same holds for numpy and scipy: each worker's BLAS call starting its own OpenBLAS threads put 4 spinning
threads on 2 cores, and the topic models' Newton fits ran 10x slower (35 s against 3 s at 62k rows, loaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


@contextmanager
def blas_workers(workers: int | None = None) -> Iterator[ThreadPoolExecutor]:
    """A pool of `workers` threads (default: torch's thread count) for numpy and scipy work; BLAS runs on one
    thread while the pool lives (the limit is process-wide: OpenBLAS has no per-thread count)."""
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers or torch.get_num_threads()) as pool:
        yield pool


@contextmanager
def one_thread_workers(workers: int | None = None) -> Iterator[ThreadPoolExecutor]:
    """A pool of `workers` threads (default: torch's thread count), each running torch and BLAS on one thread.
    torch's thread count is put back on exit: a worker's setting can reach the caller's."""
    threads = torch.get_num_threads()
    try:
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(
            workers or threads, initializer=torch.set_num_threads, initargs=(1,)
        ) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)
